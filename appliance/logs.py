"""Logging setup: the only place that adds handlers (STYLE.md)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str = "INFO", tag: str = "") -> None:
    """Log to stderr (journald picks it up under systemd); `tag` names a worker process."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT.replace("%(name)s", f"[{tag}] %(name)s") if tag else FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that are chatty at INFO about things the operator need not see.
    for name in ("pynetdicom", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
