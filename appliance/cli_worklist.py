"""`minipacs worklist ...` and `minipacs outbox ...`: the worklist, unmatched studies and the HIS outbox.

For the administrator and the technologist at the console: see today's
worklist, an order's history and the patient's prior studies, the studies
that match no order (and match one by hand), and the status updates waiting
to reach the HIS.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

from appliance.services import ServiceError, open_worklist, run_on_archive
from appliance.settings import Settings
from appliance.tables import local_time, print_table

STATUSES = ("SCHEDULED", "IN PROGRESS", "COMPLETED", "DISCONTINUED", "CANCELLED")


class WorklistError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `worklist` and `outbox` commands to the `minipacs` parser."""
    raw = argparse.RawDescriptionHelpFormatter
    wl = sub.add_parser("worklist", help="see the modality worklist, unmatched studies; match one by hand",
                        description="The scheduled procedure steps made from HIS orders, and the studies "
                        "that arrived without a matching order.",
                        epilog="examples:\n  minipacs worklist list --date today --modality CT\n"
                        "  minipacs worklist show 2612050001\n  minipacs worklist unmatched\n"
                        "  minipacs worklist match 1.2.840.113619.2.55.3.1234 2612050001",
                        formatter_class=raw)  # fmt: skip
    wl_sub = wl.add_subparsers(title="actions", metavar="ACTION")
    lst = wl_sub.add_parser("list", parents=[common], help="list steps, STAT first, then by scheduled time",
                            description="List scheduled procedure steps: STAT first, then by scheduled date and time.")  # fmt: skip
    lst.add_argument("--date", type=_date, metavar="YYYYMMDD", help="scheduled on this day ('today' works)")
    lst.add_argument("--modality", metavar="CODE", default="", help="CT, CR, DX, US, MR, ...")
    lst.add_argument("--station", metavar="AET", default="", help="scheduled station AE title")
    lst.add_argument("--status", type=_status,
                     help="SCHEDULED, 'IN PROGRESS' (or IN_PROGRESS), COMPLETED, DISCONTINUED, CANCELLED")  # fmt: skip
    lst.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N steps (default 100)")
    lst.set_defaults(func=cmd_list)
    show = wl_sub.add_parser("show", parents=[common], help="one order: the step, its history and the patient's priors",
                             description="Show one step by accession number: what was ordered, every change "
                             "(who, through which door) and the patient's earlier studies.")  # fmt: skip
    show.add_argument("accession", metavar="ACCESSION", help="the accession number, as `worklist list` shows it")
    show.set_defaults(func=cmd_show)
    un = wl_sub.add_parser("unmatched", parents=[common], help="studies that arrived without a matching order",
                           description="Studies whose accession number (and Study Instance UID) matched no "
                           "order, newest first. Match one with `minipacs worklist match`.")  # fmt: skip
    un.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N studies (default 100)")
    un.set_defaults(func=cmd_unmatched)
    match = wl_sub.add_parser("match", parents=[common], help="match a study to an order by hand",
                              description="File a study under an order: it gets the order's accession number "
                              "and patient in the index (the stored images are not rewritten). Every "
                              "correction is in the audit log.")  # fmt: skip
    match.add_argument("study_uid", metavar="STUDY_UID", help="Study Instance UID (from `worklist unmatched`)")
    match.add_argument("accession", metavar="ACCESSION", help="the order's accession number")
    match.set_defaults(func=cmd_match)
    wl.set_defaults(func=None, help_parser=wl)

    ob = sub.add_parser("outbox", help="status updates waiting to reach the HIS (hl7.status_updates)",
                        description="Messages to the HIS (HL7 ORM^O01 status updates), retried until the HIS "
                        "acknowledges them. A message that failed too often waits for `minipacs outbox retry N`.")  # fmt: skip
    ob_sub = ob.add_subparsers(title="actions", metavar="ACTION")
    olist = ob_sub.add_parser("list", parents=[common], help="list messages: pending, sent, failed",
                              description="List outbox messages, newest first, with attempts and the last error.")  # fmt: skip
    olist.add_argument("--state", choices=("pending", "sent", "failed"), help="only messages in this state")
    olist.add_argument("--limit", type=_limit, default=100, metavar="N", help="at most N messages (default 100)")
    olist.set_defaults(func=cmd_outbox_list)
    retry = ob_sub.add_parser("retry", parents=[common], help="send a failed message again",
                              description="Put a failed (or waiting) message back in line, with a fresh count "
                              "of attempts; `minipacs serve` sends it within a second.")  # fmt: skip
    retry.add_argument("number", type=_number, metavar="N", help="the message's number (# in `outbox list`)")
    retry.set_defaults(func=cmd_outbox_retry)
    ob.set_defaults(func=None, help_parser=ob)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    steps = _run(settings, lambda wl: wl.steps(start_date=args.date or "", modality=args.modality,
                                               station_ae_title=args.station, status=args.status or "",
                                               limit=args.limit))  # fmt: skip
    print_table(
        "no steps match (orders arrive from the HIS; see `minipacs worklist list` without filters)",
        [("ACCESSION", 16), ("DATE", 8), ("TIME", 6), ("MOD", 4), ("STATION", 16), ("PRIORITY", 8),
         ("STATUS", 12), ("PATIENT ID", 14), ("PROCEDURE", 0)],
        [(s.accession_number, s.start_date, s.start_time[:6], s.modality, s.station_ae_title or "-",
          s.priority, s.status, s.patient.patient_id, s.procedure_description) for s in steps],
    )  # fmt: skip
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    step, history, priors = _run(settings, lambda wl: (wl.get(args.accession), wl.history(args.accession),
                                                       wl.priors(args.accession)))  # fmt: skip
    p = step.patient
    lines = [
        ("accession", step.accession_number), ("status", step.status),
        ("order", f"{step.placer_order_number} from {step.placer_issuer} (filler {step.filler_order_number})"),
        ("procedure", f"{step.procedure_description} [{step.procedure_code or '-'}]"
                      + (f", DVKT {step.service_code}" if step.service_code else "")),
        ("modality", f"{step.modality} at {step.station_ae_title or 'any station'}"),
        ("scheduled", f"{step.start_date} {step.start_time[:6]}, {step.priority}"),
        ("patient", f"{p.patient_id} {p.name}, born {p.birth_date or '?'}, sex {p.sex or '?'}"),
        ("study UID", step.study_instance_uid),
        ("referring", step.referring_physician or "-"),
    ]  # fmt: skip
    for name, value in lines:
        print(f"{name + ':':<11} {value}")
    print("\nhistory:")
    print_table("  (none)", [("TIME", 19), ("ACTION", 9), ("STATUS", 12), ("WHO", 14), ("VIA", 6), ("DETAIL", 0)],
                [(local_time(datetime.fromisoformat(e["at"])), e["action"], e["status"], e["actor"], e["via"],
                  e["detail"]) for e in history])  # fmt: skip
    print("\nprior studies:")
    print_table("  (none in the archive)", [("DATE", 8), ("ACCESSION", 16), ("MOD", 8), ("IMAGES", 6),
                                            ("DESCRIPTION", 0)],
                [(r["study_date"], r["accession_number"] or "-", r["modalities_in_study"], str(r["num_instances"]),
                  r["study_description"]) for r in priors])  # fmt: skip
    return 0


