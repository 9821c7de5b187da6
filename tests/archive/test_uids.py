"""archive.uids: UID syntax (PS3.5 9.1), which also keeps path tricks out of object keys."""

from __future__ import annotations

import pytest

from archive.uids import MAX_UID_LENGTH, is_valid_uid, uid_problem

VALID = [
    "1",
    "0",
    "1.2.840.10008.1.2.1",
    "2.25.261358411426359307150392651447306092329",
    "1." + "2" * 62,  # exactly 64 characters
    # A leading zero in a component breaks PS3.5 9.1, but older modalities send
    # it; refusing would lose their images, so it is accepted on purpose.
    "1.2.840.0113654.2.70.1",
    "1.02.3",
]

INVALID = [
    "",
    "1.2/3",
    "../1.2.3",
    "1.2..3",
    "1.2.3.",
    ".1.2.3",
    "1.2. 3",
    " 1.2.3",
    "1.2.3 ",
    "1.2.abc",
    "1.2.3a",
    "1.2.3\\1.2.4",
    "1.2.3/../../etc/passwd",
    "1." + "2" * 63,  # 65 characters
    "１.２",  # full-width digits are not ASCII digits
    "1.2.3\n",
]


@pytest.mark.parametrize("value", VALID)
def test_valid(value: str) -> None:
    assert len(value) <= MAX_UID_LENGTH
    assert is_valid_uid(value)
    assert uid_problem(value) is None


@pytest.mark.parametrize("value", INVALID)
def test_invalid(value: str) -> None:
    assert not is_valid_uid(value)
    assert uid_problem(value) is not None


def test_problem_messages_say_what_is_wrong() -> None:
    assert uid_problem(None) == "is missing"
    assert uid_problem("") == "is missing"
    assert uid_problem(["1.2", "1.3"]) == "is not a single text value"
    assert uid_problem("1." + "2" * 63) == "is 65 characters long (at most 64)"
    problem = uid_problem("1.2/3")
    assert problem is not None and "'1.2/3'" in problem and "digits and dots" in problem


@pytest.mark.parametrize("value", [None, 123, b"1.2.3", ["1.2.3"]])
def test_non_strings_are_invalid(value: object) -> None:
    assert not is_valid_uid(value)
    assert uid_problem(value) is not None
