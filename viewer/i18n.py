"""The web UI in Vietnamese and English: gettext catalogs through Flask-Babel.

Strings in templates and Python are written in English and marked with
``_()``; the files ``viewer/translations/vi/LC_MESSAGES/*.po`` translate
them. The .po files are the source: they are compiled in memory when the app
starts (no generated .mo file in git or in the package). A string without a
Vietnamese translation fails ``tests/viewer/test_i18n.py``;
``python -m tests.viewer.i18n_check`` prints the missing ones as .po entries
to fill in.

The language is, in order: the one this person chose (remembered in their
account), the one chosen on this browser before logging in (a cookie), the
browser's Accept-Language, and Vietnamese.
"""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from flask import Flask, g, request
from flask_babel import Babel, Domain, get_locale, to_user_timezone

#: Languages of the UI, the default first.
LANGUAGES = ("vi", "en")
DEFAULT = "vi"
#: Where a visitor without an account keeps their choice (the login page, a patient's page).
COOKIE = "minipacs_lang"
TRANSLATIONS = Path(__file__).with_name("translations")


def load_catalogs(directory: Path = TRANSLATIONS) -> dict[str, Translations]:
    """Every ``vi/LC_MESSAGES/*.po``, compiled in memory into one catalog.

    The UI's strings are English, so English needs no catalog. Vietnamese is
    split in one file per part of the UI (common.po, studies.po, viewer.po...)
    so that people changing different pages do not edit the same file.
    """
    catalogs: dict[str, Translations] = {}
    for language in LANGUAGES:
        merged: Translations | None = None
        for po in sorted((directory / language / "LC_MESSAGES").glob("*.po")):
            with po.open("rb") as f:
                catalog = read_po(f, locale=language)
            buffer = io.BytesIO()
            write_mo(buffer, catalog)
            buffer.seek(0)
            part = Translations(buffer, domain="messages")
            if merged is None:
                merged = part
            else:
                merged.merge(part)
        if merged is not None:
            catalogs[language] = merged
    return catalogs


class _CatalogDomain(Domain):  # type: ignore[misc]
    """Flask-Babel's domain, reading the catalogs compiled at start instead of .mo files."""

    def __init__(self, catalogs: dict[str, Translations]) -> None:
        super().__init__()
        self._catalogs = catalogs

    def get_translations(self) -> Translations | NullTranslations:
        return self._catalogs.get(str(get_locale() or DEFAULT), NullTranslations())


def language() -> str:
    """The language of this request's page."""
    chosen = getattr(g, "ui_language", "")  # the account's choice, set by viewer/ui for a logged-in person
    if chosen in LANGUAGES:
        return chosen
    cookie = request.cookies.get(COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT


def configure(app: Flask) -> None:
    babel = Babel(app, locale_selector=language, default_locale=DEFAULT, default_timezone="Asia/Ho_Chi_Minh")
    babel.domain_instance = _CatalogDomain(load_catalogs())
    app.jinja_env.filters["local_date"] = local_date
    app.jinja_env.globals["ui_language"] = language


def local_date(value: date | datetime | str | None, with_time: bool = False) -> str:
    """dd/mm/yyyy in Vietnamese, yyyy-mm-dd in English; DICOM DA text (YYYYMMDD) taken as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 8 and text.isdigit():
            value = date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        else:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                return text
    vietnamese = str(get_locale() or DEFAULT) == "vi"
    if isinstance(value, datetime):
        moment = to_user_timezone(value) if value.tzinfo else value
        day = moment.strftime("%d/%m/%Y" if vietnamese else "%Y-%m-%d")
        return f"{day} {moment:%H:%M}" if with_time else day
    return value.strftime("%d/%m/%Y" if vietnamese else "%Y-%m-%d")