def cmd_unmatched(args: argparse.Namespace, settings: Settings) -> int:
    studies = _run(settings, lambda wl: wl.unmatched_studies(limit=args.limit))
    print_table(
        "no unmatched studies: every study arrived with an order",
        [("RECEIVED", 19), ("STUDY DATE", 10), ("ACCESSION", 16), ("MOD", 6), ("IMAGES", 6), ("PATIENT ID", 14),
         ("STUDY INSTANCE UID", 0)],
        [(local_time(datetime.fromisoformat(s["received_at"])), s["study_date"], s["accession_number"] or "-",
          s["modalities"], str(s["num_instances"]), s["patient_id"] or "-", s["study_instance_uid"])
         for s in studies],
    )  # fmt: skip
    return 0


def cmd_match(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin

    result = _run(settings, lambda wl: wl.match_study(args.study_uid, args.accession, cli_origin()))
    if not result["changed"]:
        print(f"study {result['study_instance_uid']} was already matched to {result['accession_number']}")
        return 0
    print(f"matched study {result['study_instance_uid']} to order {result['accession_number']} "
          f"(patient {result['patient_id']}, step {result['status']})")  # fmt: skip
    for correction in result["corrections"]:
        print(f"  corrected: {correction}")
    return 0


def cmd_outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from worklist.outbox import Outbox

    entries = _run(settings, lambda wl: Outbox(wl.db).entries(args.state or "", args.limit))
    print_table(
        "the outbox is empty" + ("" if settings["hl7.status_updates"] else
                                 " (status updates to the HIS are off: set hl7.status_updates)"),
        [("#", 6), ("STATE", 7), ("KIND", 10), ("SUBJECT", 16), ("TRIES", 5), ("CREATED", 19), ("SENT / NEXT TRY", 19),
         ("LAST ERROR", 0)],
        [(str(e.pk), e.state, e.kind, e.subject, str(e.attempts), local_time(e.created_at),
          local_time(e.sent_at) if e.sent_at else (local_time(e.next_attempt_at) if e.state == "pending" else "-"),
          e.last_error) for e in entries],
    )  # fmt: skip
    return 0


def cmd_outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    from worklist.outbox import Outbox

    entry = _run(settings, lambda wl: Outbox(wl.db).retry(args.number))
    print(f"outbox message {entry.pk} ({entry.subject}) will be sent again"
          + ("" if settings["hl7.status_updates"] else
             "; hl7.status_updates is not set, so nothing is sent until it is"))  # fmt: skip
    return 0


def _run(settings: Settings, action: Callable[[Any], Any]) -> Any:
    def on_worklist(archive: Any) -> Any:
        try:
            worklist = open_worklist(archive, settings)
        except ServiceError as exc:
            raise WorklistError(str(exc)) from exc
        return action(worklist)

    return run_on_archive(settings, on_worklist, WorklistError, _advice)


def _advice(exc: Any) -> str:
    from archive import NotFound
    from worklist.errors import UnknownOrder

    if isinstance(exc, UnknownOrder):
        return f"{exc.message}; `minipacs worklist list` shows the orders"
    if isinstance(exc, NotFound) and "study" in exc.message:
        return f"{exc.message}; `minipacs worklist unmatched` lists the studies waiting for an order"
    if isinstance(exc, NotFound):
        return f"{exc.message}; `minipacs outbox list` shows the messages"
    return str(exc.message)


def _date(value: str) -> str:
    if value.lower() == "today":
        return datetime.now().strftime("%Y%m%d")
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 20261205 (or 'today')") from None
    return value


def _status(value: str) -> str:
    status = value.strip().upper().replace("_", " ")
    if status not in STATUSES:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of: {', '.join(STATUSES)}")
    return status


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number from 1 to 100000")
    return int(value)


def _number(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a message number (the # column of `outbox list`)")
    return int(value)
