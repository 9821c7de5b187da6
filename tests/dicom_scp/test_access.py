"""Who may associate: registered-only calling AEs (dicom.calling_ae = "registered")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification

from tests.conftest import CT_FILES, Server, dcmtk, start_server
from tests.dicom_scp.helpers import (
    HOST,
    assert_stored_as_received,
    index_counts,
    register_ae,
    stop_and_check,
    storescu,
    storescu_results,
)


@pytest.fixture(scope="module")
def registered_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("access") / "data"
    # start_server knows the server is up when it answers a C-ECHO from PYTEST.
    register_ae(data, "PYTEST")
    server = start_server(data, env={"MINIPACS_DICOM_CALLING_AE": "registered"})
    try:
        register_ae(server, "MODALITY", HOST, cli=True)  # from this host only
        register_ae(server, "ANYWHERE")  # from any address
        register_ae(server, "ELSEWHERE", "10.20.30.40")  # from another host
        yield server
    finally:
        stop_and_check(server)


def _associate(server: Server, calling: str) -> tuple[bool, tuple[int, int, int] | None]:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate(HOST, server.port, [build_context(Verification)], ae_title=server.aet)
    if assoc.is_established:
        assoc.release()
        return True, None
    assert assoc.is_rejected, "neither accepted nor rejected"
    rj = assoc.acceptor.primitive
    return False, (rj.result, rj.result_source, rj.diagnostic)


@pytest.mark.parametrize("calling, accepted", [
    ("MODALITY", True),
    ("ANYWHERE", True),
    ("STRANGER", False),
    ("ELSEWHERE", False),   # registered, but for another host
    ("modality", False),    # AE titles are case-sensitive
])  # fmt: skip
def test_registered_only_accepts_registered_callers_from_their_host(registered_only: Server, calling: str,
                                                                   accepted: bool) -> None:  # fmt: skip
    ok, reason = _associate(registered_only, calling)
    assert ok is accepted
    if not accepted:
        # Rejected permanent, by the service user: calling AE title not recognised.
        assert reason == (0x01, 0x01, 0x03)
        assert f"from {calling}@127.0.0.1 to MINIPACS rejected" in registered_only.log()


def test_unknown_storescu_is_rejected_and_stores_nothing(registered_only: Server, tmp_path: Path) -> None:
    before = index_counts(registered_only)
    result = storescu(registered_only, CT_FILES[0], aet="STRANGER", args=["-R", "-xe"], check=False)
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr, result.stdout + result.stderr
    assert index_counts(registered_only) == before

    result = storescu(registered_only, CT_FILES[0], aet="MODALITY", args=["-R", "-xe"])
    assert storescu_results(result.stdout + result.stderr) == {str(CT_FILES[0]): "Success"}
    assert_stored_as_received(registered_only, CT_FILES[0])


def test_many_rejections_do_not_use_up_the_association_limit(registered_only: Server) -> None:
    """A rejected association must end: 50 rejections (more than dicom.max_associations)
    and a registered caller is still accepted."""
    for _ in range(50):
        ok, _reason = _associate(registered_only, "STRANGER")
        assert not ok
    assert _associate(registered_only, "MODALITY") == (True, None)
    result = dcmtk("echoscu", "-aet", "ANYWHERE", "-aec", registered_only.aet, HOST, registered_only.port)
    assert result.returncode == 0


def test_echoscu_unknown_ae_is_rejected(registered_only: Server) -> None:
    result = dcmtk("echoscu", "-v", "-aet", "NOTLISTED", "-aec", registered_only.aet, HOST,
                   registered_only.port, check=False)  # fmt: skip
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr


def test_called_ae_title_check(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"MINIPACS_DICOM_CHECK_CALLED_AE": "true"})
    try:
        wrong = dcmtk("echoscu", "-v", "-aec", "SOMEONE_ELSE", HOST, server.port, check=False)
        assert wrong.returncode != 0 and "Called AE Title Not Recognized" in wrong.stdout + wrong.stderr
        right = dcmtk("echoscu", "-aec", server.aet, HOST, server.port)
        assert right.returncode == 0
    finally:
        stop_and_check(server)
