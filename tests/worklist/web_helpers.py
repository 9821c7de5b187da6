"""A running `minipacs serve` with the accounts the order, FHIR and worklist tests call as."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from archive import Archive, Origin
from tests.conftest import Server
from tests.viewer.helpers import start_web_server

PASSWORD = "phong chup CT 2026"
ADMIN = Origin("cli:test", "", "CLI")
PEOPLE = ("admin", "radiologist", "technologist", "referrer")
#: Token name -> role.
TOKENS = {"his-vn": "his", "emr": "emr", "his-2": "his"}


@dataclass
class Site:
    server: Server
    url: str
    tokens: dict[str, str]

    def call(self, method: str, path: str, as_: str | None = "his-vn", **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        auth = None
        if as_ in self.tokens:
            headers["Authorization"] = f"Bearer {self.tokens[as_]}"
        elif as_ is not None:
            auth = (as_, PASSWORD)
        return requests.request(method, f"{self.url}{path}", headers=headers, auth=auth, timeout=30, **kwargs)

    def archive(self) -> Archive:
        return self.server.archive()


def prepare(data: Path) -> dict[str, str]:
    """Users for each role and the tokens of TOKENS, made through the archive's accounts API."""
    data.mkdir(parents=True, exist_ok=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        for role in PEOPLE:
            archive.accounts.add_user(role, role, PASSWORD, ADMIN)
        return {name: archive.accounts.create_token(name, ADMIN, role=role).secret for name, role in TOKENS.items()}
    finally:
        archive.close()


def start_site(data: Path, env: dict[str, str] | None = None) -> Site:
    tokens = prepare(data)
    server, url = start_web_server(data, env=env)
    return Site(server, url, tokens)


def assert_json_error(answer: requests.Response, status: int, *words: str) -> str:
    """The project's JSON error body, with `status` and a message naming `words`."""
    assert answer.status_code == status, f"{answer.status_code}: {answer.text[:500]}"
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers["Content-Type"]
    body = answer.json()
    assert body["status"] == status and isinstance(body["message"], str), body
    assert "Traceback" not in answer.text
    for word in words:
        assert word in body["message"], body["message"]
    message: str = body["message"]
    return message
