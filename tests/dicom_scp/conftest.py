"""Fixtures for the DIMSE end-to-end tests: servers shared by the tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom import dcmread

from tests.conftest import ALL_SAMPLES, Server, start_server
from tests.dicom_scp.helpers import stop_and_check, storescu, storescu_config, storescu_results


@pytest.fixture(scope="module")
def samples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `minipacs serve` per test module with the CT, DX and US sample studies,
    sent by storescu in their own transfer syntaxes. Tests may register AEs in it but
    must not store or delete instances."""
    tmp = tmp_path_factory.mktemp("samples")
    server = start_server(tmp / "data")
    try:
        pairs = [(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                 for ds in (dcmread(p, stop_before_pixels=True) for p in ALL_SAMPLES)]  # fmt: skip
        result = storescu(server, *ALL_SAMPLES, args=storescu_config(tmp, pairs))
        results = storescu_results(result.stdout + result.stderr)
        assert results == {str(p): "Success" for p in ALL_SAMPLES}, result.stdout + result.stderr
        yield server
    finally:
        stop_and_check(server)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One empty `minipacs serve` shared by the tests of a module."""
    server = start_server(tmp_path_factory.mktemp("module") / "data")
    try:
        yield server
    finally:
        stop_and_check(server)
