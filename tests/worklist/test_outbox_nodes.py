"""Two nodes, one outbox: only the node holding the database lease sends, and the other takes over.

Runs on both index backends: PostgreSQL (several nodes; an advisory lock) and
SQLite (several processes of one box; an flock beside the database).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from archive import Archive
from tests.pg import PostgresServer
from tests.worklist.helpers import HIS, TECH, MllpPeer, order
from worklist.outbox import OutboxSender
from worklist.service import Worklist
from worklist.status_updates import StatusUpdates
from worklist.types import StepStatus


@pytest.fixture(params=["sqlite", "postgresql"])
def index_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def peer() -> Iterator[MllpPeer]:
    p = MllpPeer()
    yield p
    p.close()


def until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_one_node_sends_each_message_once_and_another_takes_over(archive: Archive, peer: MllpPeer) -> None:
    wl = Worklist(archive)
    wl.status_listeners.append(StatusUpdates(sender="MINIPACS").on_status)
    nodes = [OutboxSender(archive.db, {"his": ("127.0.0.1", peer.port)}, poll_seconds=0.05,
                          read_timeout=2, connect_timeout=2) for _ in range(2)]  # fmt: skip
    for node in nodes:
        node.start()
    try:
        for n in range(6):
            wl.create(order(f"O{n}", f"ACC{n:03d}", patient_id=f"PID{n}"), HIS)
            wl.set_status(f"ACC{n:03d}", StepStatus.IN_PROGRESS, TECH)
        until(lambda: len(peer.received) >= 6)
        time.sleep(0.5)  # time for a second delivery, if there were one
        assert len(peer.received) == 6
        assert sorted(m.count(b"ORM^O01") for m in peer.received) == [1] * 6
        leaders = [node for node in nodes if node.lease.held()]
        assert len(leaders) == 1  # the other cannot take the lease while the leader lives
        leader = leaders[0]
        leader.stop()  # the node goes away: its lease with it
        wl.set_status("ACC000", StepStatus.COMPLETED, TECH)
        until(lambda: len(peer.received) >= 7)
        time.sleep(0.5)
        assert len(peer.received) == 7 and b"|CM" in peer.received[-1]
        assert [node for node in nodes if node is not leader][0].lease.held()
    finally:
        for node in nodes:
            node.stop()


def test_a_node_that_loses_the_database_loses_the_lease(tmp_path: Path, postgres: PostgresServer) -> None:
    """PostgreSQL only: a SQLite lease is a file lock, with no database session to lose."""
    url = postgres.create_database()
    archive = Archive.open(url, str(tmp_path / "objects"))
    first, second = (OutboxSender(archive.db, {}) for _ in range(2))
    try:
        assert first.lease.held() and not second.lease.held()
        with archive.db.engine.connect() as conn:  # the server ends the leader's session (a network cut, a failover)
            ended = conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"))
            assert [row[0] for row in ended] == [True]
        until(lambda: second.lease.held())
        assert not first.lease.held()
    finally:
        first.lease.release()
        second.lease.release()
        archive.close()
        postgres.drop_database(url)
