"""The one matching engine: DICOM query values to conditions, conditions to SQL.

C-FIND (PS3.4 C.2.2.2), QIDO-RS (PS3.18 8.3.4) and the modality worklist all
match through here, so a rule fixed once is fixed for every edge:

- an empty value (or only ``*``) matches everything (universal matching);
- ``*`` and ``?`` are wildcards, case-sensitive except for person names;
- ``a-b``, ``a-`` and ``-b`` are ranges for DA, TM and DT;
- a backslash-separated list of UIDs (or other values) matches any of them;
- a sequence item matches on the keys it contains (sequence matching);
- person names match ignoring case, diacritics (Đ counts as D), spacing and
  the order of their parts, through stored folded keys and tokens, so the
  search stays an indexed query.

A caller describes its columns with *targets* (one per attribute) and gets
SQLAlchemy clauses back; nothing here knows about levels or tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Select, and_, exists, select, true
from sqlalchemy.sql.elements import KeyedColumnElement

from archive.errors import InvalidQuery
from archive.text import name_key, name_tokens, nfc
from archive.uids import uid_problem

# --- conditions --------------------------------------------------------------


class Condition:
    """What one query key asks of one attribute."""


@dataclass(frozen=True)
class Universal(Condition):
    """Matches everything: the key is only asking for the value back."""


@dataclass(frozen=True)
class Exact(Condition):
    value: str


@dataclass(frozen=True)
class Wildcard(Condition):
    pattern: str


@dataclass(frozen=True)
class Range(Condition):
    """Inclusive bounds, already normalised; '' means open on that side."""

    low: str
    high: str


@dataclass(frozen=True)
class AnyOf(Condition):
    """List of UID matching (and multiple-value matching for other VRs)."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class ItemMatch(Condition):
    """Sequence matching: every condition must hold within one item."""

    item: dict[int, Condition]


UNIVERSAL = Universal()

_DATE_RE = re.compile(r"^\d{8}$")
_TIME_RE = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(?:\.(\d{1,6}))?$")
_DATETIME_RE = re.compile(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$")
_STRING_VRS = {"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT", "PN"}
_INTEGER_VRS = {"IS", "SS", "US", "SL", "UL", "SV", "UV"}
_DECIMAL_VRS = {"DS", "FL", "FD"}
# Longest value a key of each VR may have, counted in characters (PS3.5 6.2).
_MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DA": 18, "DT": 54, "LO": 64, "PN": 324,
              "SH": 16, "TM": 28, "UI": 64 * 100}  # fmt: skip


def condition_for(element: DataElement) -> Condition:
    """Turn one element of a query identifier into a condition.

    Raises InvalidQuery for values the standard does not allow (a malformed
    date, a wildcard in a UID, ...), so bad queries fail instead of matching
    nothing.
    """
    vr = element.VR
    if vr == "SQ":
        items = element.value or []
        if not items or len(items[0]) == 0:
            return UNIVERSAL
        return ItemMatch({int(e.tag): condition_for(e) for e in items[0]})
    value = _as_text(element)
    return parse_value(vr, value, keyword=element.keyword or str(element.tag))


def parse_value(vr: str, value: str, keyword: str = "value") -> Condition:
    """Parse a query value of the given VR (see the module docstring for the rules)."""
    value = nfc(value).strip()
    if value == "" or set(value) == {"*"}:
        return UNIVERSAL
    limit = _MAX_CHARS.get(vr)
    if limit is not None and len(value) > limit:
        raise InvalidQuery(f"{keyword}: value is {len(value)} characters, at most {limit} allowed")
    if vr == "UI":
        values = tuple(v.strip() for v in value.split("\\"))
        for v in values:
            problem = uid_problem(v)
            if problem:
                raise InvalidQuery(f"{keyword}: {problem}")
        return Exact(values[0]) if len(values) == 1 else AnyOf(values)
    if vr == "DA":
        return _date_condition(value, keyword)
    if vr == "TM":
        return _time_condition(value, keyword)
    if vr == "DT":
        return _datetime_condition(value, keyword)
    if vr in _INTEGER_VRS or vr in _DECIMAL_VRS:
        values = tuple(v.strip() for v in value.split("\\"))
        for v in values:
            try:
                int(v) if vr in _INTEGER_VRS else float(v)
            except ValueError:
                raise InvalidQuery(f"{keyword}: {v!r} is not a number") from None
        return Exact(values[0]) if len(values) == 1 else AnyOf(values)
    if vr == "PN":
        return Wildcard(value) if _has_wildcard(value) else Exact(value)
    if vr in _STRING_VRS:
        if "\\" in value:
            return AnyOf(tuple(v for v in value.split("\\") if v))
        return Wildcard(value) if _has_wildcard(value) else Exact(value)
    raise InvalidQuery(f"{keyword}: matching on VR {vr} is not supported")


