"""`minipacs fsck`: every object the index names is there with the SHA-256 it was stored with, and nothing else is.

Three findings: *missing* (a row whose object is gone), *corrupt* (an
object whose bytes no longer hash to the recorded SHA-256, or whose size
differs) and *orphan* (an object no row points at, e.g. left by a crash
between the object write and the index commit). With ``repair`` the corrupt
and orphan objects are moved under ``quarantine/`` in the same store, keeping
their key below it, and the move is audited; nothing is ever deleted. A corrupt
instance then answers "not found" instead of serving damaged pixels, and the
IT person can restore it from a backup or re-send it from the modality.

Other owners of objects (a report's signed PDF) say what they store through
`ReferenceSource` functions, so archive/ imports none of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

from sqlalchemy import Connection, Table, select

from archive.audit import AuditLog
from archive.db import Database
from archive.models import DuplicateConflict, Instance
from archive.origin import Origin
from storage.base import ObjectStore, StorageError

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"
_CHUNK = 1 << 20
_INSTANCE = cast(Table, Instance.__table__)
_CONFLICT = cast(Table, DuplicateConflict.__table__)


@dataclass(frozen=True)
class Reference:
    """An object the index expects: its key, SHA-256 (hex) and size (None: not recorded)."""

    key: str
    sha256: str
    size: int | None
    what: str  # for the report: "instance 1.2.3", "report PDF CT001 v1"


#: Lists the objects one part of the system keeps in the store.
ReferenceSource = Callable[[Connection], Iterable[Reference]]


def instance_references(conn: Connection) -> Iterator[Reference]:
    for row in conn.execute(select(_INSTANCE.c.storage_key, _INSTANCE.c.sha256, _INSTANCE.c.size_bytes,
                                   _INSTANCE.c.sop_instance_uid).order_by(_INSTANCE.c.pk)):  # fmt: skip
        yield Reference(row.storage_key, row.sha256, int(row.size_bytes), f"instance {row.sop_instance_uid}")
    for row in conn.execute(select(_CONFLICT.c.storage_key, _CONFLICT.c.sha256, _CONFLICT.c.size_bytes,
                                   _CONFLICT.c.sop_instance_uid).order_by(_CONFLICT.c.pk)):  # fmt: skip
        yield Reference(row.storage_key, row.sha256, int(row.size_bytes),
                        f"duplicate copy of {row.sop_instance_uid}")  # fmt: skip


@dataclass(frozen=True)
class Finding:
    kind: str  # "missing", "corrupt", "orphan"
    key: str
    what: str
    detail: str = ""
    quarantined: bool = False


@dataclass
class FsckReport:
    checked: int = 0
    checked_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def fsck(db: Database, objects: ObjectStore, audit: AuditLog, *, sources: Iterable[ReferenceSource] = (),
         repair: bool = False, origin: Origin | None = None,
         progress: Callable[[int], None] | None = None) -> FsckReport:  # fmt: skip
    """Check every referenced object, then look for orphans; `progress` gets the bytes of each object read.

    Objects under ``quarantine/`` are neither checked nor reported again. The
    archive may be in use: an image stored or deleted while the objects are
    read (hours on a large archive) is neither an orphan nor missing, so the
    index is read again before those are reported.
    """
    report = FsckReport()
    expected: set[str] = set()
    with db.read() as conn:
        references = [r for source in (instance_references, *sources) for r in source(conn)]
    gone: list[tuple[Reference, str]] = []
    for ref in references:
        expected.add(ref.key)
        problem = _check(objects, ref, progress)
        report.checked += 1
        report.checked_bytes += ref.size or 0
        if problem is None:
            continue
        kind, detail = problem
        if kind == "missing":
            gone.append((ref, detail))
            continue
        moved = repair and _quarantine(objects, ref.key)
        report.findings.append(Finding(kind, ref.key, ref.what, detail, moved))
    unknown = [key for key in objects.keys() if key not in expected and not key.startswith(f"{QUARANTINE}/")]
    if gone or unknown:  # keys are never reused: a key the index names now was stored, one it lost was deleted
        with db.read() as conn:
            now = {r.key for source in (instance_references, *sources) for r in source(conn)}
        report.findings += [Finding("missing", ref.key, ref.what, detail) for ref, detail in gone if ref.key in now]
        for key in unknown:
            if key not in now:
                moved = repair and _quarantine(objects, key)
                report.findings.append(Finding("orphan", key, "no index row points at it", "", moved))
    who = origin or Origin("fsck", "", "CLI")
    for finding in report.findings:
        log.warning("fsck: %s %s (%s)%s%s", finding.kind, finding.key, finding.what,
                    f": {finding.detail}" if finding.detail else "",
                    f"; moved to {QUARANTINE}/{finding.key}" if finding.quarantined else "")  # fmt: skip
        if finding.quarantined:
            audit.record(who, "QUARANTINE", "OBJECT", finding.key, "done", f"{finding.kind}: {finding.what}")
    audit.record(who, "FSCK", "", "", "clean" if report.clean else "problems",
                 f"{report.checked} checked, {report.count('missing')} missing, {report.count('corrupt')} corrupt, "
                 f"{report.count('orphan')} orphans{', repaired' if repair else ''}")  # fmt: skip
    return report


def _check(objects: ObjectStore, ref: Reference, progress: Callable[[int], None] | None) -> tuple[str, str] | None:
    digest = hashlib.sha256()
    size = 0
    try:
        with objects.open(ref.key) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if progress:
                    progress(len(chunk))
    except FileNotFoundError:
        return "missing", "the object is gone"
    except (OSError, StorageError) as exc:
        return "missing", f"cannot be read: {exc}"
    if ref.size is not None and size != ref.size:
        return "corrupt", f"{size} bytes, the index recorded {ref.size}"
    if ref.sha256 and digest.hexdigest() != ref.sha256:
        return "corrupt", f"SHA-256 {digest.hexdigest()[:16]}…, the index recorded {ref.sha256[:16]}…"
    return None


def _quarantine(objects: ObjectStore, key: str) -> bool:
    """Copy `key` to quarantine/<key>, then remove the original; False (and logged) when that fails."""
    target = f"{QUARANTINE}/{key}"
    try:
        if not objects.exists(target):
            with objects.open(key) as f:
                objects.put(target, f)
        objects.delete(key)
    except (OSError, StorageError) as exc:
        log.error("fsck: could not move %s to quarantine: %s", key, exc)
        return False
    return True
