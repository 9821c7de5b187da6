"""Debian's Chromium, headless, driven by Playwright for Python (never `playwright install`: no downloads here)."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("MINIPACS_CHROMIUM", "/usr/lib/chromium/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", "--disable-quic"]  # fmt: skip
#: Screenshots of each main screen land here (CI keeps them as artifacts); look at them.
ARTIFACTS = Path(os.environ.get("MINIPACS_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts" / "ui"))
