"""The study viewer over a slow link: bytes and time to a CT's first image, in a real browser.

Makes a synthetic head CT (sample_dicom's phantom, 512x512 16-bit, 1 mm
slices, realistic CT headers; 200 slices by default) into a throw-away
`minipacs serve`, logs a radiologist in through the login form in Debian's
Chromium (Playwright), throttles the page with the DevTools protocol
(Network.emulateNetworkConditions: 2 Mbit/s down, 1 Mbit/s up, 80 ms by
default) and opens /studies/<uid> with an empty browser cache. It counts every
response's bytes on the wire (Network.loadingFinished encodedDataLength:
headers + body as received) by type, and prints:

- the first image drawn (low quality if the viewer sends one first): time from
  navigation start, bytes and requests until then;
- the first image at full quality;
- scrolling through every slice with the mouse wheel (one notch, wait until the
  slice is drawn, next notch): time, bytes per slice;
- opening the study again in the same browser (warm cache: ETag, Cache-Control,
  immutable assets);
- the page weight of /login-page and /ui/studies, unthrottled.

The viewer tells when it drew: its canvas ``canvas#viewport-0`` gets
``data-sop``, ``data-frame`` and ``data-quality="low"|"full"`` and window
receives a CustomEvent "mp:image". A page without that canvas (the simple
study page the viewer replaces) counts its first <img> loaded instead, and
the full-quality and scroll figures are skipped.

    .venv/bin/python bench/viewer_load.py                  # 200 slices at 2 Mbit/s (~1.5 min)
    .venv/bin/python bench/viewer_load.py --low-bandwidth  # the user's setting on: previews, full on request
    .venv/bin/python bench/viewer_load.py --slices 20 --no-throttle --json --requests

The server first answers another patient's small study a few times (its
workers have served pages and images before, as on a server that has been
running; --cold-server skips that), but its render cache holds nothing of the
measured study: the first visit includes rendering each of its images, as the
first radiologist to open a new study sees.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import io
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from common import ROOT
from servers import Server, start_minipacs, wait_http

sys.path.insert(0, str(ROOT))

from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, sync_playwright  # noqa: E402

from archive import Archive, Origin  # noqa: E402
from sample_dicom import generate  # noqa: E402
from tests.ui.browser import ARGS, CHROMIUM  # noqa: E402

USER, PASSWORD = "bs.bench", "bench viewer load 2026"
ADMIN = Origin("bench", "", "CLI")
KINDS = ("html", "js", "css", "json", "image", "other")
SLICE_MM = 1.0
#: How long the network must stay quiet before a phase counts as finished.
QUIET_S = 1.5

#: Runs in every page before its own scripts: notes each image drawn, with its time since navigation start.
WATCH_DRAWS = """
(() => {
  const draws = window.__mpDraws = [];
  const now = () => ({t: performance.now(), wall: performance.timeOrigin + performance.now()});
  const viewport = (e) => {
    const c = document.getElementById("viewport-0");
    if (!c || !c.dataset.sop) return;
    const d = (e && e.detail && !e.detail.viewport) ? e.detail : {};
    const last = draws.filter((x) => x.kind === "viewer").pop();
    const item = {kind: "viewer", sop: c.dataset.sop, frame: c.dataset.frame || "",
                  quality: c.dataset.quality || "", index: d.index || 0, count: d.count || 0, ...now()};
    if (last && last.sop === item.sop && last.frame === item.frame && last.quality === item.quality) return;
    draws.push(item);
  };
  window.addEventListener("mp:image", viewport);
  new MutationObserver(() => viewport(null)).observe(document, {
    subtree: true, attributes: true, attributeFilter: ["data-sop", "data-frame", "data-quality"]});
  document.addEventListener("load", (e) => {
    const el = e.target;
    if (el instanceof HTMLImageElement && el.naturalWidth > 0)
      draws.push({kind: "img", sop: "", frame: "", quality: "thumbnail", src: el.currentSrc, ...now()});
  }, true);
})();
"""


# --- the study ------------------------------------------------------------------------------


def make_study(archive: Archive, slices: int, size: int, key: str = "bench-viewer-load",
               other_patient: bool = False) -> str:  # fmt: skip
    """`slices` contiguous 1 mm axial slices of sample_dicom's head phantom, ingested; returns the study UID.

    `other_patient`: of another patient than sample_dicom's CT (so it is no prior study of the measured one)."""
    rng = np.random.default_rng(20261206)
    key = f"{key}-{slices}-{size}"
    study_uid = generate.uid(key, "study")
    for i in range(slices):
        pixels = generate.ct_head_slice(i / max(slices - 1, 1), rng)
        ds = generate.ct_dataset(i, pixels)
        if size != generate.CT_SIZE:
            step = generate.CT_SIZE // size
            ds.Rows = ds.Columns = size
            ds.PixelData = np.ascontiguousarray(pixels[::step, ::step][:size, :size]).tobytes()
            ds.PixelSpacing = [generate.ds_str(generate.CT_SPACING * step)] * 2
        z = generate.CT_Z0 + i * SLICE_MM
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = generate.uid(key, "series")
        ds.SOPInstanceUID = generate.uid(key, f"image{i + 1}")
        ds.FrameOfReferenceUID = generate.uid(key, "frame-of-reference")
        ds.AccessionNumber = "CT2612060200"
        ds.StudyDescription = "CT sọ não 1 mm (benchmark)"
        ds.SeriesDescription = "Sọ não 1mm H30s"
        ds.SliceThickness = ds.SpacingBetweenSlices = generate.ds_str(SLICE_MM)
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], generate.ds_str(z)]
        ds.SliceLocation = generate.ds_str(z)
        if other_patient:
            ds.PatientName, ds.PatientID, ds.AccessionNumber = "Hoàng^Văn Khởi", "BN26009999", "CT2612060001"
            del ds.OtherPatientIDsSequence
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        buffer.seek(0)
        archive.ingest(buffer, Origin("CT_ROOM1", "", "IMPORT"))
    return study_uid


