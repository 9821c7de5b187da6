"""UID syntax checks (PS3.5 section 9.1).

Object keys are built from UIDs, so this check is also what keeps path tricks
(``/``, ``..``, spaces) out of the object store.
"""

from __future__ import annotations

import re

# PS3.5 9.1: components of digits separated by '.', at most 64 characters.
# The standard also forbids a leading zero in a multi-digit component; some
# older modalities break that rule, and refusing their images would lose
# studies, so that one rule is not enforced. Nothing but digits and single dots
# is ever accepted, which is what keeps keys safe.
# fullmatch, not match: '$' also matches before a trailing newline.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")

MAX_UID_LENGTH = 64


def is_valid_uid(value: object) -> bool:
    """True when `value` is a syntactically valid UID string."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_RE.fullmatch(value) is not None
    )


def uid_problem(value: object) -> str | None:
    """Say what is wrong with `value` as a UID, or None when it is valid."""
    if value is None or value == "":
        return "is missing"
    if not isinstance(value, str):
        return "is not a single text value"
    if len(value) > MAX_UID_LENGTH:
        return f"is {len(value)} characters long (at most {MAX_UID_LENGTH})"
    if _UID_RE.fullmatch(value) is None:
        return f"{value!r} is not a valid UID (digits and dots only, PS3.5 9.1)"
    return None
