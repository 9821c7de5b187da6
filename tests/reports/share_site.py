"""A running `minipacs serve` with sample studies and users, for the share-link and IID tests.

Three studies of three patients: the sample CT (20 images), the sample DX,
and a DX copy whose patient is named ``<script>alert(1)</script>`` (escaping).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.uid import generate_uid

from archive import Archive, Origin
from archive.site_keys import shared_key
from reports.share import ShareLinks, derive_key
from tests.conftest import CT_FILES, DX_FILE, Server
from tests.dicom_scp.helpers import stop_and_check
from tests.viewer.helpers import start_web_server

PASSWORD = "phong doc phim 2026"
ROLES = ("admin", "radiologist", "technologist", "referrer")
ADMIN = Origin("cli:test", "", "CLI")
CT = dcmread(CT_FILES[0], stop_before_pixels=True)
DX = dcmread(DX_FILE, stop_before_pixels=True)
XSS_NAME = "<script>alert(1)</script>"


@dataclass
class Site:
    data: Path
    server: Server
    url: str
    tokens: dict[str, str]
    xss_study: str
    xss_sop: str
    extra_env: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str | None) -> dict[str, object]:
        """requests keyword arguments that log in as `who` (a user, or a token's name)."""
        if who is None:
            return {}
        if who in self.tokens:
            return {"headers": {"Authorization": f"Bearer {self.tokens[who]}"}}
        return {"auth": (who, PASSWORD)}

    def request(self, method: str, path: str, as_: str | None = "technologist", **kwargs: object) -> requests.Response:
        credentials = self.auth(as_)
        headers: dict[str, str] = {**credentials.pop("headers", {}), **kwargs.pop("headers", {})}  # type: ignore[dict-item]
        return requests.request(method, f"{self.url}{path}", timeout=30, headers=headers, allow_redirects=False,
                                **credentials, **kwargs)  # type: ignore[arg-type]

    def links(self, archive: Archive, **options: object) -> ShareLinks:
        """A ShareLinks over the server's database and with its key: what another node would build."""
        return ShareLinks(archive.db, archive.audit, self.key(archive), **options)  # type: ignore[arg-type]

    @staticmethod
    def key(archive: Archive) -> bytes:
        """The share links' (and IID tokens') key: derived from the site key every node reads from the index."""
        return derive_key(shared_key(archive.db, "http-session"))

    def restart(self) -> None:
        stop_and_check(self.server)
        self.server, self.url = start_web_server(self.data, env=self.extra_env)


def prepare(data: Path) -> tuple[dict[str, str], str, str]:
    """Store the studies and make the users; returns the tokens and the hostile study's UIDs."""
    data.mkdir(parents=True, exist_ok=True)
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        for path in (*CT_FILES, DX_FILE):
            with open(path, "rb") as f:
                archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
        hostile = dcmread(DX_FILE)
        hostile.PatientName = XSS_NAME
        hostile.PatientID = "XSS<b>1</b>"
        hostile.StudyDescription = '<img src=x onerror="alert(2)">'
        hostile.StudyInstanceUID, hostile.SeriesInstanceUID = generate_uid(), generate_uid()
        hostile.SOPInstanceUID = hostile.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        hostile.AccessionNumber = "XSS0001"
        buffer = io.BytesIO()
        hostile.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        archive.ingest(buffer, Origin("IMPORT", "", "IMPORT"))
        for role in ROLES:
            archive.accounts.add_user(role, role, PASSWORD, ADMIN)
        tokens = {"emr": archive.accounts.create_token("emr", ADMIN).secret,
                  "his": archive.accounts.create_token("his", ADMIN, role="his").secret}  # fmt: skip
        return tokens, str(hostile.StudyInstanceUID), str(hostile.SOPInstanceUID)
    finally:
        archive.close()


def start_site(data: Path, env: dict[str, str] | None = None) -> Site:
    tokens, xss_study, xss_sop = prepare(data)
    server, url = start_web_server(data, env=env)
    return Site(data, server, url, tokens, xss_study, xss_sop, dict(env or {}))


def link_path(url: str) -> str:
    """The path of a share link URL (the server names itself as the request reached it)."""
    match = re.match(r"^https?://[^/]+(/s/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$", url)
    assert match, url
    return match.group(1)


def image_paths(html: str) -> list[str]:
    """The image URLs of a page (as the browser would fetch them)."""
    return [src.replace("&amp;", "&") for src in re.findall(r'<img[^>]* src="([^"]+)"', html)]
