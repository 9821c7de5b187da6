"""`minipacs demo`'s accounts: someone trying minipacs can log in to the web screens at once.

Made only in a data directory without any user, with one random password
that is printed and kept in ``<data>/demo-password.txt`` (readable by its
owner only). They are for trying minipacs, not for a hospital: the banner says
to disable them (`minipacs user disable`) before real use.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from archive import Archive, Origin

#: (user name, role, display name)
DEMO_USERS = (("admin", "admin", "Quản trị (demo)"), ("bs.demo", "radiologist", "BS. Demo"),
              ("ktv.demo", "technologist", "KTV Demo"))  # fmt: skip
PASSWORD_FILE = "demo-password.txt"


def ensure_demo_users(archive: Archive, data_dir: Path) -> str | None:
    """The demo password: made now (with the users) when there are no users, read back later; None when
    the site has users of its own."""
    saved = data_dir / PASSWORD_FILE
    if archive.accounts.count_users():
        return saved.read_text(encoding="utf-8").strip() if saved.is_file() else None
    password = "demo-" + "-".join(secrets.choice(_WORDS) for _ in range(3))
    for name, role, display in DEMO_USERS:
        archive.accounts.add_user(name, role, password, Origin("demo", "", "CLI"), display_name=display)
    saved.write_text(password + "\n", encoding="utf-8")
    saved.chmod(0o600)
    return password


# Short words that are easy to type from a printed screen.
_WORDS = ("mai", "lan", "cuc", "truc", "song", "nui", "may", "gio", "trang", "sao", "bien", "dong", "tay", "nam",
          "bac", "hoa", "la", "cay", "suoi", "mua")  # fmt: skip
