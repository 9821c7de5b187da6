"""`minipacs import`: files, folders (recursively) and DICOMDIR media into the archive."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from tqdm import tqdm

from archive import Archive, ArchiveError, Origin, StoreStatus

log = logging.getLogger(__name__)

_OUTCOME = {
    StoreStatus.STORED: "stored",
    StoreStatus.ALREADY_STORED: "already stored",
    StoreStatus.CONFLICT: "conflict",
}


@dataclass
class ImportSummary:
    counts: Counter[str] = field(default_factory=Counter)
    #: (path, reason) of every refused file.
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    #: Files that are not DICOM at all.
    skipped: list[Path] = field(default_factory=list)

    @property
    def stored(self) -> int:
        return self.counts["stored"]

    def lines(self, limit: int = 20) -> list[str]:
        """A human summary: totals first, then what went wrong and why."""
        c = self.counts
        lines = [
            f"{c['stored']} stored, {c['already stored']} already stored, "
            f"{c['conflict']} conflicting resends kept aside, {len(self.rejected)} rejected, "
            f"{len(self.skipped)} non-DICOM files skipped"
        ]
        for path, reason in self.rejected[:limit]:
            lines.append(f"  rejected {path}: {reason}")
        if len(self.rejected) > limit:
            lines.append(f"  ... and {len(self.rejected) - limit} more rejected (see the log)")
        for path in self.skipped[:limit]:
            lines.append(f"  skipped {path}: not a DICOM file")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more non-DICOM files")
        return lines


def collect(paths: Iterable[Path]) -> list[Path]:
    """Every file named, found below a folder, or referenced by a DICOMDIR; each once."""
    seen: set[Path] = set()
    found: list[Path] = []
    for path in _expand(paths):
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            found.append(path)
    return found


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name
        elif path.is_file():
            yield path
            if path.name.upper() == "DICOMDIR":
                yield from _dicomdir_files(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")


def _dicomdir_files(path: Path) -> Iterator[Path]:
    """The files a DICOMDIR references (PS3.10 8.6), relative to its folder."""
    try:
        ds = dcmread(path)
    except Exception as exc:
        log.warning("cannot read DICOMDIR %s: %s", path, exc)
        return
    for record in ds.get("DirectoryRecordSequence") or []:
        file_id = record.get("ReferencedFileID")
        if file_id:
            parts = [file_id] if isinstance(file_id, str) else list(file_id)
            yield path.parent.joinpath(*parts)


def looks_like_dicom(path: Path) -> bool:
    """Part 10 files have 'DICM' at offset 128; bare datasets start with group 0002 or 0008."""
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00")


def import_paths(
    archive: Archive, paths: Iterable[Path], progress: bool = True
) -> ImportSummary:
    """Import everything under `paths`; per-file problems are counted, never fatal."""
    files = collect(paths)
    summary = ImportSummary()
    origin = Origin("import", via="IMPORT")
    bar = tqdm(files, unit="file", disable=not progress, dynamic_ncols=True, desc="Importing")
    for path in bar:
        if path.name.upper() == "DICOMDIR":
            continue  # the media's index: its files were collected, it is no image itself
        try:
            if not looks_like_dicom(path):
                summary.skipped.append(path)
                continue
            with open(path, "rb") as stream:
                result = archive.ingest(stream, origin)
        except ArchiveError as exc:
            summary.rejected.append((path, exc.message))
            log.debug("rejected %s: %s", path, exc.message)
            continue
        except OSError as exc:
            summary.rejected.append((path, f"cannot read the file: {exc.strerror or exc}"))
            continue
        summary.counts[_OUTCOME[result.status]] += 1
        bar.set_postfix(stored=summary.counts["stored"], rejected=len(summary.rejected), refresh=False)
    return summary
