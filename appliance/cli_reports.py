"""`minipacs report ...` and `minipacs user signing-key ...`: signed report PDFs and signing certificates.

`report verify` checks a report PDF's PAdES signature with pyHanko against the
CA certificates given; it needs no archive, so anyone handed a printed
report's PDF can check it. `user signing-key` installs a radiologist's
PKCS#12 (from their CA) so they can sign reports with its passphrase as PIN.
The passphrase is never taken on the command line (other users see `ps`).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance.services import run_on_archive
from appliance.settings import Settings

#: For scripts: the PKCS#12 passphrase, instead of asking on the terminal.
PASSPHRASE_ENV = "MINIPACS_SIGNING_PASSPHRASE"
#: A PKCS#12 holds a key and a few certificates: anything much larger is not one.
MAX_PKCS12 = 1 << 20
MAX_PDF = 256 << 20


class ReportCommandError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the `report` command and its actions to the `minipacs` parser."""
    report = sub.add_parser("report", help="radiology reports: list, show, save a PDF, check a signed PDF",
                            description="Radiology reports and their signed PDFs.",
                            epilog="examples:\n  minipacs report list --status draft\n"
                            "  minipacs report show XQ2612050001\n"
                            "  minipacs report pdf XQ2612050001 -o XQ2612050001.pdf\n"
                            "  minipacs report verify XQ2612050001.pdf --trust hospital-ca.pem",
                            formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    actions = report.add_subparsers(title="actions", metavar="ACTION")
    lst = actions.add_parser("list", parents=[common], help="list reports, newest change first",
                             description="List reports with their status, accession number, patient and "
                             "signer.")  # fmt: skip
    lst.add_argument("--status", default="", choices=["", "draft", "preliminary", "final", "amended", "cancelled"])
    lst.add_argument("--accession", default="", metavar="NUMBER")
    lst.add_argument("--patient-id", default="", metavar="ID")
    lst.add_argument("--limit", type=int, default=50, metavar="N", help="at most N reports (default 50)")
    lst.set_defaults(func=cmd_report_list)
    show = actions.add_parser("show", parents=[common], help="print a report's text and versions",
                              description="Print a report: patient, study, the sections of a version "
                              "(the current one by default) and the list of versions.")  # fmt: skip
    show.add_argument("accession", metavar="ACCESSION")
    show.add_argument("--version", type=int, default=None, metavar="N")
    show.set_defaults(func=cmd_report_show)
    pdf = actions.add_parser("pdf", parents=[common], help="save the signed PDF of a report",
                             description="Write the signed PDF of a report (the newest signed version, or "
                             "--version N) to a file, e.g. to hand to a patient or another hospital.")  # fmt: skip
    pdf.add_argument("accession", metavar="ACCESSION")
    pdf.add_argument("--version", type=int, default=None, metavar="N")
    pdf.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.pdf")
    pdf.set_defaults(func=cmd_report_pdf)
    add_verify_parser(actions, common)
    report.set_defaults(func=None, help_parser=report)


def add_verify_parser(actions: Any, common: argparse.ArgumentParser) -> None:
    verify = actions.add_parser(
        "verify", parents=[common], help="check the electronic signature of a report PDF",
        description="Check the PAdES signature of a report PDF: was it changed since it was signed, who "
        "signed it (certificate serial and subject), when, and does the certificate chain to a CA you "
        "trust. Exit status 0 only when the signature is intact, valid and trusted. Nothing is fetched "
        "from the network and revocation is not checked.",
    )  # fmt: skip
    verify.add_argument("pdf", type=Path, metavar="FILE.pdf", help="the signed report")
    verify.add_argument("--trust", type=Path, action="append", default=[], metavar="CA.pem",
                        help="a CA certificate (PEM or DER) to trust; repeat for several")  # fmt: skip
    verify.set_defaults(func=cmd_report_verify)


def add_user_parsers(user_actions: Any, common: argparse.ArgumentParser) -> None:
    """Add `user signing-key` to the `user` command (appliance.cli_accounts builds that group)."""
    key = user_actions.add_parser(
        "signing-key", parents=[common], help="install, show or remove a user's signing certificate",
        description="Install a radiologist's signing certificate: a PKCS#12 file (.p12/.pfx) from the CA, "
        "with its private key. Its passphrase becomes the signing PIN they type to sign a report; "
        "minipacs keeps the file encrypted and never stores the passphrase. Installing again replaces "
        "the certificate. Without FILE, shows the installed one.",
        epilog=f"The passphrase is asked for on the terminal, or read from --passphrase-file (first line) "
        f"or the {PASSPHRASE_ENV} environment variable.",
    )  # fmt: skip
    key.add_argument("username", metavar="NAME", help="the user, e.g. bs.lan")
    key.add_argument("file", type=Path, nargs="?", metavar="FILE.p12", help="the PKCS#12 file to install")
    key.add_argument("--remove", action="store_true", help="remove the user's signing certificate")
    key.add_argument("--passphrase-file", type=Path, metavar="FILE",
                     help="read the passphrase from the first line of FILE")  # fmt: skip
    key.set_defaults(func=cmd_user_signing_key)


# --- report verify -----------------------------------------------------------------------


def cmd_report_verify(args: argparse.Namespace, settings: Settings) -> int:
    from reports.signing import SigningError, verify_pdf

    pdf = _read(args.pdf, MAX_PDF, "report PDF")
    roots = [_read(path, MAX_PKCS12, "CA certificate") for path in args.trust]
    # pyHanko logs an untrusted chain as a warning with a traceback; the verdict below says it in one line.
    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    try:
        result = verify_pdf(pdf, roots)
    except SigningError as exc:
        raise ReportCommandError(f"{args.pdf}: {exc.message}") from exc
    from reports.pdf import LOCAL_TZ

    when = f"{result.signing_time.astimezone(LOCAL_TZ):%d/%m/%Y %H:%M:%S %Z} (the signer's clock)" \
        if result.signing_time else "not stated"  # fmt: skip
    trusted = "yes" if result.trusted else ("no: no --trust CA given" if not roots else "no")
    print(f"signer:    {result.signer_subject}")
    print(f"serial:    {result.x509_serial}")
    print(f"signed at: {when}")
    print(f"intact:    {_yes(result.intact and result.valid)}")
    print(f"whole file signed: {_yes(result.covers_whole_document)}")
    print(f"trusted:   {trusted}")
    if result.ok:
        print(f"{args.pdf}: signature VALID")
        return 0
    print(f"{args.pdf}: signature NOT VALID: {result.detail}")
    return 1


def _yes(value: bool) -> str:
    return "yes" if value else "NO"


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        if path.stat().st_size > limit:
            raise ReportCommandError(f"{path} is too large for a {what}")
        return path.read_bytes()
    except OSError as exc:
        raise ReportCommandError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc


# --- report list, show, pdf -----------------------------------------------------------------


def cmd_report_list(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.tables import print_table

    if not 1 <= args.limit <= 1000:
        raise ReportCommandError("--limit must be 1-1000")
    views = _with_reports(settings, lambda r: r.find(status=args.status, accession=args.accession,
                                                       patient_id=args.patient_id, limit=args.limit))  # fmt: skip
    print_table(
        "no reports" + (" match" if args.status or args.accession or args.patient_id else " yet"),
        [("ACCESSION", 17), ("STATUS", 12), ("VER", 4), ("MOD", 4), ("STUDY DATE", 11), ("PATIENT ID", 14),
         ("SIGNED BY", 0)],
        [(v.accession_number, v.status.value, str(v.version.number), v.modality, v.study_date, v.patient.patient_id,
          v.version.signature.display_name if v.version.signature else "-") for v in views],
    )  # fmt: skip
    return 0


def cmd_report_show(args: argparse.Namespace, settings: Settings) -> int:
    from reports.types import SECTION_TITLES, SECTIONS

    view = _with_reports(settings, lambda r: r.get(args.accession, args.version))
    v = view.version
    print(f"report {view.accession_number}: {view.status.value} (version {v.number} is {v.status.value})")
    print(f"patient:   {view.patient.name.replace('^', ' ')} ({view.patient.patient_id})")
    print(f"study:     {view.study_date} {view.modality} {view.procedure_description}")
    if v.signature:
        s = v.signature
        print(f"signed:    {s.display_name} (CCHN {s.certificate_number or '-'}), {s.signed_at}, "
              f"certificate {s.x509_serial}")  # fmt: skip
    if v.reason:
        print(f"reason:    {v.reason}")
    for name in SECTIONS:
        if v.section(name).strip():
            print(f"\n{SECTION_TITLES[v.language][name]}:\n{v.section(name)}")
    print("\nversions:")
    for x in view.versions:
        signed = f", signed {x.signature.signed_at} by {x.signature.display_name}" if x.signature else ""
        print(f"  {x.number}: {x.status.value}{signed}{': ' + x.reason if x.reason else ''}")
    return 0


def cmd_report_pdf(args: argparse.Namespace, settings: Settings) -> int:
    data = _with_reports(settings, lambda r: r.pdf(args.accession, args.version))
    try:
        args.output.write_bytes(data)
    except OSError as exc:
        raise ReportCommandError(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    print(f"wrote {args.output} ({len(data)} bytes)")
    return 0


def _with_reports(settings: Settings, action: Callable[[Any], Any]) -> Any:
    from reports.service import Reports

    return run_on_archive(settings, lambda archive: action(Reports(archive)), ReportCommandError)


# --- user signing-key ----------------------------------------------------------------------


def cmd_user_signing_key(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.cli_accounts import cli_origin

    name = args.username.strip().lower()
    if args.remove:
        if args.file is not None:
            raise ReportCommandError("give either FILE.p12 (to install) or --remove, not both")
        _run(settings, lambda ids: ids.remove(name, cli_origin()))
        print(f"signing certificate of {name} removed")
        return 0
    if args.file is None:
        info = _run(settings, lambda ids: ids.info(name))
        if info is None:
            print(f"{name} has no signing certificate (install one with: minipacs user signing-key {name} FILE.p12)")
            return 1
        _print_info(info)
        return 0
    pkcs12 = _read(args.file, MAX_PKCS12, "PKCS#12 file")
    passphrase = _passphrase(args.passphrase_file)
    info = _run(settings, lambda ids: ids.install(name, pkcs12, passphrase, cli_origin()))
    print(f"installed the signing certificate of {name}:")
    _print_info(info)
    return 0


def _print_info(info: Any) -> None:
    print(f"  subject:     {info.x509_subject}")
    print(f"  serial:      {info.x509_serial}")
    state = "EXPIRED" if info.expired() else (
        "expires soon: ask the CA for a new one" if info.not_after - datetime.now(UTC) < timedelta(days=30) else "valid")
    print(f"  valid until: {info.not_after:%Y-%m-%d} ({state})")


def _passphrase(path: Path | None) -> bytes:
    if path is not None:
        try:
            first = path.read_bytes().splitlines()
        except OSError as exc:
            raise ReportCommandError(f"cannot read the passphrase file {path}: {exc.strerror or exc}") from exc
        return first[0] if first else b""
    if PASSPHRASE_ENV in os.environ:
        return os.environ[PASSPHRASE_ENV].encode("utf-8")
    if not sys.stdin.isatty():
        raise ReportCommandError(f"no terminal to ask for the passphrase: use --passphrase-file FILE or {PASSPHRASE_ENV}")
    return getpass.getpass("Passphrase of the PKCS#12 file (the signing PIN): ").encode("utf-8")


def _run(settings: Settings, action: Callable[[Any], Any]) -> Any:
    from reports.identities import SigningIdentities

    return run_on_archive(settings, lambda archive: action(SigningIdentities(archive.db, archive.audit)),
                          ReportCommandError)  # fmt: skip
