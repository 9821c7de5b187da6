"""`minipacs retention` and `minipacs study hold|release`: keeping images as long as the hospital must, no longer."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from appliance.services import run_on_archive
from appliance.settings import Settings


class RetentionError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    ret = sub.add_parser("retention", parents=[common], help="delete images older than retention.rules allow",
                         description="Delete the images of studies older than `retention.rules` keeps them "
                         "(e.g. \"CT:15y, US:5y, *:15y\"). The study, its order, report and PDF stay; every "
                         "deletion is audited; studies on legal hold are never touched. Start with --dry-run.",
                         epilog="examples:\n  minipacs retention --dry-run\n  minipacs retention",
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ret.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    ret.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    ret.set_defaults(func=cmd_retention)
    study = sub.add_parser("study", help="legal hold of a study",
                           description="A study on legal hold (a complaint, a court case) is never deleted by retention.")  # fmt: skip
    actions = study.add_subparsers(title="actions", metavar="ACTION")
    hold = actions.add_parser("hold", parents=[common], help="put a study on legal hold")
    hold.add_argument("uid", metavar="STUDY_UID", help="the Study Instance UID")
    hold.add_argument("--reason", required=True, help="why, e.g. 'khiếu nại số 12/2026'")
    hold.set_defaults(func=cmd_hold, hold=True)
    release = actions.add_parser("release", parents=[common], help="release a study from legal hold")
    release.add_argument("uid", metavar="STUDY_UID", help="the Study Instance UID")
    release.add_argument("--reason", default="", help="why it may go now")
    release.set_defaults(func=cmd_hold, hold=False)
    study.set_defaults(func=None, help_parser=study)


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin
    from appliance.cli_backup import already_running
    from archive.lease import Lease
    from archive.retention import delete_images, parse_rules, plan

    rules = parse_rules(settings["retention.rules"])
    if not rules:
        print("retention.rules is empty: images are kept for ever; nothing to do.")
        return 0

    def run(archive: Any) -> tuple[int, int, int, int] | None:
        due, held = plan(archive.db, rules)
        if args.dry_run:
            for item in due:
                print(f"{item.study_date or '?':8}  {item.modalities:8}  {item.instances:5} images  "
                      f"{item.size_bytes / 2**20:8.1f} MB  {item.accession_number or '-':16}  {item.study_instance_uid}")  # fmt: skip
            return len(due), sum(i.instances for i in due), sum(i.size_bytes for i in due), held
        lease = Lease(archive.db, "retention")
        if not lease.held():
            return None
        try:
            deleted = 0
            for item in tqdm(due, desc="studies", unit=" studies", disable=args.no_progress, file=sys.stderr):
                deleted += delete_images(archive.db, archive.objects, archive.audit, item, cli_origin())
        finally:
            lease.release()
        return len(due), deleted, sum(i.size_bytes for i in due), held

    done = run_on_archive(settings, run, RetentionError)
    if done is None:  # another node's timer got there first: not a failure (the unit's SuccessExitStatus)
        return already_running("retention")
    studies, images, size, held = done
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} the images of {studies} studies ({images} images, {size / 2**30:.2f} GB); "
          f"{held} due studies are on legal hold and kept.")  # fmt: skip
    return 0


def cmd_hold(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin
    from appliance.cli_backup import already_running
    from archive.retention import set_hold

    run_on_archive(settings, lambda a: set_hold(a.db, a.audit, args.uid, args.hold, args.reason, cli_origin()),
                   RetentionError)  # fmt: skip
    print(f"study {args.uid} {'is on legal hold' if args.hold else 'is released from legal hold'}")
    return 0
