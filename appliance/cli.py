"""The `minipacs` command."""

from __future__ import annotations

import argparse
import os
import errno
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance import cli_accounts, cli_audit, cli_reports, cli_worklist, logs
from appliance import cli_backup, cli_devices, cli_fsck, cli_init, cli_retention
from appliance.tables import local_time
from appliance.services import ServiceError, dicom_config, open_archive, open_worklist, startup_report
from appliance.settings import FLAGS, Settings, SettingsError, load

log = logging.getLogger("minipacs")

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"

EPILOG = """\
examples:
  minipacs demo                          run with the sample studies loaded
  minipacs serve --data /srv/minipacs    run on your own data directory
  minipacs import /media/cdrom           import a patient CD (DICOMDIR) or any folder
  minipacs ae add WORKSTATION 192.168.1.50 104 --description "Reading room"
  minipacs user add admin --role admin   create the first administrator (asks for a password)
  minipacs token create his-emr          a bearer token for the EMR (printed once)
  minipacs token create his --role his   a token for the HIS to place orders (/api/orders, /fhir)

Settings come from minipacs.toml (or --config FILE), MINIPACS_* environment
variables and flags; flags win. See appliance/minipacs.toml for every key.
"""


class CommandError(Exception):
    """A failure to report in one line, with what to do about it."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `minipacs` or `minipacs ae` without what to do: show what there is.
        getattr(args, "help_parser", parser).print_help()
        return 2
    try:
        settings = load(args.config, _overrides(args))
        logs.configure(settings["log.level"], fmt=settings["log.format"])
        for warning in settings.warnings:
            log.warning("%s", warning)
        result: int = args.func(args, settings)
        return result
    except SettingsError as exc:
        print(f"minipacs: configuration error: {exc}", file=sys.stderr)
        return 2
    except (CommandError, cli_accounts.AccountError, cli_audit.AuditError, cli_worklist.WorklistError,
            cli_reports.ReportCommandError, cli_devices.DeviceCommandError, cli_fsck.FsckCommandError,
            cli_init.InitError, cli_backup.BackupError, cli_retention.RetentionError) as exc:
        print(f"minipacs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("minipacs: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minipacs",
        description="A mini-PACS and diagnostic archive for district hospitals.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="configuration file (default: $MINIPACS_CONFIG, else ./minipacs.toml if present)")
    common.add_argument("--data", metavar="DIR", help="data directory (default: ./minipacs-data)")
    common.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")
    listen = argparse.ArgumentParser(add_help=False)
    listen.add_argument("--aet", metavar="TITLE", help="our DICOM AE title (default: MINIPACS)")
    listen.add_argument("--dicom-port", metavar="N", type=int, help="DICOM port (default: 11112)")
    listen.add_argument("--http-port", metavar="N", type=int, help="HTTP port for DICOMweb (default: 8080)")
    listen.add_argument("--hl7-port", metavar="N", type=int, help="HL7 MLLP port for HIS orders (default: 2575)")

    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve = sub.add_parser("serve", parents=[common, listen], help="run the archive's listeners",
                           description="Run the DICOM listener until stopped (Ctrl+C or SIGTERM).")  # fmt: skip
    serve.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", parents=[common, listen], help="serve with the sample studies imported",
                          description="Import the sample studies (again is harmless) and serve.")  # fmt: skip
    demo.add_argument("--samples", metavar="DIR", type=Path, default=SAMPLES,
                      help=f"folder of sample studies (default: {SAMPLES})")  # fmt: skip
    demo.set_defaults(func=cmd_demo)

    imp = sub.add_parser("import", parents=[common], help="import DICOM files, folders or DICOMDIR media",
                         description="Import DICOM files, folders (recursively) and DICOMDIR media. "
                         "Non-DICOM files are skipped and listed; exit status 1 if any file was rejected. "
                         "Importing the same files again is harmless: they count as already stored.")  # fmt: skip
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                     help="a DICOM file, a folder, or a DICOMDIR (e.g. /media/cdrom/DICOMDIR)")  # fmt: skip
    imp.add_argument("--no-progress", action="store_true", help="no progress bar (for scripts)")
    imp.set_defaults(func=cmd_import)

    ae = sub.add_parser("ae", help="manage known DICOM application entities",
                        description="Known AEs are C-MOVE destinations and, with "
                        "dicom.calling_ae = \"registered\", the only AEs allowed to connect.")  # fmt: skip
    ae_sub = ae.add_subparsers(title="actions", metavar="ACTION")
    add = ae_sub.add_parser("add", parents=[common], help="register an AE",
                            description="Register an AE. Without HOST it may call from any address; "
                            "without PORT it cannot be a C-MOVE destination.")  # fmt: skip
    add.add_argument("title", metavar="TITLE", help="AE title, e.g. CT_SCANNER")
    add.add_argument("host", metavar="HOST", nargs="?", default="", help="IP address or host name")
    add.add_argument("port", metavar="PORT", nargs="?", default=0, help="DICOM port it listens on")
    add.add_argument("--description", default="", help="e.g. 'CT room 1'")
    add.set_defaults(func=cmd_ae_add)
    lst = ae_sub.add_parser("list", parents=[common], help="list registered AEs",
                            description="List the registered AEs and when each last connected.")  # fmt: skip
    lst.set_defaults(func=cmd_ae_list)
    rm = ae_sub.add_parser("remove", parents=[common], help="remove a registered AE",
                           description="Remove a registered AE (to change one: remove it, then add it again).")  # fmt: skip
    rm.add_argument("title", metavar="TITLE", help="its AE title, as `minipacs ae list` shows it")
    rm.set_defaults(func=cmd_ae_remove)
    ae.set_defaults(func=None, help_parser=ae)
    cli_accounts.add_parsers(sub, common)
    cli_audit.add_parser(sub, common)
    cli_worklist.add_parsers(sub, common)
    cli_devices.add_parsers(sub, common)
    cli_reports.add_parsers(sub, common)
    cli_fsck.add_parser(sub, common)
    cli_init.add_parser(sub)
    cli_backup.add_parsers(sub, common)
    cli_retention.add_parsers(sub, common)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (settings.FLAGS: --dicom-port is args.dicom_port)."""
    return {key: getattr(args, flag[2:].replace("-", "_"), None) for key, flag in FLAGS.items()}


