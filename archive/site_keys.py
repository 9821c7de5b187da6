"""Keys every node of a site must share, kept in the index and made once.

The HTTP session key signs browser cookies, IID tokens and patient share
links. Two nodes behind a load balancer must sign and check with the same
key, or a radiologist logged in on node A is logged out when the balancer
sends the next request to node B, and a share link made on A fails on B. A
key file in each node's data directory cannot give that; the index is the
one thing every node reaches, so the key lives there. The first node (or
gunicorn worker) to ask makes it; an insert that loses the race reads the
winner's.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite

from archive.db import Database
from archive.models import SiteSecret

log = logging.getLogger(__name__)

_S = cast(Table, SiteSecret.__table__)  # declarative models type it as a FromClause
KEY_BYTES = 32


def shared_key(db: Database, name: str, legacy_file: Path | None = None) -> bytes:
    """The site's key called `name`, made on first use.

    `legacy_file`: where a single box kept this key before it lived in the
    index; its key is taken over once, so sessions and share links made
    before the upgrade stay valid.
    """
    with db.read() as conn:
        value = conn.execute(select(_S.c.value).where(_S.c.name == name)).scalar()
    if value is not None:
        return bytes(value)
    fresh, origin = _initial(legacy_file)
    insert = (sqlite.insert if db.is_sqlite else postgresql.insert)(_S)
    with db.write() as conn:
        conn.execute(insert.values(name=name, value=fresh, created_at=datetime.now(UTC))
                     .on_conflict_do_nothing(index_elements=[_S.c.name]))  # fmt: skip
    with db.read() as conn:
        value = conn.execute(select(_S.c.value).where(_S.c.name == name)).scalar_one()
    if bytes(value) == fresh:
        log.info("site key %s: %s, kept in the index for every node", name, origin)
    return bytes(value)


def _initial(legacy_file: Path | None) -> tuple[bytes, str]:
    if legacy_file is not None:
        try:
            old = legacy_file.read_bytes()
        except FileNotFoundError:
            pass
        else:
            if len(old) >= 16:
                return old, f"taken over from {legacy_file}"
    return secrets.token_bytes(KEY_BYTES), "made"


__all__ = ["KEY_BYTES", "shared_key"]
