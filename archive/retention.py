"""Retention: delete the images of studies older than the hospital keeps them, never those on legal hold.

Rules (setting ``retention.rules``) give a keeping time per modality, e.g.
``"CR:10y, DX:10y, CT:15y, US:5y, *:15y"``; without rules nothing is ever
deleted. A study's age is counted from its Study Date (from when it arrived
if it has none); a study of several modalities is kept as long as the
longest of their rules. Retention deletes the images (instances, series and
the stored objects) but keeps the study, its order, its report and PDF and
the audit trail: the record says the images existed and when they were
deleted. Every deletion is audited; `plan` says what would go without
changing anything (`minipacs retention --dry-run`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import cast

from sqlalchemy import Table, delete, select, update

from archive.audit import AuditLog
from archive.db import Database
from archive.errors import InvalidArgument
from archive.models import Instance, Series, SeriesRequest, Study
from archive.origin import Origin
from storage.base import ObjectStore, StorageError

log = logging.getLogger(__name__)

_S = cast(Table, Study.__table__)
_SE = cast(Table, Series.__table__)
_SR = cast(Table, SeriesRequest.__table__)
_I = cast(Table, Instance.__table__)
_RULE = re.compile(r"^\s*([A-Z]{1,16}|\*)\s*:\s*(\d{1,5})\s*([yd]?)\s*$", re.I)


@dataclass(frozen=True)
class Rule:
    modality: str  # "*" for every modality without a rule of its own
    days: int


def parse_rules(text: str) -> list[Rule]:
    """``"CT:15y, US:1825d, *:20y"`` -> rules (y = 365 days); "" -> none (keep forever)."""
    rules: list[Rule] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = _RULE.match(part)
        if not match:
            raise InvalidArgument(f"retention rule {part!r}: write MODALITY:YEARSy or MODALITY:DAYSd, e.g. CT:15y")
        modality, number, unit = match.group(1).upper(), int(match.group(2)), (match.group(3) or "y").lower()
        days = number * 365 if unit == "y" else number
        if days < 365:
            raise InvalidArgument(f"retention rule {part!r}: less than a year; medical images are kept for years")
        if any(r.modality == modality for r in rules):
            raise InvalidArgument(f"retention rules name {modality} twice")
        rules.append(Rule(modality, days))
    return rules


def keep_days(rules: Iterable[Rule], modalities: str) -> int | None:
    """How long a study of these modalities (backslash-joined) is kept; None: forever (no rule applies)."""
    by_modality = {r.modality: r.days for r in rules}
    kept: list[int] = []
    for modality in filter(None, modalities.split("\\")):
        days = by_modality.get(modality.upper(), by_modality.get("*"))
        if days is None:
            return None  # a modality nobody made a rule for: keep
        kept.append(days)
    if not kept:
        return by_modality.get("*")
    return max(kept)


@dataclass(frozen=True)
class Expired:
    study_instance_uid: str
    accession_number: str
    study_date: str
    modalities: str
    instances: int
    size_bytes: int


def _age_date(study_date: str, created_at: datetime) -> date:
    if len(study_date) == 8 and study_date.isdigit():
        try:
            return date(int(study_date[:4]), int(study_date[4:6]), int(study_date[6:]))
        except ValueError:
            pass
    return created_at.date()


def plan(db: Database, rules: list[Rule], now: datetime | None = None) -> tuple[list[Expired], int]:
    """Studies whose images are due for deletion, oldest first, and how many due ones are on legal hold."""
    if not rules:
        return [], 0
    today = (now or datetime.now(UTC)).date()
    due: list[Expired] = []
    held = 0
    stmt = (select(_S.c.study_instance_uid, _S.c.accession_number, _S.c.study_date, _S.c.modalities_in_study,
                   _S.c.num_instances, _S.c.size_bytes, _S.c.created_at, _S.c.legal_hold)
            .where(_S.c.images_deleted_at.is_(None), _S.c.num_instances > 0))  # fmt: skip
    with db.read() as conn:
        for row in conn.execute(stmt):
            days = keep_days(rules, row.modalities_in_study)
            if days is None or _age_date(row.study_date, row.created_at) + timedelta(days=days) > today:
                continue
            if row.legal_hold:
                held += 1
                continue
            due.append(Expired(row.study_instance_uid, row.accession_number, row.study_date, row.modalities_in_study,
                               int(row.num_instances), int(row.size_bytes)))  # fmt: skip
    due.sort(key=lambda e: (e.study_date, e.study_instance_uid))
    return due, held


def delete_images(db: Database, objects: ObjectStore, audit: AuditLog, expired: Expired, origin: Origin) -> int:
    """Delete one study's images: index rows in one transaction, then the objects; returns instances deleted.

    The study must still be unheld and due: a hold placed since the plan wins.
    An object that cannot be removed stays as an orphan for `minipacs fsck`.
    """
    now = datetime.now(UTC)
    with db.write() as conn:
        study = conn.execute(select(_S.c.pk, _S.c.legal_hold).where(
            _S.c.study_instance_uid == expired.study_instance_uid)).first()  # fmt: skip
        if study is None or study.legal_hold:
            return 0
        series = select(_SE.c.pk).where(_SE.c.study_pk == study.pk)
        found: Iterable[object] = conn.execute(select(_I.c.storage_key).where(_I.c.series_pk.in_(series))).scalars()
        keys = [str(key) for key in found]
        conn.execute(delete(_I).where(_I.c.series_pk.in_(series)))
        conn.execute(delete(_SR).where(_SR.c.series_pk.in_(series)))
        conn.execute(delete(_SE).where(_SE.c.study_pk == study.pk))
        conn.execute(update(_S).where(_S.c.pk == study.pk).values(num_series=0, num_instances=0, size_bytes=0,
                                                                  images_deleted_at=now, updated_at=now))  # fmt: skip
    audit.record(origin, "RETENTION_DELETE", "STUDY", expired.study_instance_uid, "done",
                 f"{len(keys)} images, {expired.size_bytes} bytes, study date {expired.study_date}, "
                 f"{expired.modalities}")  # fmt: skip
    for key in keys:
        try:
            objects.delete(key)
        except (OSError, StorageError) as exc:
            log.warning("retention: could not remove %s (%s); `minipacs fsck` lists it as an orphan", key, exc)
    log.info("retention: deleted %d images of study %s (%s)", len(keys), expired.study_instance_uid, expired.study_date)
    return len(keys)


def set_hold(db: Database, audit: AuditLog, study_instance_uid: str, hold: bool, reason: str, origin: Origin) -> None:
    """Put a study on legal hold (with a reason) or release it; audited."""
    if hold and not reason.strip():
        raise InvalidArgument("say why the study is held (--reason), e.g. a complaint or a court case number")
    with db.write() as conn:
        done = conn.execute(update(_S).where(_S.c.study_instance_uid == study_instance_uid)
                            .values(legal_hold=hold, hold_reason=reason.strip() if hold else ""))  # fmt: skip
    if done.rowcount == 0:
        from archive.errors import NotFound

        raise NotFound(f"no study {study_instance_uid}")
    audit.record(origin, "LEGAL_HOLD" if hold else "LEGAL_HOLD_RELEASE", "STUDY", study_instance_uid, "done", reason)