def _open_archive(settings: Settings) -> Any:
    try:
        return open_archive(settings)
    except ServiceError as exc:
        raise CommandError(str(exc)) from exc


def _open_worklist(archive: Any, settings: Settings) -> Any:
    try:
        return open_worklist(archive, settings)
    except ServiceError as exc:
        raise CommandError(str(exc)) from exc


def cmd_serve(args: argparse.Namespace, settings: Settings, banner: str = "") -> int:
    from appliance.outbox import outbox_listeners
    from appliance.supervisor import Supervisor
    from appliance.workers import DicomWorkers, prepare

    from appliance.report_services import check_reports

    _metrics_folder(settings)
    try:
        check_reports(settings)  # templates and outputs: refused at start, not at the first report
        senders = outbox_listeners(settings)  # HL7 to the HIS and the EMR, report objects into the archive
    except ServiceError as exc:
        raise CommandError(str(exc)) from exc
    archive = None
    dicom: Any
    if settings.dicom_workers > 1:
        # The supervisor stays small: a short-lived process brings the index
        # up to date and reports on it, and the workers do the DICOM work.
        code = prepare(settings)
        if code != 0:
            return code
        dicom = DicomWorkers(settings, settings.dicom_workers)
    else:
        from dicom_scp import DicomService

        archive = _open_archive(settings)
        startup_report(archive, settings)
        dicom = DicomService(archive, dicom_config(settings), worklist=_open_worklist(archive, settings))
    from appliance.hl7 import Hl7Listener, Hl7PortError
    from appliance.http import HttpListener, HttpPortError

    # DICOM starts last: once a modality's C-ECHO is answered, HTTP and HL7 are
    # listening too (tests and install scripts wait on the echo alone); it stops first.
    supervisor = Supervisor([HttpListener(settings), Hl7Listener(settings, archive), *senders, dicom])

    def started() -> None:
        if banner:
            print(banner.format(port=dicom.address[1]), flush=True)

    try:
        supervisor.run(on_started=started)
    except OSError as exc:
        kind = "hl7" if isinstance(exc, Hl7PortError) else "http" if isinstance(exc, HttpPortError) else "dicom"
        raise CommandError(_listen_error(settings, exc, kind)) from exc
    finally:
        if archive is not None:
            archive.close()
    log.info("minipacs stopped")
    return 0


