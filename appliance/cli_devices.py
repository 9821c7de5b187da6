"""`minipacs device ...`: the device codes (MA_MAY) of the modalities, for the health-insurance claim.

The HIS puts each examination's device code ``XX.n.YYYYY.Z`` into the claim
XML (QĐ 130/QĐ-BYT, XML3 MA_MAY); minipacs keeps one per modality AE title
(reports.devices). Modalities that send their Device Serial Number get an
"auto" entry by themselves when reports.facility_code is set; the
administrator confirms or corrects it here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from appliance.services import run_on_archive
from appliance.settings import Settings
from appliance.tables import local_time, print_table


class DeviceCommandError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `device` command to the `minipacs` parser."""
    dev = sub.add_parser("device", help="device codes of the modalities (MA_MAY of the insurance claim)",
                         description="The device code (mã máy, MA_MAY) of each modality, by its AE title: "
                         "XX.n.YYYYY.Z with XX the device type (XQ X-quang, CL CT, SA siêu âm, MRI, NS nội soi), "
                         "n the funding source (nguồn kinh phí), YYYYY the facility code (mã cơ sở KCB) and Z "
                         "the machine's serial number.",
                         epilog="examples:\n  minipacs device add DR_ROOM1 XQ.1.12345.SN001 --modality DX "
                         "--description 'X-quang phòng 1'\n  minipacs device list\n  minipacs device remove DR_ROOM1",
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    dev_sub = dev.add_subparsers(title="actions", metavar="ACTION")
    add = dev_sub.add_parser("add", parents=[common], help="set the device code of a modality AE title",
                             description="Set (or replace) the device code of a modality, by the AE title it "
                             "sends images with. A code set here is never overwritten by what the modality sends.")  # fmt: skip
    add.add_argument("ae_title", metavar="AE", help="the modality's AE title, e.g. DR_ROOM1")
    add.add_argument("code", metavar="CODE", help="the device code XX.n.YYYYY.Z, e.g. XQ.1.12345.SN001")
    add.add_argument("--modality", default="", help="its DICOM modality: CT, DX, CR, US, MR, ...")
    add.add_argument("--serial", default="", help="its serial number (default: the Z of the code)")
    add.add_argument("--description", default="", help="e.g. 'X-quang phòng 1'")
    add.set_defaults(func=cmd_add)
    lst = dev_sub.add_parser("list", parents=[common], help="list the device codes",
                             description="List the device codes: 'admin' set here, 'auto' pre-filled from the "
                             "Device Serial Number a modality sent (an empty code needs reports.facility_code "
                             "or `minipacs device add`).")  # fmt: skip
    lst.set_defaults(func=cmd_list)
    rm = dev_sub.add_parser("remove", parents=[common], help="remove the device code of an AE title",
                            description="Remove a modality's device code; its claims then warn that MA_MAY is missing.")  # fmt: skip
    rm.add_argument("ae_title", metavar="AE", help="its AE title, as `minipacs device list` shows it")
    rm.set_defaults(func=cmd_remove)
    dev.set_defaults(func=None, help_parser=dev)


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin

    entry = _run(settings, lambda devices: devices.set(args.ae_title, args.code, modality=args.modality,
                                                       serial_number=args.serial, description=args.description,
                                                       actor=cli_origin()))  # fmt: skip
    print(f"device code of {entry.ae_title}: {entry.device_code}"
          + (f" ({entry.modality})" if entry.modality else ""))  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    entries = _run(settings, lambda devices: devices.list())
    print_table(
        "no device codes yet (add one: minipacs device add DR_ROOM1 XQ.1.12345.SN001)",
        [("AE TITLE", 16), ("DEVICE CODE", 24), ("MOD", 4), ("SOURCE", 6), ("SERIAL", 20), ("UPDATED", 19),
         ("DESCRIPTION", 0)],
        [(e.ae_title, e.device_code or "(incomplete)", e.modality or "-", e.source, e.serial_number or "-",
          local_time(e.updated_at), e.description) for e in entries],
    )  # fmt: skip
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin

    _run(settings, lambda devices: devices.remove(args.ae_title, cli_origin()))
    print(f"removed the device code of {args.ae_title.strip()}")
    return 0


def _run(settings: Settings, action: Callable[[Any], Any]) -> Any:
    from archive import NotFound
    from reports.devices import DeviceRegistry

    def advice(exc: Any) -> str:
        if isinstance(exc, NotFound):
            return f"{exc.message}; `minipacs device list` shows the device codes"
        return str(exc.message)

    return run_on_archive(settings, lambda archive: action(DeviceRegistry(archive.db, archive.audit)),
                          DeviceCommandError, advice)  # fmt: skip
