"""What the URLs of the DICOMweb resources carry, and where they live."""

from __future__ import annotations

from flask import request

from archive import InvalidQuery
from archive.uids import uid_problem


def path_uid(value: str, what: str) -> str:
    """A UID from the URL, or 400 saying what is wrong with it (never a path to anything)."""
    problem = uid_problem(value)
    if problem:
        raise InvalidQuery(f"the {what} UID in the URL {problem}")
    return value


def base_url() -> str:
    """Our DICOMweb root as the client reached it.

    Some clients (dicomweb-client among them) send a Host header without the
    port; the port the request came in on then completes it.
    """
    host = request.host
    port = str(request.environ.get("SERVER_PORT", ""))
    if not host.endswith("]") and ":" not in host and port not in ("", "80", "443"):
        host = f"{host}:{port}"
    return f"{request.scheme}://{host}{request.script_root}/dicomweb"
