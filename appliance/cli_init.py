"""`minipacs init`: a commented configuration file for this hospital, and an archive ready to serve.

The file is the documented defaults (appliance/minipacs.toml, every setting
with its explanation) with the values given on the command line filled in.
It is checked by loading it before it is written, and the archive it names is
opened once (creating the data directory, the index schema and, on S3, the
bucket) so a wrong database or storage URL is found now, not at the first image.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

from appliance.settings import DOCUMENTED_DEFAULTS, SettingsError, load


class InitError(Exception):
    """A failure to report in one line (the CLI prints it as `minipacs: ...`)."""


#: Command-line option -> setting it fills in.
_OPTIONS = {"data": "data", "database_url": "database.url", "storage_url": "storage.url", "aet": "dicom.ae_title",
            "hospital_name": "reports.hospital_name", "public_url": "reports.public_url"}  # fmt: skip


def add_parser(sub: Any) -> None:
    init = sub.add_parser("init", help="write a commented configuration file and prepare the archive",
                          description="Write minipacs.toml with every setting explained, the values given here "
                          "filled in, then open the archive it names once (data directory, index schema, S3 "
                          "bucket) to check it works. An existing file is never overwritten without --force.",
                          epilog="examples:\n  minipacs init\n  minipacs init /etc/minipacs/minipacs.toml "
                          "--data /var/lib/minipacs --hospital-name 'Bệnh viện Đa khoa huyện Cần Giuộc'\n"
                          "  minipacs init --database-url postgresql+psycopg://minipacs:PASS@db/minipacs "
                          "--storage-url s3+https://minio.local/pacs",
                          formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    init.add_argument("path", nargs="?", default="minipacs.toml", type=Path, metavar="FILE",
                      help="where to write the configuration (default: ./minipacs.toml)")  # fmt: skip
    init.add_argument("--data", metavar="DIR", help="data directory (default: ./minipacs-data)")
    init.add_argument("--database-url", metavar="URL", help="the index database (default: SQLite in the data directory)")
    init.add_argument("--storage-url", metavar="URL", help="the object store (default: the data directory's objects/)")
    init.add_argument("--aet", metavar="TITLE", help="our DICOM AE title (default: MINIPACS)")
    init.add_argument("--hospital-name", metavar="NAME", help="printed at the top of reports")
    init.add_argument("--public-url", metavar="URL", help="where patients' phones reach us (the QR code's link)")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=cmd_init, config=None)


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with ``key = ...`` set in its section for each dotted key of `values`; comments kept."""
    for dotted, value in values.items():
        section, _, key = dotted.rpartition(".")
        start = 0
        if section:
            header = re.search(rf"^\[{re.escape(section)}\]\s*$", template, re.M)
            if header is None:
                raise InitError(f"the documented configuration has no [{section}] section")
            start = header.end()
        end = re.compile(r"^\[", re.M).search(template, start)
        stop = end.start() if end else len(template)
        line = re.compile(rf"^{re.escape(key)} = .*$", re.M).search(template, start, stop)
        if line is None:
            raise InitError(f"the documented configuration has no {dotted} setting")
        # A JSON string is a valid TOML basic string (same escapes), Vietnamese kept as it is.
        template = template[: line.start()] + f"{key} = {json.dumps(value, ensure_ascii=False)}" + template[line.end():]
    return template


def cmd_init(args: argparse.Namespace, settings: Any) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise InitError(f"{path} already exists; edit it, or pass --force to replace it with a new one")
    values = {setting: getattr(args, option) for option, setting in _OPTIONS.items() if getattr(args, option)}
    text = fill(DOCUMENTED_DEFAULTS.read_text(encoding="utf-8"), values)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.new")
    scratch.write_text(text, encoding="utf-8")
    try:
        checked = load(scratch, {}, environ={})  # the file alone, as `serve --config FILE` will read it
    except SettingsError as exc:
        scratch.unlink()
        raise InitError(f"not written: {exc}") from None
    from appliance.services import ServiceError, open_archive

    try:
        open_archive(checked).close()
    except ServiceError as exc:
        scratch.unlink()
        raise InitError(f"not written: {exc}") from None
    os.replace(scratch, path)
    print(f"Wrote {path} (every setting is explained in it).")
    print(f"Data directory: {checked.data_dir}; index: {_safe(checked.database_url)}; objects: {_safe(checked.storage_url)}")
    print("Next:")
    print(f"  minipacs user add admin --role admin --config {path}     # the first administrator")
    print(f"  minipacs serve --config {path}")
    return 0


def _safe(url: str) -> str:
    """A URL without its password."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)