@contextmanager
def serve(folder: Path, slices: int, size: int, low_bandwidth: bool) -> Iterator[tuple[str, str, str, int]]:
    """A `minipacs serve` holding the study, a small study of another patient to warm the server up,
    and a radiologist: (base URL, study UID, warm-up study UID, the study's stored bytes)."""
    data = folder / "data"
    data.mkdir()
    archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
    try:
        archive.accounts.add_user(USER, "radiologist", PASSWORD, ADMIN, display_name="BS. Benchmark")
        if low_bandwidth:
            archive.accounts.set_preferences(USER, low_bandwidth=True)
        started = time.perf_counter()
        study_uid = make_study(archive, slices, size)
        print(f"made and stored {slices} CT slices in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        stored = sum(p.stat().st_size for p in (data / "objects").rglob("*") if p.is_file())
        warm_up_uid = make_study(archive, 3, size, "bench-viewer-warm-up", other_patient=True)
    finally:
        archive.close()
    server: Server = start_minipacs(data, log_level="WARNING", log_dir=folder)
    try:
        url = f"http://127.0.0.1:{server.http_port}"
        wait_http(url)
        yield url, study_uid, warm_up_uid, stored
    finally:
        code = server.stop()
        if code != 0 or "Traceback" in server.log():
            print(f"minipacs serve exited with {code}; its log:\n{server.log()[-4000:]}", file=sys.stderr)


# --- what the browser received --------------------------------------------------------------


@dataclass
class Fetch:
    url: str
    sent: float  # wall-clock seconds
    resource: str = ""
    mime: str = ""
    status: int = 0
    size: int = 0
    done: float | None = None
    cached: bool = False
    encoding: str = ""  # Content-Encoding as sent
    request_id: str = ""

    @property
    def kind(self) -> str:
        mime, resource = self.mime.lower(), self.resource
        if "html" in mime or resource == "Document":
            return "html"
        if "javascript" in mime or resource == "Script":
            return "js"
        if "css" in mime or resource == "Stylesheet":
            return "css"
        if "json" in mime:
            return "json"
        if mime.startswith("image/") or "multipart" in mime or resource == "Image":
            return "image"
        return "other"


class NetworkLog:
    """Every request of one page, from the DevTools protocol's Network events."""

    def __init__(self, cdp: CDPSession) -> None:
        self.cdp = cdp
        self.fetches: dict[str, Fetch] = {}
        self.wire_status: dict[str, int] = {}
        self.offset = 0.0  # wall-clock minus the protocol's monotonic clock
        self.last_event = time.time()
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.responseReceivedExtraInfo", self._wire_status)
        cdp.on("Network.requestServedFromCache", self._from_cache)
        cdp.on("Network.loadingFinished", self._finished)
        cdp.on("Network.loadingFailed", self._failed)

    def _sent(self, e: dict[str, Any]) -> None:
        self.offset = float(e["wallTime"]) - float(e["timestamp"])
        self.fetches[e["requestId"]] = Fetch(e["request"]["url"], float(e["wallTime"]), e.get("type", ""),
                                             request_id=e["requestId"])  # fmt: skip
        self.last_event = time.time()

    def _response(self, e: dict[str, Any]) -> None:
        fetch = self.fetches.get(e["requestId"])
        if fetch is not None:
            response = e["response"]
            fetch.resource = e.get("type", fetch.resource)
            fetch.mime = response.get("mimeType", "")
            fetch.status = int(response.get("status", 0))
            fetch.cached = fetch.cached or bool(response.get("fromDiskCache") or response.get("fromPrefetchCache"))
            headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
            fetch.encoding = str(headers.get("content-encoding", ""))
        self.last_event = time.time()

    def _wire_status(self, e: dict[str, Any]) -> None:
        """The status as it came over the wire: a revalidated response shows as 200 elsewhere, here as 304."""
        self.wire_status[e["requestId"]] = int(e.get("statusCode", 0))

    def _from_cache(self, e: dict[str, Any]) -> None:
        fetch = self.fetches.get(e["requestId"])
        if fetch is not None:
            fetch.cached = True

    def _finished(self, e: dict[str, Any]) -> None:
        fetch = self.fetches.get(e["requestId"])
        if fetch is not None:
            fetch.size = int(e.get("encodedDataLength", 0))
            fetch.done = float(e["timestamp"]) + self.offset
        self.last_event = time.time()

    def _failed(self, e: dict[str, Any]) -> None:
        fetch = self.fetches.get(e["requestId"])
        if fetch is not None:
            fetch.done = float(e["timestamp"]) + self.offset
        self.last_event = time.time()

    def listing(self) -> list[dict[str, Any]]:
        """Every request: path, kind, status, bytes, sent and done in ms after the first request."""
        self._settle()
        if not self.fetches:
            return []
        zero = min(f.sent for f in self.fetches.values())
        return [{"path": urlsplit(f.url).path + ("?" + urlsplit(f.url).query if urlsplit(f.url).query else ""),
                 "kind": f.kind, "status": f.status, "bytes": f.size, "cached": f.cached,
                 "sent_ms": round((f.sent - zero) * 1000),
                 "done_ms": None if f.done is None else round((f.done - zero) * 1000)}
                for f in sorted(self.fetches.values(), key=lambda f: f.sent)]  # fmt: skip

    def _settle(self) -> None:
        for request_id, status in self.wire_status.items():
            fetch = self.fetches.get(request_id)
            if fetch is not None and status == 304:
                fetch.status = 304

    def image_kinds(self) -> dict[str, dict[str, int]]:
        """Images fetched over the network, grouped by what was asked (the URL's last segment and query,
        e.g. "rendered?viewport=256,256&quality=50"): how many, median and total bytes."""
        groups: dict[str, list[int]] = {}
        for f in list(self.fetches.values()):
            if f.kind == "image" and f.done is not None and f.size and not f.cached and f.status == 200:
                parts = urlsplit(f.url)
                name = parts.path.rsplit("/", 1)[-1] + ("?" + parts.query if parts.query else "")
                groups.setdefault(name, []).append(f.size)
        return {name: {"count": len(sizes), "median_bytes": round(statistics.median(sizes)), "bytes": sum(sizes)}
                for name, sizes in sorted(groups.items(), key=lambda g: -sum(g[1]))}  # fmt: skip

    def text_compression(self, wall: float) -> dict[str, int]:
        """The text responses (HTML, JS, CSS, JSON) that had arrived by `wall` over the network: their bytes
        as sent, and what they would be gzip-compressed (level 6) where the server sent them uncompressed."""
        sent = gzipped = 0
        for f in list(self.fetches.values()):
            if f.kind not in ("html", "js", "css", "json") or f.done is None or f.done > wall + 0.001:
                continue
            if f.cached or f.status != 200:
                continue
            sent += f.size
            if f.encoding:
                gzipped += f.size
                continue
            reply = self.cdp.send("Network.getResponseBody", {"requestId": f.request_id})
            body = base64.b64decode(reply["body"]) if reply.get("base64Encoded") else reply["body"].encode()
            gzipped += f.size - len(body) + len(gzip.compress(body, 6))  # headers stay as they are
        return {"sent": sent, "gzip": gzipped}

    def in_flight(self) -> int:
        return sum(1 for f in self.fetches.values() if f.done is None)

    def until(self, wall: float | None = None) -> Weight:
        """What had arrived by `wall` (wall-clock seconds; everything when None)."""
        self._settle()
        weight = Weight()
        for fetch in list(self.fetches.values()):
            if fetch.done is None or (wall is not None and fetch.done > wall + 0.001):
                continue
            weight.add(fetch)
        return weight


@dataclass
class Weight:
    """Bytes received (headers + bodies as sent, before decompression) and requests, by kind."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    requests: int = 0
    from_cache: int = 0
    revalidated: int = 0  # 304 Not Modified

    def add(self, fetch: Fetch) -> None:
        self.requests += 1
        if fetch.cached:
            self.from_cache += 1
        if fetch.status == 304:
            self.revalidated += 1
        self.bytes[fetch.kind] += fetch.size

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    def minus(self, earlier: Weight) -> Weight:
        return Weight({k: self.bytes[k] - earlier.bytes[k] for k in KINDS}, self.requests - earlier.requests,
                      self.from_cache - earlier.from_cache, self.revalidated - earlier.revalidated)  # fmt: skip


def wait_quiet(page: Page, log: NetworkLog, timeout: float = 120) -> None:
    """Until no request has been in flight for QUIET_S seconds (prefetching finished)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        page.wait_for_timeout(250)
        if log.in_flight() == 0 and time.time() - log.last_event >= QUIET_S:
            return


# --- the browser ------------------------------------------------------------------------------


@dataclass
class Conditions:
    down_kbit: float  # 0 = not throttled
    up_kbit: float
    latency_ms: float

    def describe(self) -> str:
        if not self.down_kbit:
            return "not throttled (loopback)"
        return (f"{self.down_kbit / 1000:g} Mbit/s down, {self.up_kbit / 1000:g} Mbit/s up, "
                f"{self.latency_ms:g} ms latency (Chromium DevTools throttling)")  # fmt: skip


@dataclass
class Phase:
    """One moment of a visit: time since navigation start, and what had arrived by then."""

    name: str
    ms: float | None
    weight: Weight | None
    note: str = ""


@dataclass
class Visit:
    mode: str  # "viewer" (canvas#viewport-0) or "placeholder" (first <img>)
    phases: list[Phase]
    slices_seen: int = 0
    per_slice: float | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, dict[str, int]] = field(default_factory=dict)
    text: dict[str, int] = field(default_factory=dict)


