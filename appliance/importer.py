"""`minipacs import`: files, folders (recursively) and DICOMDIR media into the archive."""

from __future__ import annotations

import logging
import os
import stat
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
    #: Files not looked at because the import was interrupted (Ctrl+C).
    not_done: int = 0

    @property
    def interrupted(self) -> bool:
        return self.not_done > 0

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
            lines.append(f"  ... and {len(self.rejected) - limit} more rejected "
                         "(run again with --log-level DEBUG to list every one)")  # fmt: skip
        for path in self.skipped[:limit]:
            lines.append(f"  skipped {path}: not a DICOM file")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more non-DICOM files "
                         "(run again with --log-level DEBUG to list every one)")  # fmt: skip
        if self.interrupted:
            lines.append(f"interrupted: {self.not_done} files not imported yet; run the same "
                         "import again to finish (what is stored now is skipped)")  # fmt: skip
        return lines


def collect(paths: Iterable[Path], exclude: Iterable[Path] = ()) -> list[Path]:
    """Every file named, found below a folder, or referenced by a DICOMDIR; each once.

    Folders in `exclude` (the archive's own data directory) are not walked into:
    importing them would re-read every stored object.
    """
    seen: set[Path] = set()
    found: list[Path] = []
    for path in _expand(paths, {folder.resolve() for folder in exclude}):
        resolved = path.resolve()
        if resolved not in seen:
            seen.add(resolved)
            found.append(path)
    return found


def _expand(paths: Iterable[Path], exclude: set[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                if Path(root).resolve() in exclude:
                    log.info("not importing %s: it is the archive's own data directory", Path(root))
                    dirs.clear()
                    continue
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
            yield _on_media(path.parent, [str(part) for part in parts])


def _on_media(root: Path, parts: list[str]) -> Path:
    """The file a Referenced File ID names, as the media shows up on this machine.

    File IDs are upper case (PS3.10 8.5), but Linux mounts ISO 9660 CDs in lower
    case by default and some burners add ISO version suffixes (``IM000001;1``).
    The exact path wins; otherwise each component is matched ignoring case and
    the suffix. When nothing matches, the exact path is returned (and reported
    as missing).
    """
    exact = root.joinpath(*parts)
    if exact.exists():
        return exact
    current = root
    for part in parts:
        wanted = part.upper()
        try:
            names = sorted(os.listdir(current))
        except OSError:
            return exact
        match = next((n for n in names if n.upper().split(";")[0].rstrip(".") == wanted), None)
        if match is None:
            return exact
        current = current / match
    return current


def looks_like_dicom(path: Path) -> bool:
    """Part 10 files have 'DICM' at offset 128; bare datasets start with group 0002 or 0008."""
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00")


def import_paths(
    archive: Archive, paths: Iterable[Path], progress: bool = True, exclude: Iterable[Path] = ()
) -> ImportSummary:
    """Import everything under `paths`; per-file problems are counted, never fatal.

    Ctrl+C stops the import and returns what was done (`summary.interrupted`); the
    file in progress then counts as not imported (each file is stored whole or not at all).
    """
    files = collect(paths, exclude)
    summary = ImportSummary()
    bar = tqdm(files, unit="file", disable=not progress, dynamic_ncols=True, desc="Importing")
    done = 0
    try:
        for path in bar:
            _import_one(archive, path, summary)
            done += 1
            bar.set_postfix(stored=summary.counts["stored"], rejected=len(summary.rejected), refresh=False)
    except KeyboardInterrupt:
        summary.not_done = len(files) - done
        log.warning("import interrupted: %d of %d files not imported", summary.not_done, len(files))
    finally:
        bar.close()
    return summary


def _import_one(archive: Archive, path: Path, summary: ImportSummary) -> None:
    if path.name.upper() == "DICOMDIR":
        return  # the media's index: its files were collected, it is no image itself
    try:
        # A FIFO or a device below the folder would block or never end (`import /`).
        if not stat.S_ISREG(os.stat(path).st_mode) or not looks_like_dicom(path):
            log.debug("skipped %s: not a DICOM file", path)
            summary.skipped.append(path)
            return
        with open(path, "rb") as stream:
            result = archive.ingest(stream, Origin("import", via="IMPORT"))
    except ArchiveError as exc:
        log.debug("rejected %s: %s", path, exc.message)
        summary.rejected.append((path, exc.message))
        return
    except OSError as exc:
        log.debug("rejected %s: cannot read the file: %s", path, exc)
        summary.rejected.append((path, f"cannot read the file: {exc.strerror or exc}"))
        return
    summary.counts[_OUTCOME[result.status]] += 1
