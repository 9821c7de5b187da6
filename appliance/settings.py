"""Settings: one typed object from defaults, minipacs.toml, MINIPACS_* variables and flags.

Precedence is flags > environment > file > defaults. Every key is written
``section.key`` in the file (``dicom.port``), ``MINIPACS_SECTION_KEY`` in the
environment (``MINIPACS_DICOM_PORT``); the top-level ``data`` key is
``MINIPACS_DATA``. ``appliance/minipacs.toml`` documents every key, and a
test fails when one is missing there.
"""

from __future__ import annotations

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


def _port(value: Any) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError("must be a port number 0-65535")
    return port


def _positive(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _count(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


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


def _level(value: Any) -> str:
    text = str(value).strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return text


#: key -> (default, parser). The order is the order of minipacs.toml.
SPEC: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "data": ("./minipacs-data", str),
    "database.url": ("", str),
    "storage.url": ("", str),
    "storage.reserve_mb": (1024, _count),
    "dicom.ae_title": ("MINIPACS", _ae_title),
    "dicom.host": ("0.0.0.0", str),
    "dicom.port": (11112, _port),
    "dicom.max_pdu": (1048576, _count),
    "dicom.max_associations": (32, _count),
    "dicom.acse_timeout": (30.0, _positive),
    "dicom.dimse_timeout": (60.0, _positive),
    "dicom.network_timeout": (300.0, _positive),
    "dicom.calling_ae": ("any", _choice("any", "registered")),
    "dicom.check_called_ae": (False, _bool),
    "http.host": ("0.0.0.0", str),
    "http.port": (8080, _port),
    "hl7.host": ("0.0.0.0", str),
    "hl7.port": (2575, _port),
    "log.level": ("INFO", _level),
}


def env_name(key: str) -> str:
    return "MINIPACS_" + key.replace(".", "_").upper()


@dataclass(frozen=True)
class Settings:
    """The appliance's settings, resolved and validated."""

    values: Mapping[str, Any]
    #: Where each value came from ("default", "file <path>", "MINIPACS_X", "--flag").
    sources: Mapping[str, str]
    config_file: Path | None

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
            raw[key], sources[key] = value, f"{path}"
    for key in SPEC:
        name = env_name(key)
        if name in environ:
            raw[key], sources[key] = environ[name], name
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key], sources[key] = value, "--" + key.split(".")[-1].replace("_", "-")

    values: dict[str, Any] = {}
    for key, (_, parse) in SPEC.items():
        try:
            values[key] = parse(raw[key])
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"setting {key} = {raw[key]!r} (from {sources[key]}): {exc}") from None
    return Settings(values=values, sources=sources, config_file=path)


def _config_path(config_file: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise SettingsError(f"configuration file {path} does not exist")
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