class Bench:
    def __init__(self, browser: Browser, url: str, conditions: Conditions, timeout_s: float,
                 screenshots: Path | None = None) -> None:  # fmt: skip
        self.browser = browser
        self.screenshots = screenshots
        self.url = url
        self.conditions = conditions
        self.timeout_ms = timeout_s * 1000

    def context(self) -> BrowserContext:
        context = self.browser.new_context(locale="vi-VN", viewport={"width": 1440, "height": 900}, base_url=self.url)
        context.set_default_timeout(self.timeout_ms)
        context.add_init_script(WATCH_DRAWS)
        return context

    def login(self, context: BrowserContext) -> Page:
        page = context.new_page()
        page.goto("/login-page")
        page.fill("#username", USER)
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_load_state()
        if "/login-page" in page.url:
            raise SystemExit(f"logging in failed: still at {page.url}")
        return page

    def watch(self, page: Page, throttle: bool, empty_cache: bool) -> NetworkLog:
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        if empty_cache:
            cdp.send("Network.clearBrowserCache")
        if throttle and self.conditions.down_kbit:
            cdp.send("Network.emulateNetworkConditions", {
                "offline": False, "latency": self.conditions.latency_ms,
                "downloadThroughput": self.conditions.down_kbit * 1000 / 8,
                "uploadThroughput": self.conditions.up_kbit * 1000 / 8})  # fmt: skip
        return NetworkLog(cdp)

    def page_weight(self, path: str, logged_in: bool) -> tuple[int, Weight, float]:
        """An unthrottled page with an empty cache: (status, weight, ms to the load event)."""
        context = self.context()
        try:
            page = self.login(context) if logged_in else context.new_page()
            log = self.watch(page, throttle=False, empty_cache=True)
            response = page.goto(path)
            wait_quiet(page, log)
            load_ms = float(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            return (response.status if response else 0), log.until(), load_ms
        finally:
            context.close()

    def open_study(self, page: Page, study_uid: str, scroll: bool, empty_cache: bool) -> Visit:
        log = self.watch(page, throttle=True, empty_cache=empty_cache)
        response = page.goto(f"/studies/{study_uid}", wait_until="commit")
        if response is None or response.status != 200:
            raise SystemExit(f"/studies/{study_uid} answered {response.status if response else 'nothing'}")
        page.wait_for_load_state("domcontentloaded")
        mode = "viewer" if page.locator("canvas#viewport-0").count() else "placeholder"
        first = self.wait_draw(page, f"d => d.kind === '{'viewer' if mode == 'viewer' else 'img'}'")
        phases = [Phase("first image", first["t"], log.until(first["wall"] / 1000),
                        first.get("quality") or "")]  # fmt: skip
        text = log.text_compression(first["wall"] / 1000)
        if mode == "placeholder":
            wait_quiet(page, log)
            phases.append(Phase("page settled (no full image: placeholder page)", None, log.until()))
            return Visit(mode, phases, requests=log.listing(), images=log.image_kinds(), text=text)
        full_drawn = f"d => d.kind === 'viewer' && d.quality === 'full' && d.sop === {json.dumps(first['sop'])}"
        # In low-bandwidth mode the viewer shows previews only, and the full image when asked for.
        low_bandwidth = bool(page.evaluate("!!(window.MP && MP.data && MP.data.lowBandwidth)"))
        if not low_bandwidth:
            full = self.wait_draw(page, full_drawn)
            phases.append(Phase("first image, full quality", full["t"], log.until(full["wall"] / 1000)))
        wait_quiet(page, log)
        settled = log.until()
        phases.append(Phase("page settled (prefetch done)", None, settled))
        self.screenshot(page, "viewer-load-first-image" if empty_cache else "viewer-load-reopened")
        if low_bandwidth:
            clicked = float(page.evaluate("performance.now()"))
            page.click("button[data-action=full-quality]")
            full = self.wait_draw(page, full_drawn)
            phases.append(Phase("full quality on request: since the click", full["t"] - clicked,
                                log.until(full["wall"] / 1000).minus(settled)))  # fmt: skip
            wait_quiet(page, log)
            settled = log.until()
        if not scroll:
            return Visit(mode, phases, requests=log.listing(), images=log.image_kinds(), text=text)
        started = time.time()
        seen, steps = self.scroll_all(page)
        elapsed = (time.time() - started) * 1000
        wait_quiet(page, log)
        end = log.until()
        per_slice = (end.bytes["image"] / len(seen)) if seen else None
        phases.append(Phase(f"scrolling {len(seen)} slices ({steps} notches): during it", elapsed,
                            end.minus(settled)))  # fmt: skip
        phases.append(Phase("visit total", None, end))
        self.screenshot(page, "viewer-load-scrolled")
        return Visit(mode, phases, len(seen), per_slice, log.listing(), log.image_kinds(), text)

    def screenshot(self, page: Page, name: str) -> None:
        if self.screenshots is not None:
            self.screenshots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(self.screenshots / f"{name}.png"))

    def warm_up(self, context: BrowserContext, study_uid: str) -> None:
        """Open another patient's small study a few times, unthrottled, so the server's workers have
        answered pages and images before (as a server that has been running has): the measured visit
        then shows what a new study costs, not a worker's first request."""
        for _ in range(3):
            page = context.new_page()
            page.goto(f"/studies/{study_uid}")
            if page.locator("canvas#viewport-0").count():
                self.wait_draw(page, "d => d.kind === 'viewer'")
            page.wait_for_load_state("networkidle")
            page.close()

    def wait_draw(self, page: Page, predicate: str) -> dict[str, Any]:
        """The first image drawn that matches the JS `predicate` over window.__mpDraws items."""
        handle = page.wait_for_function(f"() => window.__mpDraws.find({predicate})", polling=50)
        found: dict[str, Any] = handle.json_value()
        return found

    def scroll_all(self, page: Page) -> tuple[set[str], int]:
        """Wheel through the stack one notch at a time, each slice drawn before the next notch:
        down to the end, then up to the start. Returns the slices drawn and the notches used."""
        canvas = page.locator("canvas#viewport-0")
        box = canvas.bounding_box()
        if box is None:
            raise SystemExit("canvas#viewport-0 is not visible")
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        sop = str(canvas.get_attribute("data-sop"))
        seen = {sop}
        steps = 0
        count = int(page.evaluate("Math.max(0, ...window.__mpDraws.map(d => d.count || 0))"))
        for direction in (120, -120):
            while not count or len(seen) < count:
                page.mouse.wheel(0, direction)
                steps += 1
                try:
                    page.wait_for_function(
                        "prev => { const c = document.getElementById('viewport-0'); return c.dataset.sop !== prev; }",
                        arg=sop, polling=20, timeout=4000)  # fmt: skip
                except Exception:  # noqa: BLE001 - no new slice within 4 s: the end of the stack
                    break
                sop = str(canvas.get_attribute("data-sop"))
                seen.add(sop)
        return seen, steps


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    conditions = Conditions(0 if args.no_throttle else args.down_kbit, args.up_kbit, args.latency_ms)
    folder = Path(tempfile.mkdtemp(prefix="minipacs-viewer-load-"))
    try:
        with serve(folder, args.slices, args.size, args.low_bandwidth) as served:
            url, study_uid, warm_up_uid, stored = served
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
                version = browser.version
                try:
                    bench = Bench(browser, url, conditions, args.timeout, args.screenshots)
                    context = bench.context()
                    try:
                        page = bench.login(context)
                        if not args.cold_server:
                            bench.warm_up(context, warm_up_uid)
                        cold = bench.open_study(page, study_uid, scroll=not args.no_scroll, empty_cache=True)
                        # The same browser opens the study again: a new tab, its cache kept.
                        again = context.new_page()
                        warm = bench.open_study(again, study_uid, scroll=False, empty_cache=False)
                    finally:
                        context.close()
                    weights = {path: bench.page_weight(path, logged_in)
                               for path, logged_in in (("/login-page", False), ("/ui/studies", True))}
                finally:
                    browser.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "conditions": {"slices": args.slices, "rows": args.size, "columns": args.size, "bits_allocated": 16,
                       "stored_bytes": stored, "throttle": asdict(conditions), "described": conditions.describe(),
                       "low_bandwidth_setting": args.low_bandwidth, "server_warmed_up": not args.cold_server,
                       "chromium": version},  # fmt: skip
        "cold": _visit_json(cold, args.requests),
        "warm": _visit_json(warm, args.requests),
        "pages": {path: {"status": status, "load_ms": round(ms), **_weight_json(w)}
                  for path, (status, w, ms) in weights.items()},  # fmt: skip
    }


