"""archive.registry: the known application entities (C-MOVE destinations, allowed callers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from archive import AERegistry, Archive, InvalidArgument, NotFound, RemoteAE
from archive.registry import check_ae_title, check_host, check_port
from tests.archive.helpers import table_rows


@pytest.fixture
def registry(archive: Archive) -> AERegistry:
    return archive.registry


def test_add_list_get_remove(registry: AERegistry, archive: Archive) -> None:
    ct = registry.add("CT_SIEMENS", "192.168.1.20", 104, "  CT phòng 1 ")
    assert ct == RemoteAE("CT_SIEMENS", "192.168.1.20", 104, "CT phòng 1", None)
    assert ct.can_receive
    registry.add("VIEWER", "viewer.benhvien.local", "11112")
    registry.add("ANY_US")  # may call from anywhere, cannot receive
    assert [ae.ae_title for ae in registry.list()] == ["ANY_US", "CT_SIEMENS", "VIEWER"]
    viewer = registry.get("VIEWER")
    assert viewer is not None and (viewer.host, viewer.port) == ("viewer.benhvien.local", 11112)
    us = registry.get("ANY_US")
    assert us is not None and (us.host, us.port, us.can_receive) == ("", 0, False)
    assert registry.get("NOBODY") is None
    assert registry.get("  CT_SIEMENS  ") == ct  # padding is not significant

    registry.remove("CT_SIEMENS")
    assert registry.get("CT_SIEMENS") is None
    assert [r["ae_title"] for r in table_rows(archive, "application_entity")] == ["VIEWER", "ANY_US"]
    with pytest.raises(NotFound):
        registry.remove("CT_SIEMENS")


def test_titles_are_stored_without_padding_and_kept_case_sensitive(registry: AERegistry) -> None:
    registry.add("  PACS2 ", "10.0.0.2", 104)
    assert registry.get("PACS2") is not None
    assert registry.get("pacs2") is None  # AE titles are case-sensitive


def test_host_only_peer_cannot_receive(registry: AERegistry) -> None:
    ae = registry.add("SENDER", "10.0.0.3")
    assert (ae.port, ae.can_receive) == (0, False)


def test_duplicate_add_is_refused(registry: AERegistry) -> None:
    registry.add("CT1", "10.0.0.1", 104)
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.add("CT1", "10.0.0.9", 105)
    with pytest.raises(InvalidArgument, match="already registered"):
        registry.add(" CT1", "10.0.0.9", 105)
    [ae] = registry.list()
    assert (ae.host, ae.port) == ("10.0.0.1", 104)  # the first registration is untouched


@pytest.mark.parametrize(
    "title",
    ["", "   ", "A" * 17, "BACK\\SLASH", "TAB\tAE", "NEW\nLINE", "CTRL\x01", "VIỆT", "ÄE"],
)
def test_invalid_ae_titles(registry: AERegistry, title: str) -> None:
    with pytest.raises(InvalidArgument):
        check_ae_title(title)
    with pytest.raises(InvalidArgument):
        registry.add(title, "10.0.0.1", 104)
    assert registry.list() == []


@pytest.mark.parametrize("title", ["A", "A" * 16, "CT 1", "MR-2_X.Y", "ANY*TITLE?"])
def test_valid_ae_titles(title: str) -> None:
    assert check_ae_title(title) == title
    assert check_ae_title(f" {title} ") == title


@pytest.mark.parametrize(
    ("host", "normalised"),
    [
        ("192.168.1.20", "192.168.1.20"),
        ("::1", "::1"),
        ("2001:DB8::1", "2001:db8::1"),
        ("localhost", "localhost"),
        ("pacs.benhvien-cangiuoc.vn", "pacs.benhvien-cangiuoc.vn"),
        (" ct01 ", "ct01"),
    ],
)
def test_valid_hosts(host: str, normalised: str) -> None:
    assert check_host(host) == normalised


@pytest.mark.parametrize(
    "host",
    ["-bad.example", "bad-.example", "under_score.example", "a..b", "http://pacs", "pacs:104",
     "a b", "x" * 64 + ".example", "bệnhviện.vn", "10.0.0.1/24"],
)  # fmt: skip
def test_invalid_hosts(registry: AERegistry, host: str) -> None:
    with pytest.raises(InvalidArgument):
        check_host(host)
    with pytest.raises(InvalidArgument):
        registry.add("CT1", host, 104)
    assert registry.list() == []


@pytest.mark.parametrize("port", [1, 104, "11112", 65535])
def test_valid_ports(port: int | str) -> None:
    assert check_port(port) == int(port)


@pytest.mark.parametrize("port", [-1, 65536, 100000, "abc", "10.5", ""])
def test_invalid_ports(registry: AERegistry, port: int | str) -> None:
    with pytest.raises(InvalidArgument):
        check_port(port)
    if port != "":
        with pytest.raises(InvalidArgument):
            registry.add("CT1", "10.0.0.1", port)
    assert registry.list() == []


def test_is_allowed(registry: AERegistry) -> None:
    registry.add("CT1", "10.0.0.1", 104)
    registry.add("LOCAL", "localhost", 104)
    registry.add("ROAMING")
    assert registry.is_allowed("CT1", "10.0.0.1") == (True, "")
    assert registry.is_allowed(" CT1 ", "10.0.0.1") == (True, "")
    allowed, why = registry.is_allowed("CT1", "10.0.0.2")
    assert not allowed and "10.0.0.1" in why and "10.0.0.2" in why
    allowed, why = registry.is_allowed("STRANGER", "10.0.0.1")
    assert not allowed and "not registered" in why
    assert registry.is_allowed("LOCAL", "127.0.0.1") == (True, "")
    assert not registry.is_allowed("LOCAL", "10.0.0.1")[0]
    # Registered without a host: allowed from any address.
    assert registry.is_allowed("ROAMING", "10.9.8.7") == (True, "")
    assert registry.is_allowed("ROAMING", "::1") == (True, "")


def test_last_seen(registry: AERegistry) -> None:
    registry.add("CT1", "10.0.0.1", 104)
    assert registry.get("CT1").last_seen_at is None  # type: ignore[union-attr]
    before = datetime.now(UTC)
    registry.seen(" CT1 ")
    ae = registry.get("CT1")
    assert ae is not None and ae.last_seen_at is not None
    # The column is timezone-aware: the value comes back in UTC, comparable with now().
    assert ae.last_seen_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= ae.last_seen_at <= datetime.now(UTC) + timedelta(seconds=1)
    [listed] = registry.list()
    assert listed.last_seen_at == ae.last_seen_at
    registry.seen("UNKNOWN")  # an unregistered caller changes nothing
    assert [a.ae_title for a in registry.list()] == ["CT1"]
