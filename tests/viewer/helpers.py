"""Starting a `minipacs serve` whose HTTP side is ready to answer."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.conftest import Server, Site, free_port, start_server


def http_answers(url: str) -> bool:
    """True once `url` answers 200 (gunicorn accepts connections while its workers still boot)."""
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def start_web_server(data: Path, timeout: float = 60, env: dict[str, str] | None = None,
                     site: Site | None = None) -> tuple[Server, str]:  # fmt: skip
    """`minipacs serve` on `data` (and `site`) with a free HTTP port; returns it and its base URL once /healthz answers."""
    port = free_port()
    server = start_server(data, env={**(env or {}), "MINIPACS_HTTP_PORT": str(port)}, site=site)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not http_answers(f"{url}/healthz"):
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"HTTP never answered:\n{server.log()}")
        time.sleep(0.1)
    return server, url
