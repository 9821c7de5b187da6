"""The procedure catalogue: an order's code becomes a modality, a description and billing codes."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from archive.errors import InvalidArgument

BUNDLED = Path(__file__).with_name("procedures.toml")


@dataclass(frozen=True)
class Procedure:
    code: str
    name: str
    name_en: str
    modality: str
    service_code: str
    indicator_code: str
    body_part: str
    station_ae: str


class Catalogue:
    """Procedures by code; an unknown code is allowed (the order then says its own modality)."""

    def __init__(self, procedures: list[Procedure]) -> None:
        self._by_code = {p.code.upper(): p for p in procedures}

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        """Read the catalogue file (the bundled example when `path` is None).

        Raises InvalidArgument naming the file and entry when it is malformed.
        """
        path = path or BUNDLED
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"procedure catalogue {path}: {exc}") from exc
        procedures = []
        for number, entry in enumerate(document.get("procedure", []), start=1):
            if not isinstance(entry, dict) or not str(entry.get("code", "")).strip():
                raise InvalidArgument(f"procedure catalogue {path}: entry {number} has no code")
            values = {k: str(entry.get(k, "")).strip() for k in Procedure.__dataclass_fields__}
            values["modality"] = values["modality"].upper()
            procedures.append(Procedure(**values))
        return cls(procedures)

    def get(self, code: str) -> Procedure | None:
        return self._by_code.get(code.strip().upper())

    def all(self) -> list[Procedure]:
        return list(self._by_code.values())