def _as_text(element: DataElement) -> str:
    value = element.value
    if value is None:
        return ""
    if isinstance(value, bytes):
        raise InvalidQuery(f"{element.keyword or element.tag}: binary values cannot be matched")
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _date_condition(value: str, keyword: str) -> Condition:
    if "-" in value:
        low, _, high = value.partition("-")
        for part in (low, high):
            if part and not is_date(part):
                raise InvalidQuery(f"{keyword}: {value!r} is not a date range (YYYYMMDD-YYYYMMDD)")
        if not low and not high:
            return UNIVERSAL
        return Range(low, high)
    if not is_date(value):
        raise InvalidQuery(f"{keyword}: {value!r} is not a date (YYYYMMDD)")
    return Exact(value)


def is_date(value: str) -> bool:
    """YYYYMMDD naming a day that exists: 20261320 would silently match nothing."""
    if not _DATE_RE.fullmatch(value):
        return False
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return False
    return True


def _time_bounds(value: str, keyword: str) -> tuple[str, str]:
    """The first and last instant a (possibly partial) TM value stands for."""
    match = _TIME_RE.fullmatch(value)
    # PS3.5 6.2 TM: HH 00-23, MM 00-59, SS 00-60 (60 for a leap second).
    if not match or int(match[1]) > 23 or int(match[2] or 0) > 59 or int(match[3] or 0) > 60:
        raise InvalidQuery(f"{keyword}: {value!r} is not a time (HHMMSS.FFFFFF)")
    hh, mm, ss, frac = match.groups()
    low = f"{hh}{mm or '00'}{ss or '00'}.{(frac or '').ljust(6, '0')}"
    high = f"{hh}{mm or '59'}{ss or '59'}.{(frac or '').ljust(6, '9')}"
    return low, high


def _time_condition(value: str, keyword: str) -> Condition:
    if "-" in value:
        low, _, high = value.partition("-")
        if not low and not high:
            return UNIVERSAL
        return Range(
            _time_bounds(low, keyword)[0] if low else "",
            _time_bounds(high, keyword)[1] if high else "",
        )
    low, high = _time_bounds(value, keyword)
    return Range(low, high)


def _datetime_condition(value: str, keyword: str) -> Condition:
    # A '-' can also start a UTC offset; a range has a bare '-' between two
    # values, so split on the '-' that is not followed by exactly 4 digits at the end.
    parts = re.split(r"-(?!\d{4}$)", value, maxsplit=1)
    if len(parts) == 2:
        low, high = parts
        for part in (low, high):
            if part and not _DATETIME_RE.match(part):
                raise InvalidQuery(f"{keyword}: {value!r} is not a date-time range")
        return Range(low, high.ljust(14, "9") if high else "")
    if not _DATETIME_RE.match(value):
        raise InvalidQuery(f"{keyword}: {value!r} is not a date-time")
    return Exact(value)


# --- targets -----------------------------------------------------------------


Column = KeyedColumnElement[Any]


class Target(Protocol):
    """How one attribute is matched in SQL."""

    def clause(self, condition: Condition) -> ColumnElement[bool]: ...


