"""Logging setup: the only place that adds handlers (STYLE.md)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line (log.format = "json"), for Loki, Elasticsearch or journald's JSON fields.

    Written here rather than taken from a library: it is these fifteen lines,
    and the keys are ours to keep stable.
    """

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}  # fmt: skip
        if self.tag:
            entry["process"] = self.tag
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", tag: str = "", fmt: str = "text") -> None:
    """Log to stderr (journald picks it up under systemd); `tag` names a worker process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        handler.setFormatter(logging.Formatter(FORMAT.replace("%(name)s", f"[{tag}] %(name)s") if tag else FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are chatty at INFO about things the operator need not see.
    for name in ("pynetdicom", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
