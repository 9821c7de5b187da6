"""Which UI strings lack a Vietnamese translation (or are translated but no longer used).

``python -m tests.viewer.i18n_check`` prints the missing ones as .po entries
to paste into a ``viewer/translations/vi/LC_MESSAGES/*.po`` file and translate.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = ROOT / "viewer" / "translations" / "vi" / "LC_MESSAGES"
_METHODS = [("**/templates/**.html", "jinja2"), ("**.py", "python")]
_KEYWORDS = {"_": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}


def used_strings() -> dict[str, str]:
    """Every msgid marked in viewer/ (Python and templates) -> where it was first found."""
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        ROOT / "viewer", _METHODS, keywords=_KEYWORDS, options_map={"**/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    ):
        for msgid in message if isinstance(message, tuple) else (message,):
            if msgid:
                found.setdefault(msgid, f"viewer/{filename}:{lineno}")
    return found


def translations() -> dict[str, tuple[str, str]]:
    """msgid -> (Vietnamese text, catalog file) over every vi catalog."""
    out: dict[str, tuple[str, str]] = {}
    for po in sorted(CATALOGS.glob("*.po")):
        with po.open("rb") as f:
            for message in read_po(f):
                if message.id:
                    msgid = message.id[0] if isinstance(message.id, tuple) else message.id
                    text = message.string[0] if isinstance(message.string, tuple) else message.string
                    out[msgid] = (text or "", po.name)
    return out


def missing() -> list[tuple[str, str]]:
    known = translations()
    return [(msgid, where) for msgid, where in sorted(used_strings().items()) if not known.get(msgid, ("", ""))[0]]


def _po_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


if __name__ == "__main__":
    gaps = missing()
    for msgid, where in gaps:
        print(f"#: {where}\nmsgid {_po_string(msgid)}\nmsgstr \"\"\n")
    sys.exit(1 if gaps else 0)
