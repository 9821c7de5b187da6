"""Settings: one typed object from defaults, minipacs.toml, MINIPACS_* variables and flags.

Precedence is flags > environment > file > defaults. Every key is written
``section.key`` in the file (``dicom.port``), ``MINIPACS_SECTION_KEY`` in the
environment (``MINIPACS_DICOM_PORT``); the top-level ``data`` key is
``MINIPACS_DATA``. ``appliance/minipacs.toml`` documents every key, and a
test fails when one is missing there.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_NAME = "minipacs.toml"
DOCUMENTED_DEFAULTS = Path(__file__).with_name("minipacs.toml")


class SettingsError(ValueError):
    """A setting with a bad value; the message names the setting and its source."""


def _int(value: Any, what: str) -> int:
    """A whole number from TOML (int) or text (environment, flags); never a bool or 1.5."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"must be {what}")


def _port(value: Any) -> int:
    port = _int(value, "a port number 0-65535")
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number 0-65535")
    return port


def _positive(value: Any) -> float:
    number = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
    if not (math.isfinite(number) and number > 0):
        raise ValueError("must be a number of seconds greater than 0")
    return number


def _count(value: Any) -> int:
    number = _int(value, "a whole number, 0 or more")
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _at_least_one(value: Any) -> int:
    number = _int(value, "a whole number, 1 or more")
    if number < 1:
        raise ValueError("must be a whole number, 1 or more")
    return number


def _text(value: Any) -> str:
    # A TOML number or list here is a mistake (a missing pair of quotes at best).
    if not isinstance(value, str):
        raise ValueError("must be text (in quotes in minipacs.toml)")
    return value.strip()


def _directory(value: Any) -> str:
    # An empty value would silently put the archive in the working directory.
    text = _text(value)
    if not text:
        raise ValueError("must name a directory, e.g. /srv/minipacs")
    return text


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return text

    return parse


def _ae_title(value: Any) -> str:
    text = str(value).strip()
    if not 1 <= len(text) <= 16 or "\\" in text or not text.isascii() or not text.isprintable():
        raise ValueError("must be 1-16 printable ASCII characters without a backslash")
    return text


def _origins(value: Any) -> str:
    """Comma-separated browser origins, each exactly scheme://host[:port] (what a browser sends)."""
    text = _text(value)
    for origin in filter(None, (o.strip() for o in text.split(","))):
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise ValueError(f"{origin!r} is not an origin like https://emr.benhvien.vn or http://10.0.0.5:3000")
    return text


def _facility_code(value: Any) -> str:
    """Mã cơ sở khám chữa bệnh: 5 digits, or "" when not set."""
    text = _text(value)
    if text and not (len(text) == 5 and text.isdigit() and text.isascii()):
        raise ValueError("must be the 5-digit facility code (mã cơ sở KCB), e.g. \"12345\", or \"\"")
    return text


def _funding_digit(value: Any) -> str:
    """The funding source digit of device codes (nguồn kinh phí)."""
    text = _text(value)
    if not (len(text) == 1 and text.isdigit() and text.isascii()):
        raise ValueError("must be one digit (nguồn kinh phí, e.g. \"1\")")
    return text


def _retention_rules(value: Any) -> str:
    from archive.errors import InvalidArgument
    from archive.retention import parse_rules

    text = _text(value)
    try:
        parse_rules(text)
    except InvalidArgument as exc:
        raise ValueError(exc.message) from None
    return text


def _level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return text


