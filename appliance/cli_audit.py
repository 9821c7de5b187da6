"""`minipacs audit`: who looked at or changed what, from the audit log."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.services import ServiceError, open_archive
from appliance.settings import Settings
from appliance.tables import local_time, print_table


class AuditError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    audit = sub.add_parser(
        "audit", parents=[common], help="search the audit log: who looked at or changed what",
        description="Search the audit log, newest first. Every DIMSE and HTTP query, retrieve and store, "
        "and every account change, is there.",
        epilog="examples:\n  minipacs audit --user bs.lan --since 2026-11-01\n"
        "  minipacs audit --patient BN26001001         (who saw this patient's images)\n"
        "  minipacs audit --action RETRIEVE --limit 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    audit.add_argument("--user", metavar="NAME", help="who: a user or token name, a calling AE title, cli:...")
    audit.add_argument("--action", metavar="ACTION", help="QUERY, RETRIEVE, VIEW, STORE, USER_ADD, TOKEN_CREATE, ...")
    audit.add_argument("--uid", metavar="UID", help="a study, series or instance UID")
    audit.add_argument("--patient", metavar="ID", help="a Patient ID: access to any of their studies, "
                       "and queries that asked for the ID")  # fmt: skip
    audit.add_argument("--contains", metavar="TEXT", help="text in the UID or the detail (case-sensitive)")
    audit.add_argument("--since", metavar="DATE", type=_date, help="from this day (YYYY-MM-DD, local time)")
    audit.add_argument("--until", metavar="DATE", type=_date, help="up to and including this day")
    audit.add_argument("--limit", metavar="N", type=_limit, default=100, help="at most N events (default 100)")
    audit.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from archive import ArchiveError
    from archive.audit import search

    try:
        archive = open_archive(settings)
    except ServiceError as exc:
        raise AuditError(str(exc)) from exc
    try:
        records = search(archive.db, actor=args.user, action=args.action, uid=args.uid, patient=args.patient,
                         contains=args.contains,
                         since=args.since, until=args.until + timedelta(days=1) if args.until else None,
                         limit=args.limit)  # fmt: skip
    except ArchiveError as exc:
        raise AuditError(exc.message) from exc
    finally:
        archive.close()
    print_table(
        "no audit events match",
        [("TIME", 19), ("WHO", 16), ("FROM", 15), ("ACTION", 13), ("LEVEL", 6), ("OUTCOME", 14), ("UID / DETAIL", 0)],
        [(local_time(r.at), r.actor, r.address or "-", r.action, r.level, r.outcome,
          "  ".join(x for x in (r.uid, r.detail) if x)) for r in records],
    )  # fmt: skip
    return 0


def _date(value: str) -> datetime:
    try:
        day = datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-23") from None
    return day.astimezone().astimezone(UTC)  # local midnight, in UTC as the log keeps it


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number from 1 to 100000")
    return int(value)
