"""Report templates: data files an administrator edits, not code.

Each template is one TOML file (see reports/templates/*.toml): an id, the
language, the modalities and body part it is for, the text each section
starts with, and optional structured fields. The shipped ones load first; a
folder named by the `reports.templates` setting adds more, and one of its
files with a shipped id replaces that template. A bad file is refused with
its name and the problem, so a typo never silently drops a template.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archive.errors import InvalidArgument, NotFound
from archive.text import nfc
from reports.types import SECTIONS

SHIPPED = Path(__file__).with_name("templates")
LANGUAGES = ("vi", "en")
FIELD_TYPES = ("text", "number")

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class TemplateError(ValueError):
    """A template file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Field:
    """A structured field a template offers (a measurement, a score)."""

    name: str
    label: str
    type: str = "text"
    unit: str = ""


@dataclass(frozen=True)
class Template:
    id: str
    language: str
    title: str
    modalities: tuple[str, ...]
    body_part: str
    sections: dict[str, str]
    fields: tuple[Field, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "language": self.language, "title": self.title, "modalities": list(self.modalities),
            "body_part": self.body_part, "sections": {k: self.sections.get(k, "") for k in SECTIONS},
            "fields": [f.__dict__ for f in self.fields],
        }  # fmt: skip

    def check_structured(self, values: dict[str, Any]) -> None:
        """InvalidArgument unless every value names one of this template's fields and fits its type."""
        known = {f.name: f for f in self.fields}
        for name, value in values.items():
            spec = known.get(name)
            if spec is None:
                raise InvalidArgument(f"template {self.id} has no field {name!r} (it has: "
                                      f"{', '.join(known) or 'none'})")  # fmt: skip
            if spec.type == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise InvalidArgument(f"field {name!r} of template {self.id} takes a number")
            if spec.type == "text" and not isinstance(value, str):
                raise InvalidArgument(f"field {name!r} of template {self.id} takes text")


class Templates:
    """The templates in use, by id."""

    def __init__(self, templates: dict[str, Template]) -> None:
        self._by_id = templates

    @classmethod
    def load(cls, extra_dir: str | Path = "") -> Templates:
        """The shipped templates, then those of `extra_dir` (which replace shipped ones of the same id)."""
        found: dict[str, Template] = {}
        for folder in (SHIPPED, Path(extra_dir) if extra_dir else None):
            if folder is None:
                continue
            if not folder.is_dir():
                raise TemplateError(f"report templates folder {folder} does not exist (setting reports.templates)")
            seen_here: set[str] = set()
            for path in sorted(folder.glob("*.toml")):
                template = parse(path)
                if template.id in seen_here:
                    raise TemplateError(f"{path}: id {template.id!r} is used by another file in {folder}")
                seen_here.add(template.id)
                found[template.id] = template
        return cls(found)

    def get(self, template_id: str) -> Template:
        try:
            return self._by_id[template_id]
        except KeyError:
            raise NotFound(f"no report template {template_id!r}") from None

    def all(self, modality: str = "", language: str = "") -> list[Template]:
        """Templates for a modality and language (either may be empty: any), ordered by title."""
        return sorted((t for t in self._by_id.values()
                       if (not modality or modality.upper() in t.modalities)
                       and (not language or t.language == language)),
                      key=lambda t: (t.language, t.title))  # fmt: skip


def parse(path: Path) -> Template:
    """One template file; TemplateError naming the file and the problem."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read it: {exc}") from None
    try:
        return _template(data)
    except (TypeError, ValueError, KeyError) as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
        raise TemplateError(f"{path}: {detail}") from None


def _template(data: dict[str, Any]) -> Template:
    known = {"id", "language", "title", "modalities", "body_part", "sections", "fields"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    tid = _str(data["id"], "id")
    if not _ID_RE.match(tid):
        raise ValueError(f"id {tid!r} must be lower-case letters, digits, '.', '_' or '-' (at most 64)")
    language = _str(data["language"], "language")
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}")
    modalities = data.get("modalities", [])
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise ValueError("modalities must be a list of modality codes, e.g. [\"CT\"]")
    sections = data.get("sections", {})
    if not isinstance(sections, dict):
        raise ValueError("[sections] must be a table")
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        raise ValueError(f"unknown sections {', '.join(bad)} (known: {', '.join(SECTIONS)})")
    fields = []
    for spec in data.get("fields", []):
        if not isinstance(spec, dict):
            raise ValueError("[[fields]] entries must be tables")
        ftype = _str(spec.get("type", "text"), "field type")
        if ftype not in FIELD_TYPES:
            raise ValueError(f"field type must be one of {', '.join(FIELD_TYPES)}")
        fields.append(Field(_str(spec["name"], "field name"), nfc(_str(spec.get("label", spec["name"]), "label")),
                            ftype, _str(spec.get("unit", ""), "unit")))  # fmt: skip
    return Template(
        id=tid, language=language, title=nfc(_str(data["title"], "title")),
        modalities=tuple(m.strip().upper() for m in modalities),
        body_part=_str(data.get("body_part", ""), "body_part").upper(),
        sections={k: nfc(_str(v, f"section {k}")) for k, v in sections.items()}, fields=tuple(fields),
    )  # fmt: skip


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    return value.strip()