#: key -> (default, parser). The order is the order of minipacs.toml.
SPEC: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "data": ("./minipacs-data", _directory),
    "database.url": ("", _text),
    "storage.url": ("", _text),
    "storage.reserve_mb": (1024, _count),
    "storage.access_key": ("", _text),
    "storage.secret_key": ("", _text),
    "storage.create_bucket": (True, _bool),
    "dicom.ae_title": ("MINIPACS", _ae_title),
    "dicom.host": ("0.0.0.0", _text),
    "dicom.port": (11112, _port),
    "dicom.max_pdu": (1048576, _count),
    "dicom.max_associations": (32, _at_least_one),
    "dicom.acse_timeout": (30.0, _positive),
    "dicom.dimse_timeout": (60.0, _positive),
    "dicom.network_timeout": (300.0, _positive),
    "dicom.calling_ae": ("any", _choice("any", "registered")),
    "dicom.check_called_ae": (False, _bool),
    "dicom.workers": (0, _count),
    "http.host": ("0.0.0.0", _text),
    "http.port": (8080, _port),
    "http.anonymous_read": (False, _bool),
    "http.cors_origins": ("", _origins),
    "http.max_upload_mb": (2048, _at_least_one),
    "http.session_minutes": (30, _at_least_one),
    "http.cache_mb": (512, _count),
    "http.workers": (0, _count),
    "http.threads": (4, _at_least_one),
    "hl7.host": ("0.0.0.0", _text),
    "hl7.port": (2575, _port),
    "hl7.max_message_kb": (1024, _at_least_one),
    "hl7.idle_timeout": (60.0, _positive),
    "hl7.max_connections": (32, _at_least_one),
    "hl7.status_updates": ("", _text),
    "worklist.accession_pattern": ("{date}{seq:4}", _text),
    "worklist.catalogue": ("", _text),
    "worklist.correct_demographics": (True, _bool),
    "worklist.ascii_stations": ("", _text),
    "worklist.order_mapping": ("", _text),
    "reports.hospital_name": ("Bệnh viện", _text),
    "reports.department": ("Khoa Chẩn đoán hình ảnh", _text),
    "reports.hospital_address": ("", _text),
    "reports.hospital_phone": ("", _text),
    "reports.logo": ("", _text),
    "reports.templates": ("", _text),
    "reports.emr": ("", _text),
    "reports.emr_application": ("EMR", _text),
    "reports.emr_facility": ("", _text),
    "reports.oru_pdf": (False, _bool),
    "reports.dicom": ("sr,pdf", _text),
    "reports.facility_code": ("", _facility_code),
    "reports.device_funding": ("1", _funding_digit),
    "reports.share_link_days": (30, _at_least_one),
    "reports.share_on_final": (True, _bool),
    "reports.public_url": ("", _text),
    "retention.rules": ("", _retention_rules),
    "backup.destination": ("", _text),
    "log.level": ("INFO", _level),
    "log.format": ("text", _choice("text", "json")),
}


#: Settings whose values are never shown in messages or logs.
SECRETS = frozenset({"storage.secret_key"})

#: The command-line flag of each key that has one (`minipacs serve --dicom-port`).
FLAGS: dict[str, str] = {
    "data": "--data",
    "log.level": "--log-level",
    "dicom.ae_title": "--aet",
    "dicom.port": "--dicom-port",
    "http.port": "--http-port",
    "hl7.port": "--hl7-port",
}

#: MINIPACS_* variables that are not settings: the configuration file itself, a PKCS#12
#: passphrase for `minipacs user signing-key`, the S3 key pairs of `minipacs backup`/`restore`
#: and `migrate --to-storage`, and MINIPACS_TEST_* for the test harness (tests/run.sh).
_OTHER_ENV = ("MINIPACS_CONFIG", "MINIPACS_SIGNING_PASSPHRASE", "MINIPACS_BACKUP_ACCESS_KEY", "MINIPACS_BACKUP_SECRET_KEY",
              "MINIPACS_TO_STORAGE_ACCESS_KEY", "MINIPACS_TO_STORAGE_SECRET_KEY")  # fmt: skip
_RESERVED_ENV_PREFIX = "MINIPACS_TEST_"


def env_name(key: str) -> str:
    return "MINIPACS_" + key.replace(".", "_").upper()


def as_environment(settings: Settings) -> dict[str, str]:
    """The resolved settings as MINIPACS_* variables, for a child process to load the same."""
    env: dict[str, str] = {}
    for key, value in settings.values.items():
        env[env_name(key)] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


