"""bench/viewer_load.py runs: a tiny study, no throttling, and its figures are sane.

Sizes and counts only; how fast anything is stays the benchmark's business.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.ui.browser import CHROMIUM

sys.path.insert(0, str(ROOT / "bench"))

import viewer_load  # noqa: E402

SLICES = 5


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run tests/setup.sh (apt-get install chromium)")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "viewer_load.py"), "--slices", str(SLICES),
                          "--size", "128", "--no-throttle", "--json", "--timeout", "60"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    parsed: dict[str, Any] = json.loads(run.stdout)
    return parsed


def phase(visit: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in visit["phases"] if p["name"].startswith(name))
    return found


def test_the_conditions_are_stated(result: dict[str, Any]) -> None:
    conditions = result["conditions"]
    assert (conditions["slices"], conditions["rows"], conditions["columns"]) == (SLICES, 128, 128)
    assert conditions["throttle"]["down_kbit"] == 0
    assert conditions["described"] == "not throttled (loopback)"
    # 5 slices of 128x128x2 bytes of pixels and their headers were stored.
    assert SLICES * 128 * 128 * 2 < conditions["stored_bytes"] < SLICES * 128 * 128 * 2 * 2


def test_the_first_image_is_counted_with_everything_it_needed(result: dict[str, Any]) -> None:
    cold = result["cold"]
    first = phase(cold, "first image")
    assert first["ms"] > 0
    assert first["by_kind"]["html"] > 1000  # the page itself
    assert first["by_kind"]["image"] > 100  # at least one image
    assert first["bytes"] == sum(first["by_kind"].values())
    assert first["requests"] >= 2 and first["from_cache"] == 0
    # What the text responses would weigh gzipped: less than as sent (they are sent uncompressed today), not zero.
    text = cold["text_until_first_image"]
    assert 0 < text["gzip"] <= text["sent"] <= first["bytes"] - first["by_kind"]["image"]
    # The viewer marked what it drew (canvas#viewport-0 data-sop/-quality, "mp:image"): the bench measured it,
    # not the fallback (the first <img> of a page without the viewer).
    assert cold["mode"] == "viewer"
    full = phase(cold, "first image, full quality")
    assert full["ms"] >= first["ms"] and full["bytes"] >= first["bytes"]
    # Every slice was drawn while scrolling, and each cost some image bytes.
    assert cold["slices_seen"] == SLICES
    assert cold["image_bytes_per_slice"] > 100
    total = phase(cold, "visit total")
    assert total["bytes"] >= full["bytes"]
    assert cold["images"] and all(g["count"] > 0 and g["median_bytes"] > 0 for g in cold["images"].values())


def test_opening_again_reuses_the_browser_cache(result: dict[str, Any]) -> None:
    cold, warm = phase(result["cold"], "first image"), phase(result["warm"], "first image")
    assert result["warm"]["mode"] == result["cold"]["mode"]
    assert warm["bytes"] < cold["bytes"]
    assert warm["from_cache"] + warm["not_modified"] > 0
    # Scripts and styles come from the cache (or a 304), not again in full.
    assets = ("js", "css")
    assert sum(warm["by_kind"][k] for k in assets) < sum(cold["by_kind"][k] for k in assets)


def test_page_weights(result: dict[str, Any]) -> None:
    login = result["pages"]["/login-page"]
    assert login["status"] == 200
    assert login["by_kind"]["html"] > 0 and login["by_kind"]["css"] > 0 and login["requests"] >= 2
    assert "/ui/studies" in result["pages"]


def test_the_table_says_the_conditions_and_the_figures(result: dict[str, Any]) -> None:
    lines: list[str] = []
    viewer_load.print_table(result, lines.append)
    text = "\n".join(lines)
    assert f"{SLICES} CT slices, 128x128 16-bit" in text
    assert "not throttled" in text
    assert "first image" in text and "/login-page" in text and "/ui/studies" in text