def like_pattern(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern with '\\' as the escape."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def wildcard_clause(column: Column, pattern: str) -> ColumnElement[bool]:
    """Match `pattern`; a pure prefix (``ABC*``) becomes an index-friendly range."""
    stripped = pattern.rstrip("*")
    if stripped and not _has_wildcard(stripped):
        return and_(column >= stripped, column < _successor(stripped))
    return column.like(like_pattern(pattern), escape="\\")


def _successor(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class TextTarget:
    """Case-sensitive text (LO, SH, CS, AE...) in one column."""

    column: Column

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if isinstance(condition, Exact):
            return self.column == condition.value
        if isinstance(condition, Wildcard):
            return wildcard_clause(self.column, condition.pattern)
        if isinstance(condition, AnyOf):
            return self.column.in_(condition.values)
        return _unsupported(condition)


@dataclass(frozen=True)
class UidTarget:
    column: Column

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if isinstance(condition, Exact):
            return self.column == condition.value
        if isinstance(condition, AnyOf):
            return self.column.in_(condition.values)
        return _unsupported(condition)


@dataclass(frozen=True)
class RangeTarget:
    """DA, TM (stored as HHMMSS.ffffff) and DT columns: exact values and ranges."""

    column: Column

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if isinstance(condition, Exact):
            return self.column == condition.value
        if isinstance(condition, Range):
            parts = [self.column != ""]
            if condition.low:
                parts.append(self.column >= condition.low)
            if condition.high:
                parts.append(self.column <= condition.high)
            return and_(*parts)
        return _unsupported(condition)


@dataclass(frozen=True)
class IntegerTarget:
    column: Column

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if isinstance(condition, Exact):
            return self.column == _integer(condition.value)
        if isinstance(condition, AnyOf):
            return self.column.in_([_integer(v) for v in condition.values])
        return _unsupported(condition)


def _integer(value: str) -> int:
    """A query value for an integer column; the key may have come with another VR than IS."""
    try:
        number = int(float(value))
    except (ValueError, OverflowError):
        raise InvalidQuery(f"{value!r} is not a number") from None
    # The index stores 64-bit integers; SQLite refuses to bind anything larger.
    if not -(2**63) <= number < 2**63:
        raise InvalidQuery(f"{value!r} is out of range")
    return number


@dataclass(frozen=True)
class PersonNameTarget:
    """PN matching through a folded, order-free key and a table of folded words.

    Without wildcards the query's sorted folded words must equal the stored
    key: ``NGUYEN VAN AN`` finds ``Nguyễn^Văn An`` and nothing longer. With
    wildcards each query word must match a different word of the name, in
    any order: ``nguy*`` finds every Nguyễn, ``NGUYEN^V*`` every Nguyễn with
    another word starting with V, and ``NGUYEN^N*`` not Nguyễn Công Tuấn
    (the N* must be a second word, not Nguyễn again).
    """

    key_column: Column
    owner_column: Column
    token_owner: Column
    token_kind: Column
    token_value: Column
    kind: int

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if isinstance(condition, Exact):
            key = name_key(condition.value)
            return self.key_column == key if key else true()
        if isinstance(condition, Wildcard):
            words = [w for w in name_tokens(condition.pattern) if set(w) != {"*"}]
            if not words:
                return true()
            # Exact words first: they are the most selective start for the join.
            words.sort(key=_has_wildcard)
            return self.owner_column.in_(self._owners(words[:_MAX_NAME_WORDS]))
        return _unsupported(condition)

    def _owners(self, words: list[str]) -> Select[Any]:
        """Owners with a distinct name word for each query word (one alias per word).

        A name's words are stored once each, so different token values mean
        different words.
        """
        table = self.token_value.table
        aliases = [table.alias(f"name_word_{i}") for i in range(len(words))]
        owner, kind, token = self.token_owner.key, self.token_kind.key, self.token_value.key
        first = aliases[0]
        stmt = select(first.c[owner]).where(first.c[kind] == self.kind, _word(first.c[token], words[0]))
        for i, alias in enumerate(aliases[1:], start=1):
            stmt = stmt.join(alias, and_(
                alias.c[owner] == first.c[owner],
                alias.c[kind] == self.kind,
                _word(alias.c[token], words[i]),
                *(alias.c[token] != earlier.c[token] for earlier in aliases[:i]),
            ))  # fmt: skip
        return stmt


# Words beyond this in one name query are ignored for matching (names have 2-5).
_MAX_NAME_WORDS = 6


def _word(column: Column, word: str) -> ColumnElement[bool]:
    return wildcard_clause(column, word) if _has_wildcard(word) else column == word


@dataclass(frozen=True)
class ExistsTarget:
    """An attribute held in a child table (ModalitiesInStudy, Other Patient IDs, ...)."""

    link: ColumnElement[bool]
    inner: Target

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        return exists().where(self.link, self.inner.clause(condition))


@dataclass(frozen=True)
class OwnerInTarget:
    """An attribute held in a child table, for a key that is asked alone (a CCCD or BHYT number).

    The same matches as ExistsTarget, as ``owner IN (SELECT child.owner FROM child
    WHERE ...)``: SQLite runs a correlated EXISTS once per row of the outer query, so
    a lookup by the child's value read every study; this finds the few owners through
    the child's index first (PostgreSQL plans both forms alike).
    """

    owner: Column
    child_owner: Column
    inner: Target

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        return self.owner.in_(select(self.child_owner).where(self.inner.clause(condition)))


@dataclass(frozen=True)
class SequenceTarget:
    """Sequence matching against a child table with one row per item."""

    link: ColumnElement[bool]
    items: dict[int, Target]

    def clause(self, condition: Condition) -> ColumnElement[bool]:
        if not isinstance(condition, ItemMatch):
            return _unsupported(condition)
        parts = [
            self.items[tag].clause(cond)
            for tag, cond in condition.item.items()
            if tag in self.items and not isinstance(cond, Universal)
        ]
        if not parts:
            return true()
        return exists().where(self.link, *parts)


def _unsupported(condition: Condition) -> ColumnElement[bool]:
    raise InvalidQuery(f"this attribute does not support {type(condition).__name__.lower()} matching")


def where(targets: dict[int, Target], conditions: dict[int, Condition]) -> list[ColumnElement[bool]]:
    """The SQL clauses for `conditions` on the attributes `targets` knows.

    Keys without a target are return keys only: optional matching keys an SCP
    may decline to match on (PS3.4 C.2.2.1.2).
    """
    return [
        targets[tag].clause(cond)
        for tag, cond in conditions.items()
        if tag in targets and not isinstance(cond, Universal)
    ]


__all__ = [
    "UNIVERSAL", "AnyOf", "Condition", "Exact", "ExistsTarget", "IntegerTarget", "ItemMatch", "OwnerInTarget",
    "PersonNameTarget", "Range", "RangeTarget", "SequenceTarget", "Target", "TextTarget",
    "UidTarget", "Universal", "Wildcard", "condition_for", "is_date", "like_pattern", "parse_value",
    "where", "wildcard_clause",
]  # fmt: skip

