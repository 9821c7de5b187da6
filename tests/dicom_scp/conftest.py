"""Fixtures for the DIMSE end-to-end tests: servers shared by the tests of a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom import dcmread

from tests.conftest import ALL_SAMPLES, Server, site_on, start_server
from tests.dicom_scp.helpers import stop_and_check, storescu, storescu_config, storescu_results


@pytest.fixture(scope="module")
def samples_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   site_backend: str) -> Iterator[Server]:  # fmt: skip
    """One `minipacs serve` per test module (and site backend) with the CT, DX and US sample
    studies, sent by storescu in their own transfer syntaxes. Tests may register AEs in it
    but must not store or delete instances."""
    tmp = tmp_path_factory.mktemp("samples")
    with site_on(request, site_backend, tmp / "data") as site:
        server = start_server(tmp / "data", site=site)
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
def module_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  site_backend: str) -> Iterator[Server]:  # fmt: skip
    """One empty `minipacs serve` shared by the tests of a module (and site backend)."""
    data = tmp_path_factory.mktemp("module") / "data"
    with site_on(request, site_backend, data) as site:
        server = start_server(data, site=site)
        try:
            yield server
        finally:
            stop_and_check(server)