def _metrics_folder(settings: Settings) -> None:
    """An empty folder where every process of this `serve` adds up its Prometheus figures (archive/metrics.py)."""
    folder = settings.data_dir / "run" / "metrics"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):  # the figures of a previous run: counters start again at 0
            old.unlink()
    except OSError as exc:
        raise CommandError(f"cannot prepare {folder}: {exc.strerror or exc}") from exc
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _listen_error(settings: Settings, exc: OSError, kind: str = "dicom") -> str:
    """Why the DICOM (or HL7, or HTTP) port could not be opened, and what to do about it."""
    host, port = settings[f"{kind}.host"], settings[f"{kind}.port"]
    name, flag, usual = {"hl7": ("HL7", "--hl7-port", 2575), "http": ("HTTP", "--http-port", 8080)}.get(
        kind, ("DICOM", "--dicom-port", 11112))
    problem = f"cannot listen for {name} on {host}:{port}: {exc.strerror or exc}."
    if exc.errno == errno.EADDRINUSE:
        other = {"hl7": "HL7 engine", "http": "web server"}.get(kind, "PACS")
        advice = (f"Is another minipacs (or another {other}) already "
                  f"using the port? Stop it, or choose another port with {flag}.")  # fmt: skip
    elif exc.errno == errno.EACCES:
        advice = ("Ports below 1024 (like 104) need root or CAP_NET_BIND_SERVICE; "
                  f"or choose a port above 1023 with {flag}, e.g. {usual}.")  # fmt: skip
    elif exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        advice = (f"{host} is not an address of this machine: set {kind}.host "
                  f"(MINIPACS_{kind.upper()}_HOST) to one of its addresses, or to 0.0.0.0 for all of them.")  # fmt: skip
    else:
        advice = f"Check {kind}.host and {kind}.port (minipacs.toml, MINIPACS_{kind.upper()}_HOST/PORT)."
    return f"{problem} {advice}"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.importer import import_paths

    if not args.samples.is_dir():
        raise CommandError(f"sample studies not found in {args.samples}; pass --samples DIR")
    archive = _open_archive(settings)
    try:
        studies = sorted(p for p in args.samples.iterdir() if p.is_dir() and p.name[0] not in "._")
        summary = import_paths(archive, studies, progress=sys.stderr.isatty())
        if not summary.interrupted:
            from appliance.demo_orders import place_demo_orders

            new_orders = place_demo_orders(archive, _open_worklist(archive, settings))
        from appliance.demo_users import ensure_demo_users

        password = ensure_demo_users(archive, settings.data_dir)
    finally:
        archive.close()
    print("Sample studies: " + summary.lines()[0], flush=True)
    if not summary.interrupted:
        print(f"Sample orders for today: {new_orders} new, 3 in all (minipacs worklist list --date today)",
              flush=True)  # fmt: skip
    if summary.interrupted:
        print("minipacs: interrupted", file=sys.stderr)
        return 130
    return cmd_serve(args, settings, banner=_web_help(settings, password) + _connect_help(settings))


def _web_help(settings: Settings, password: str | None) -> str:
    target = "localhost" if settings["http.host"] in ("", "0.0.0.0", "::") else settings["http.host"]
    url = f"http://{target}:{settings['http.port']}/"
    if password is None:
        return f"\nWeb screens (study list, viewer, reports, worklist, administration): {url}"
    return f"""
Web screens (study list, viewer, reports, worklist, administration): {url}
  demo users admin, bs.demo (radiologist), ktv.demo (technologist); password {password}
  (kept in {settings.data_dir / "demo-password.txt"}; for trying only: `minipacs user disable` them for real use)"""


