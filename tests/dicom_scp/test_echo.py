"""C-ECHO with dcmtk's echoscu against a real `minipacs serve`."""

from __future__ import annotations

import re

from tests.conftest import Server, dcmtk


def test_echoscu_gets_success(server: Server) -> None:
    result = dcmtk("echoscu", "-v", "-aec", server.aet, "127.0.0.1", server.port)
    assert "Received Echo Response (Success)" in result.stdout + result.stderr
    assert re.search(r"association (w\d+\.)?a\d+ from ECHOSCU@127.0.0.1 accepted", server.log())