def _weight_json(weight: Weight | None) -> dict[str, Any]:
    if weight is None:
        return {}
    return {"bytes": weight.total, "requests": weight.requests, "from_cache": weight.from_cache,
            "not_modified": weight.revalidated, "by_kind": weight.bytes}  # fmt: skip


def _visit_json(visit: Visit, requests: bool) -> dict[str, Any]:
    return {"mode": visit.mode, "slices_seen": visit.slices_seen, **({"requests": visit.requests} if requests else {}),
            "image_bytes_per_slice": None if visit.per_slice is None else round(visit.per_slice),
            "images": visit.images, "text_until_first_image": visit.text,
            "phases": [{"name": p.name, "ms": None if p.ms is None else round(p.ms), "note": p.note,
                        **_weight_json(p.weight)} for p in visit.phases]}  # fmt: skip


def kb(n: int) -> str:
    return f"{n / 1000:,.1f}"


def print_table(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    c = result["conditions"]
    out(f"study: {c['slices']} CT slices, {c['rows']}x{c['columns']} 16-bit, {c['stored_bytes'] / 1e6:,.1f} MB stored")
    out(f"link:  {c['described']}; Chromium {c['chromium']}; per-user low-bandwidth setting "
        f"{'on' if c['low_bandwidth_setting'] else 'off'}")  # fmt: skip
    start = "warmed up on another study first" if c["server_warmed_up"] else "first requests since it started"
    out(f"server: {start}; this study's images rendered for the first time on the first visit")
    out("bytes: on the wire (headers + bodies as received), kB = 1000 bytes; ms from navigation start")
    header = f"{'':52} {'ms':>7} {'kB':>9} {'req':>4} {'cache':>5} " + " ".join(f"{k:>7}" for k in KINDS)
    visits = (("open the study, empty cache", result["cold"]), ("open it again, same browser", result["warm"]))
    for label, visit in visits:
        out("")
        out(f"{label} (page: {visit['mode']})")
        out(header)
        for p in visit["phases"]:
            ms = "" if p["ms"] is None else f"{p['ms']:,}"
            name = p["name"] + (f" [{p['note']}]" if p["note"] and p["name"] == "first image" else "")
            cached = p["from_cache"] + p["not_modified"]
            out(f"  {name[:50]:50} {ms:>7} {kb(p['bytes']):>9} {p['requests']:>4} {cached:>5} "
                + " ".join(f"{kb(p['by_kind'][k]):>7}" for k in KINDS))  # fmt: skip
        if visit["image_bytes_per_slice"] is not None:
            out(f"  image kB per slice over the visit: {kb(visit['image_bytes_per_slice'])} "
                f"({visit['slices_seen']} slices drawn)")  # fmt: skip
        text = visit["text_until_first_image"]
        if text["sent"]:
            out(f"  text (HTML, JS, CSS, JSON) until the first image: {kb(text['sent'])} kB as sent, "
                f"{kb(text['gzip'])} kB if the server gzipped it")  # fmt: skip
        for name, group in visit["images"].items():
            out(f"  images {name[:50]:50} {group['count']:>4} x {kb(group['median_bytes']):>6} kB median, "
                f"{kb(group['bytes'])} kB")  # fmt: skip
        if "requests" in visit:
            out(f"  {'sent ms':>9} {'done ms':>9} {'status':>6} {'kind':6} {'bytes':>9}  path")
            for r in visit["requests"]:
                done = "-" if r["done_ms"] is None else f"{r['done_ms']:,}"
                path = re.sub(r"\b(\d+\.)+\d*(\d{4})\b", r"…\2", r["path"])  # UIDs by their last digits
                out(f"  {r['sent_ms']:>9,} {done:>9} {r['status']:>6} {r['kind']:6} {r['bytes']:>9,}  "
                    f"{path[:100]}{' (cache)' if r['cached'] else ''}")  # fmt: skip
    out("")
    out("page weight, empty cache, not throttled")
    out(f"  {'page':16} {'status':>6} {'load ms':>8} {'kB':>9} {'req':>4} " + " ".join(f"{k:>7}" for k in KINDS))
    for path, p in result["pages"].items():
        out(f"  {path:16} {p['status']:>6} {p['load_ms']:>8,} {kb(p['bytes']):>9} {p['requests']:>4} "
            + " ".join(f"{kb(p['by_kind'][k]):>7}" for k in KINDS))  # fmt: skip
    out("")
    out("'cache' = responses from the browser cache or 304 Not Modified")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Needs Debian's chromium (tests/setup.sh); "
                                            "never runs `playwright install`.")
    parser.add_argument("--slices", type=int, default=200, help="CT slices in the study (default 200)")
    parser.add_argument("--size", type=int, default=512, choices=(64, 128, 256, 512),
                        help="rows and columns of each slice (default 512)")
    parser.add_argument("--down-kbit", type=float, default=2000, help="download, kbit/s (default 2000 = 2 Mbit/s)")
    parser.add_argument("--up-kbit", type=float, default=1000, help="upload, kbit/s (default 1000)")
    parser.add_argument("--latency-ms", type=float, default=80, help="added round-trip latency, ms (default 80)")
    parser.add_argument("--no-throttle", action="store_true", help="loopback speed, no DevTools throttling")
    parser.add_argument("--no-scroll", action="store_true", help="skip scrolling through the slices")
    parser.add_argument("--cold-server", action="store_true",
                        help="measure the server's first page and images since it started (no warm-up study)")
    parser.add_argument("--low-bandwidth", action="store_true", help="the user's low-bandwidth setting on")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for any one image (default 300)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="save what the viewer showed (after the first image, reopened, scrolled) in DIR")
    parser.add_argument("--requests", action="store_true", help="also list every request of both visits")
    args = parser.parse_args(argv)
    if args.slices < 1:
        parser.error("--slices must be at least 1")
    if not CHROMIUM.exists():
        parser.error(f"Chromium is not installed at {CHROMIUM}: run tests/setup.sh (apt-get install chromium)")
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
