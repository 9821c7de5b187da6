"""Plain-text tables and times for the `minipacs` commands' listings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def print_table(empty: str, columns: Sequence[tuple[str, int]], rows: Sequence[Sequence[str]]) -> None:
    """Left-aligned columns two spaces apart (width 0: the last one, unpadded); `empty` when no rows."""
    if not rows:
        print(empty)
        return
    for cells in [tuple(name for name, _ in columns), *rows]:
        print("  ".join(f"{cell:<{width}}" for cell, (_, width) in zip(cells, columns)).rstrip())


def local_time(moment: datetime) -> str:
    """The index keeps UTC (SQLite hands it back without a zone); show the machine's time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