def _connect_help(settings: Settings) -> str:
    aet = settings["dicom.ae_title"]
    host = settings["dicom.host"]
    if host in ("", "0.0.0.0", "::"):
        addresses = ", ".join(_local_addresses()) or "this machine's address"
        target = "localhost"
    else:  # listening on one address only: localhost may not reach it
        addresses = target = host
    return f"""
minipacs is running. Data: {settings.data_dir}
  DICOM: AE title {aet}, port {{port}} (addresses: {addresses})
Point a modality or workstation at AE {aet}, port {{port}}. To try it with dcmtk:
  echoscu  -aec {aet} {target} {{port}}
  findscu  -aec {aet} -S -k QueryRetrieveLevel=STUDY -k PatientName="NGUYEN*" -k StudyInstanceUID -k StudyDescription {target} {{port}}
  storescu -aec {aet} {target} {{port}} image.dcm
The modality worklist has today's sample orders (MWL C-FIND; MPPS is accepted too):
  findscu  -aec {aet} -W -k PatientName -k AccessionNumber -k "ScheduledProcedureStepSequence[0].Modality" {target} {{port}}
HIS orders: HL7 v2 over MLLP on port {settings["hl7.port"]}; JSON at /api/orders, FHIR at /fhir (token role his).
Workstations that retrieve (C-MOVE) must be registered first:
  minipacs ae add WORKSTATION 192.168.1.50 104
DICOMweb (QIDO-RS) is at http://{target}:{settings["http.port"]}/dicomweb, for users only:
  minipacs user add admin --role admin
  curl -u admin http://{target}:{settings["http.port"]}/dicomweb/studies
Reports (/api/reports; the EMR reads /api/studies?accession=..., /fhir/DiagnosticReport, ORU^R01 via
reports.emr): a radiologist signs with their own certificate (a PKCS#12 from the CA; its passphrase is the PIN):
  minipacs user add bs.lan --role radiologist --display-name "BS. Trần Thị Lan" --certificate-number 003421/HCM-CCHN
  minipacs user signing-key bs.lan bs.lan.p12
Stop with Ctrl+C."""


def _local_addresses() -> list[str]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos if not str(info[4][0]).startswith("127.")})


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.importer import import_paths

    archive = _open_archive(settings)
    try:
        summary = import_paths(archive, args.paths, progress=not args.no_progress,
                               exclude=[settings.data_dir])  # fmt: skip
    except FileNotFoundError as exc:
        raise CommandError(f"nothing imported: {exc}") from exc
    finally:
        archive.close()
    for line in summary.lines():
        print(line)
    if summary.interrupted:
        return 130
    return 1 if summary.rejected else 0


def cmd_ae_add(args: argparse.Namespace, settings: Settings) -> int:
    from archive import ArchiveError

    archive = _open_archive(settings)
    try:
        ae = archive.registry.add(args.title, args.host, args.port, args.description)
    except ArchiveError as exc:
        existing = archive.registry.get(args.title)
        if existing is not None:
            raise CommandError(
                f"AE {existing.ae_title} is already registered ({_where(existing)}). To change it: "
                f"minipacs ae remove {existing.ae_title}, then add it again."
            ) from exc
        raise CommandError(exc.message) from exc
    finally:
        archive.close()
    print(f"registered {ae.ae_title}: {_where(ae)}")
    if not ae.can_receive:
        print("  it can send to minipacs; without a host and port it cannot be a C-MOVE destination")
    return 0


def _where(ae: Any) -> str:
    if ae.can_receive:
        return f"{ae.host} port {ae.port}"
    return f"calls from {ae.host}" if ae.host else "calls from any address"


def cmd_ae_list(args: argparse.Namespace, settings: Settings) -> int:
    archive = _open_archive(settings)
    try:
        entries = archive.registry.list()
    finally:
        archive.close()
    if not entries:
        print("no AEs registered (add one with: minipacs ae add TITLE HOST PORT)")
        return 0
    print(f"{'AE TITLE':<16}  {'HOST':<24}  {'PORT':>5}  {'LAST SEEN':<19}  DESCRIPTION")
    for ae in entries:
        seen = local_time(ae.last_seen_at) if ae.last_seen_at else "never"
        print(f"{ae.ae_title:<16}  {ae.host or '(any)':<24}  {ae.port or '-':>5}  {seen:<19}  {ae.description}")
    return 0


def cmd_ae_remove(args: argparse.Namespace, settings: Settings) -> int:
    from archive import ArchiveError, NotFound

    archive = _open_archive(settings)
    try:
        archive.registry.remove(args.title)
    except NotFound as exc:
        raise CommandError(f"{exc.message}; `minipacs ae list` shows the registered AEs") from exc
    except ArchiveError as exc:
        raise CommandError(exc.message) from exc
    finally:
        archive.close()
    print(f"removed {args.title.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
