"""The site key lives in the index: every node (and gunicorn worker) gets the same one, made once."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from archive.db import Database
from archive.site_keys import KEY_BYTES, shared_key
from tests.conftest import both_index_backends as index_backend  # noqa: F401  (SQLite and PostgreSQL)


def test_made_once_and_the_same_for_every_node(index_url: str) -> None:
    nodes = [Database.open(index_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(nodes)) as pool:  # all ask at once: one insert wins, the others read it
            keys = list(pool.map(lambda db: shared_key(db, "http-session"), nodes))
        assert len(set(keys)) == 1 and len(keys[0]) == KEY_BYTES
        assert shared_key(nodes[0], "http-session") == keys[0]
        assert shared_key(nodes[0], "another") not in (keys[0], b"")  # each name its own key
    finally:
        for db in nodes:
            db.dispose()


def test_a_single_boxs_key_file_is_taken_over_once(
    index_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    legacy = tmp_path / "http-session.key"
    legacy.write_bytes(b"k" * 32)
    db = Database.open(index_url)
    try:
        with caplog.at_level(logging.INFO, "archive.site_keys"):
            assert shared_key(db, "http-session", legacy) == b"k" * 32  # sessions made before the upgrade still count
        assert f"taken over from {legacy}" in caplog.text
        legacy.write_bytes(b"z" * 32)
        assert shared_key(db, "http-session", legacy) == b"k" * 32  # the index wins from then on
        short = tmp_path / "short.key"
        short.write_bytes(b"abc")
        assert len(shared_key(db, "other", short)) == KEY_BYTES  # too short to be a key: a new one is made
    finally:
        db.dispose()
