"""Every string of the web UI has its Vietnamese, and the language follows the person's choice."""

from __future__ import annotations

from pathlib import Path

from babel.messages.checkers import python_format
from babel.messages.pofile import read_po

from archive import Archive, Origin
from tests.viewer.i18n_check import CATALOGS, missing, translations, used_strings
from viewer.app import create_app
from viewer.config import WebConfig
from viewer.i18n import load_catalogs

ADMIN = Origin("cli:test", "", "CLI")


def test_every_ui_string_is_translated_to_vietnamese() -> None:
    gaps = missing()
    assert not gaps, "no Vietnamese for (run python -m tests.viewer.i18n_check):\n" + "\n".join(
        f"  {where}: {msgid!r}" for msgid, where in gaps
    )


def test_catalogs_hold_no_strings_the_ui_no_longer_uses() -> None:
    stale = sorted(set(translations()) - set(used_strings()))
    assert not stale, f"translated but used nowhere (delete them): {stale}"


def test_no_string_is_translated_twice_and_placeholders_match() -> None:
    seen: dict[str, str] = {}
    for po in sorted(CATALOGS.glob("*.po")):
        with po.open("rb") as f:
            catalog = read_po(f)
        for message in catalog:
            if not message.id:
                continue
            msgid = message.id[0] if isinstance(message.id, tuple) else message.id
            assert msgid not in seen, f"{msgid!r} is in both {seen[msgid]} and {po.name}"
            seen[msgid] = po.name
            if message.string:
                python_format(catalog, message)  # raises TranslationError on %(name)s mismatches


def test_catalogs_compile() -> None:
    catalogs = load_catalogs()
    assert catalogs["vi"].gettext("Log in") == "Đăng nhập"
    assert "en" not in catalogs  # English is the source language


def test_the_language_follows_the_browser_then_the_cookie_then_the_account(tmp_path: Path, archive: Archive) -> None:
    archive.accounts.add_user("bs.lan", "radiologist", "phong doc phim 2026", ADMIN)
    client = create_app(archive, WebConfig(secret_file=tmp_path / "key")).test_client()
    assert "Đăng nhập" in client.get("/login-page").text  # no preference anywhere: Vietnamese
    assert ">Log in<" in client.get("/login-page", headers={"Accept-Language": "en-US,en;q=0.8"}).text
    switched = client.post("/ui/preferences", data={"language": "en", "next": "/login-page"})
    assert switched.status_code == 303 and switched.headers["Location"] == "/login-page"
    assert ">Log in<" in client.get("/login-page").text  # the cookie
    client.post("/login", json={"username": "bs.lan", "password": "phong doc phim 2026"})
    csrf = client.get("/session").json["csrf_token"]
    client.post("/ui/preferences", data={"language": "vi", "csrf_token": csrf, "next": "/ui/"})
    user = archive.accounts.user("bs.lan")
    assert user is not None and user.ui_language == "vi"
    client.delete_cookie("minipacs_lang")
    page = client.get("/ui/studies", headers={"Accept-Language": "en"})
    assert page.status_code == 200 and "Đăng xuất" in page.text  # the account's choice wins


def test_a_bad_language_is_refused(tmp_path: Path, archive: Archive) -> None:
    client = create_app(archive, WebConfig(secret_file=tmp_path / "key")).test_client()
    answer = client.post("/ui/preferences", data={"language": "fr"})
    assert answer.status_code == 400 and "minipacs_lang" not in answer.headers.get("Set-Cookie", "")