@dataclass(frozen=True)
class Settings:
    """The appliance's settings, resolved and validated."""

    values: Mapping[str, Any]
    #: Where each value came from ("default", "file <path>", "MINIPACS_X", "--flag").
    sources: Mapping[str, str]
    config_file: Path | None
    #: Things the operator should know but that do not stop us (unknown MINIPACS_* variables).
    warnings: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data"]).expanduser().resolve()

    @property
    def database_url(self) -> str:
        url = str(self.values["database.url"])
        return url or f"sqlite:///{self.data_dir / 'index.sqlite'}"

    @property
    def storage_url(self) -> str:
        url = str(self.values["storage.url"])
        return url or str(self.data_dir / "objects")

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def http_workers(self) -> int:
        """gunicorn worker processes: the setting, or one per CPU (at least 2, at most 8) when 0.

        Rendering and JSON are CPU work (processes); waiting on the disk, the
        database or S3 is what `http.threads` per process is for.
        """
        configured = int(self.values["http.workers"])
        return configured or max(2, min(8, os.cpu_count() or 1))

    @property
    def dicom_workers(self) -> int:
        """DICOM worker processes: the setting, or one per CPU (at most 4) when 0."""
        configured = int(self.values["dicom.workers"])
        return configured or max(1, min(4, os.cpu_count() or 1))


def load(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings. `overrides` are the command-line flags (None = not given).

    Raises SettingsError naming the bad key and where it came from.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {key: default for key, (default, _) in SPEC.items()}
    sources: dict[str, str] = {key: "default" for key in SPEC}

    path = _config_path(config_file, environ)
    if path is not None:
        for key, value in _read_file(path).items():
            raw[key], sources[key] = value, f"file {path}"
    for key in SPEC:
        name = env_name(key)
        if name in environ:
            raw[key], sources[key] = environ[name], name
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key], sources[key] = value, FLAGS.get(key, "--" + key.replace(".", "-").replace("_", "-"))

    values: dict[str, Any] = {}
    for key, (_, parse) in SPEC.items():
        try:
            values[key] = parse(raw[key])
        except (TypeError, ValueError) as exc:
            shown = "(hidden)" if key in SECRETS else repr(raw[key])
            raise SettingsError(f"setting {key} = {shown} (from {sources[key]}): {exc}") from None
    return Settings(values=values, sources=sources, config_file=path,
                    warnings=tuple(_unknown_env_warnings(environ)))  # fmt: skip


def _unknown_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """A typo in a variable name (MINIPACS_DICOM_PROT) would otherwise be silently ignored."""
    known = [env_name(key) for key in SPEC]
    warnings = []
    for name in sorted(environ):
        if (not name.startswith("MINIPACS_") or name in known or name in _OTHER_ENV
                or name.startswith(_RESERVED_ENV_PREFIX)):  # fmt: skip
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"see {DOCUMENTED_DEFAULTS.name} for the settings"
        warnings.append(f"ignoring the environment variable {name}: no such setting; {hint}")
    return warnings


def _config_path(config_file: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"configuration file {path} (from --config) does not exist")
        return path
    if environ.get("MINIPACS_CONFIG"):
        path = Path(environ["MINIPACS_CONFIG"])
        if not path.is_file():
            raise SettingsError(f"configuration file {path} (from MINIPACS_CONFIG) does not exist")
        return path
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"configuration file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read configuration file {path}: {exc.strerror}") from None
    flat: dict[str, Any] = {}
    for name, value in document.items():
        if isinstance(value, dict):
            for inner, inner_value in value.items():
                flat[f"{name}.{inner}"] = inner_value
        else:
            flat[name] = value
    unknown = sorted(set(flat) - set(SPEC))
    if unknown:
        raise SettingsError(
            f"configuration file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"see {DOCUMENTED_DEFAULTS.name} for the valid keys"
        )
    return flat
