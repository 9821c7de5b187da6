"""User accounts and API tokens on a real SQLite index, with the real Argon2 hasher."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from archive import Archive, InvalidArgument, NotFound, Origin
from archive.accounts import Accounts
from tests.archive.helpers import table_rows
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)

ADMIN = Origin("cli:root", "", "CLI")


def audit_actions(archive: Archive) -> list[tuple[str, str, str, str]]:
    archive.audit.flush()
    return [(r["actor"], r["action"], r["uid"], r["detail"]) for r in table_rows(archive, "audit_event")]


def test_a_user_logs_in_with_the_right_password_only(archive: Archive) -> None:
    accounts = archive.accounts
    user = accounts.add_user("BS.Lan", "radiologist", "phim số không còn", ADMIN, display_name="BS. Trần Thị Lan")
    assert (user.username, user.role, user.display_name, user.disabled) == (
        "bs.lan", "radiologist", "BS. Trần Thị Lan", False)
    assert accounts.authenticate("bs.lan", "phim số không còn") == user
    assert accounts.authenticate("  BS.LAN ", "phim số không còn") == user  # names are case-insensitive
    assert accounts.authenticate("bs.lan", "phim so khong con") is None  # passwords are not
    assert accounts.authenticate("nobody", "phim số không còn") is None
    assert accounts.authenticate("bs.lan", "") is None
    [row] = table_rows(archive, "user_account")
    assert row["password_hash"].startswith("$argon2id$") and "phim" not in row["password_hash"]
    assert audit_actions(archive) == [("cli:root", "USER_ADD", "bs.lan", "role radiologist")]


def test_disabled_users_cannot_log_in_until_enabled_and_new_passwords_replace_old(archive: Archive) -> None:
    accounts = archive.accounts
    accounts.add_user("ktv01", "technologist", "first password", ADMIN)
    accounts.set_disabled("ktv01", True, ADMIN)
    assert accounts.authenticate("ktv01", "first password") is None
    accounts.set_disabled("ktv01", False, ADMIN)
    assert accounts.authenticate("ktv01", "first password") is not None
    accounts.set_password("ktv01", "second password", ADMIN)
    assert accounts.authenticate("ktv01", "first password") is None
    assert accounts.authenticate("ktv01", "second password") is not None
    assert [a[1] for a in audit_actions(archive)] == ["USER_ADD", "USER_DISABLE", "USER_ENABLE", "USER_PASSWORD"]


@pytest.mark.parametrize(
    ("username", "role", "password", "message"),
    [
        ("bad name", "radiologist", "long enough", "user name 'bad name' is not valid"),
        ("../etc", "radiologist", "long enough", "is not valid"),
        ("", "radiologist", "long enough", "is not valid"),
        ("x" * 65, "radiologist", "long enough", "is not valid"),
        ("lan", "superuser", "long enough", "role 'superuser' is not one of: admin, radiologist"),
        ("lan", "emr", "long enough", "role 'emr' is not one of"),  # a system role, for tokens
        ("lan", "radiologist", "short", "too short: at least 8"),
        ("lan", "radiologist", "x" * 1025, "too long"),
        ("lannguyen", "radiologist", "LanNguyen", "must not be the user name"),
    ],
)
def test_bad_user_values_are_refused_and_change_nothing(
    archive: Archive, username: str, role: str, password: str, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(".", r"\.")):
        archive.accounts.add_user(username, role, password, ADMIN)
    assert table_rows(archive, "user_account") == []
    assert audit_actions(archive) == []


def test_user_names_are_unique_and_unknown_users_are_not_found(archive: Archive) -> None:
    archive.accounts.add_user("admin", "admin", "correct horse", ADMIN)
    with pytest.raises(InvalidArgument, match="user admin already exists"):
        archive.accounts.add_user("ADMIN", "radiologist", "another one", ADMIN)
    with pytest.raises(NotFound, match="there is no user ghost"):
        archive.accounts.set_password("ghost", "whatever123", ADMIN)
    with pytest.raises(NotFound):
        archive.accounts.set_disabled("ghost", True, ADMIN)
    assert [u.username for u in archive.accounts.users()] == ["admin"]
    assert archive.accounts.count_users() == 1


def test_weaker_hashes_are_upgraded_at_the_next_login(archive: Archive) -> None:
    weak = Accounts(archive.db, archive.audit, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    weak.add_user("old", "referrer", "an old password", ADMIN)
    before = table_rows(archive, "user_account")[0]["password_hash"]
    assert "m=8," in before
    assert archive.accounts.authenticate("old", "an old password") is not None
    after = table_rows(archive, "user_account")[0]["password_hash"]
    assert after != before and "m=65536," in after
    assert archive.accounts.authenticate("old", "an old password") is not None


def test_a_token_works_until_revoked_and_is_stored_only_as_a_hash(archive: Archive) -> None:
    accounts = archive.accounts
    new = accounts.create_token("his-emr", ADMIN)
    assert new.secret.startswith("mpt_") and len(new.secret) == 47
    assert (new.token.name, new.token.role, new.token.active) == ("his-emr", "emr", True)
    assert new.secret[:12] == new.token.prefix
    [row] = table_rows(archive, "api_token")
    assert new.secret not in str(row) and row["token_sha256"] != new.secret
    used = accounts.verify_token(new.secret)
    assert used is not None and used.name == "his-emr" and used.role == "emr"
    assert accounts.tokens()[0].last_used_at is not None
    assert accounts.verify_token(new.secret[:-1] + ("A" if new.secret[-1] != "A" else "B")) is None
    assert accounts.verify_token("") is None
    assert accounts.verify_token("Bearer " + new.secret) is None
    accounts.revoke_token("his-emr", ADMIN)
    assert accounts.verify_token(new.secret) is None
    assert not accounts.tokens()[0].active
    accounts.revoke_token("his-emr", ADMIN)  # again: nothing to do, no second audit row
    assert [a[1:3] for a in audit_actions(archive)] == [("TOKEN_CREATE", "his-emr"), ("TOKEN_REVOKE", "his-emr")]


def test_bad_token_requests_are_refused(archive: Archive) -> None:
    accounts = archive.accounts
    accounts.create_token("pacs-script", ADMIN, role="technologist")
    with pytest.raises(InvalidArgument, match="a token named pacs-script already exists"):
        accounts.create_token("pacs-script", ADMIN)
    with pytest.raises(InvalidArgument, match="token name 'two words' is not valid"):
        accounts.create_token("two words", ADMIN)
    with pytest.raises(InvalidArgument, match="role 'root' is not one of: emr, his, admin"):
        accounts.create_token("x", ADMIN, role="root")
    with pytest.raises(NotFound, match="there is no token named ghost"):
        accounts.revoke_token("ghost", ADMIN)
    assert [t.name for t in accounts.tokens()] == ["pacs-script"]
