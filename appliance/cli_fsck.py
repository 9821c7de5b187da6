"""`minipacs fsck`: check that every stored object is there, intact, and accounted for.

One fsck runs at a time across all nodes (a lease through the database), so
the weekly timer of every node of a scaled-out site reads the store once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tqdm import tqdm

from appliance.cli_backup import ALREADY_RUNNING, already_running
from appliance.services import run_on_archive
from appliance.settings import Settings


class FsckCommandError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    fsck = sub.add_parser("fsck", parents=[common], help="check every stored object against the index",
                          description="Read every object the index names and compare its SHA-256 and size with "
                          "what was recorded when it was stored; then list objects no index row points at "
                          "(orphans). Exit status 0 when all is well, 1 when something was found (or the check "
                          f"could not run), {ALREADY_RUNNING} when another fsck is running on this or another node. "
                          "With --repair, corrupt and orphan objects are moved under quarantine/ in the same "
                          "store (never deleted) and the moves are audited. Safe while `minipacs serve` runs, but "
                          "an object being stored at that moment may show as an orphan: run it again to be sure.",
                          epilog="examples:\n  minipacs fsck\n  minipacs fsck --repair",
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    fsck.add_argument("--repair", action="store_true", help="move corrupt and orphan objects to quarantine/")
    fsck.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    fsck.set_defaults(func=cmd_fsck)


def cmd_fsck(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin
    from archive.integrity import fsck
    from archive.lease import Lease
    from reports.stored_objects import pdf_references

    def check(archive: Any) -> Any:
        lease = Lease(archive.db, "fsck")
        if not lease.held():
            return None
        try:
            total = archive.statistics().size_bytes  # instances only: the bar may end a little past 100 %
            with tqdm(total=total, unit="B", unit_scale=True, desc="checking", disable=args.no_progress,
                      file=sys.stderr) as bar:  # fmt: skip
                return fsck(archive.db, archive.objects, archive.audit, sources=[pdf_references],
                            repair=args.repair, origin=cli_origin(), progress=bar.update)  # fmt: skip
        finally:
            lease.release()

    report = run_on_archive(settings, check, FsckCommandError)
    if report is None:
        return already_running("fsck")
    for finding in report.findings:
        moved = " -> moved to quarantine/" if finding.quarantined else ""
        print(f"{finding.kind.upper():8} {finding.key}  {finding.what}{': ' + finding.detail if finding.detail else ''}"
              f"{moved}")  # fmt: skip
    size = report.checked_bytes / 2**20
    print(f"{report.checked} objects checked ({size:.1f} MB): {report.count('missing')} missing, "
          f"{report.count('corrupt')} corrupt, {report.count('orphan')} orphans.")  # fmt: skip
    if not report.clean and not args.repair and (report.count("corrupt") or report.count("orphan")):
        print("Run `minipacs fsck --repair` to move corrupt and orphan objects to quarantine/ (nothing is deleted). "
              "Missing or corrupt images can be sent again from the modality or restored from a backup.")  # fmt: skip
    return 0 if report.clean else 1
