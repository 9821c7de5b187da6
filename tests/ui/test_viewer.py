"""The study viewer in a real browser: scroll, window/level by drag and preset, measure in mm on a synthetic
phantom (also zoomed and rotated), the ultrasound cine, the tag browser, prior-study compare, a hostile patient
name, low quality first then full, and an EMR's IID link."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
from playwright.sync_api import Page, Route, expect
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import CT_FILES
from tests.ui.conftest import CT_STUDY, DX_STUDY, US_STUDY, Pages, Site, store_as_is

Shot = Callable[[Page, str], Path]
PHANTOM_SIZE = 512
#: Two bright dots 200 pixels apart on a row, 0.25 mm pixels: 50.0 mm.
DOT_A, DOT_B = (156, 256), (356, 256)


def phantom(path: Path, name: str, patient_id: str) -> str:
    """A 512x512 CT of a flat background with two 5x5 bright dots, Pixel Spacing 0.25 mm; returns its study UID."""
    pixels = np.full((PHANTOM_SIZE, PHANTOM_SIZE), 0, dtype=np.int16)
    for x, y in (DOT_A, DOT_B):
        pixels[y - 2:y + 3, x - 2:x + 3] = 1000
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, patient_id, "19700101", "F"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyDescription = "20261201", "080000", "PH0001", "Phantom"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, 1
    ds.Rows = ds.Columns = PHANTOM_SIZE
    ds.PixelSpacing = [0.25, 0.25]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    ds.WindowCenter, ds.WindowWidth = 500, 1000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(ds.StudyInstanceUID)


def shown(page: Page, pane: int = 0) -> None:
    """Wait until viewport `pane` has drawn an image."""
    expect(page.locator(f"canvas#viewport-{pane}")).to_have_attribute("data-sop", re.compile(r"^[0-9.]+$"))


def overlay(page: Page, corner: str, pane: int = 0) -> str:
    return page.locator(f"#pane-{pane} [data-overlay={corner}]").inner_text()


def screen_point(page: Page, x: float, y: float, zoom: float = 1.0, turns: int = 0,
                 pan: tuple[float, float] = (0, 0)) -> tuple[float, float]:  # fmt: skip
    """Where image pixel (x, y) of the phantom is on the page: fitted, centred, zoomed, turned 90° clockwise
    `turns` times, then moved by `pan` screen pixels."""
    box = page.locator("canvas#viewport-0").bounding_box()
    assert box
    scale = min(box["width"], box["height"]) / PHANTOM_SIZE * zoom
    dx, dy = (x - PHANTOM_SIZE / 2) * scale, (y - PHANTOM_SIZE / 2) * scale
    for _ in range(turns):
        dx, dy = -dy, dx
    return box["x"] + box["width"] / 2 + dx + pan[0], box["y"] + box["height"] / 2 + dy + pan[1]


def millimetres(page: Page, n: int) -> float:
    item = page.locator("#pane-0 [data-overlay=measurements] li .measure-value").nth(n)
    expect(item).to_have_text(re.compile(r"^\d+\.\d mm$"))
    return float(item.inner_text().split()[0])


def test_scroll_window_level_and_presets_on_the_sample_ct(pages: Pages, screenshot: Shot) -> None:
    page = pages.login("radiologist", f"/studies/{CT_STUDY}")
    shown(page)
    canvas = page.locator("canvas#viewport-0")
    sops = page.evaluate("MP.data.manifest.series[0].images.map((i) => i.sop)")
    assert len(sops) == 20
    expect(canvas).to_have_attribute("data-sop", sops[0])
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("1/20")
    expect(page.locator("#pane-0 [data-overlay=patient]")).to_contain_text("Nguyễn Văn An")
    box = canvas.bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(5):  # five wheel notches, five slices
        page.mouse.wheel(0, 120)
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("6/20")
    for _ in range(5):
        page.keyboard.press("ArrowDown")
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("11/20")
    expect(canvas).to_have_attribute("data-sop", sops[10])
    expect(page.locator("#pane-0 input.stack-slider")).to_have_value("11")
    page.keyboard.press("PageUp")  # back two (a tenth of the stack)
    expect(canvas).to_have_attribute("data-sop", sops[8])
    page.keyboard.press("PageDown")
    expect(canvas).to_have_attribute("data-sop", sops[10])

    # The header's first window (brain 40/80) is what the overlay shows; the header's windows are offered.
    wl = page.locator("#pane-0 [data-overlay=display] .wl")
    expect(wl).to_have_attribute("data-window", "40,80")
    expect(wl).to_contain_text("80")
    expect(page.locator("#header-presets option")).to_have_count(2)
    expect(page.locator("#header-presets option").nth(1)).to_contain_text("500/2500")
    # Drag: the browser remaps at once; on release the server renders the exact window.
    with page.expect_request(lambda r: "/rendered?" in r.url and "window=" in r.url) as dragged:
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2 + 90, box["y"] + box["height"] / 2 + 60, steps=6)
        page.mouse.up()
    center, width = (float(v) for v in re.search(r"window=([-\d.]+),([-\d.]+)", dragged.value.url).groups())
    assert width > 80 and center > 40
    expect(wl).to_have_attribute("data-window", f"{center:g},{width:g}")
    expect(wl).to_contain_text(f"{width:g}")
    # A preset: lung.
    with page.expect_request(lambda r: "window=-600,1500" in r.url):
        page.select_option("#presets", "-600,1500")
    expect(wl).to_have_attribute("data-window", "-600,1500")
    expect(wl).to_contain_text("1500")
    expect(canvas).to_have_attribute("data-quality", "full")
    # Keys 1-5 are the CT presets: 3 is bone 300/2500.
    canvas.focus()
    with page.expect_request(lambda r: "window=300,2500" in r.url):
        page.keyboard.press("3")
    expect(wl).to_have_attribute("data-window", "300,2500")
    expect(canvas).to_have_attribute("data-quality", "full")
    screenshot(page, "viewer-ct")


def test_a_measured_distance_on_a_phantom_is_in_mm_zoomed_and_turned(pages: Pages, site: Site, screenshot: Shot,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    study = phantom(tmp_path / "phantom.dcm", "Phantom^Đo khoảng cách", "PH-MEASURE")
    store_as_is(site.server.port, "CT_ROOM1", [tmp_path / "phantom.dcm"])
    page = pages.login("radiologist", "/ui/")
    held: list[Route] = []
    page.route(re.compile(r"/rendered\?quality=90"), lambda route: held.append(route))  # measure on the preview
    page.goto(f"/studies/{study}", wait_until="domcontentloaded")  # "load" may wait for the held image
    canvas = page.locator("canvas#viewport-0")
    expect(canvas).to_have_attribute("data-quality", "low")  # 256 x 256 for a 512 x 512 image
    page.click("[data-tool=length]")
    page.mouse.click(*screen_point(page, *DOT_A))
    page.mouse.click(*screen_point(page, *DOT_B))
    assert abs(millimetres(page, 0) - 50.0) <= 0.2
    expect(canvas).to_have_attribute("data-quality", "low")
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/rendered\?quality=90"))
    expect(canvas).to_have_attribute("data-quality", "full")
    for zoom, turns in ((1.0, 0), (1.5625, 0), (1.5625, 1)):
        if zoom != 1.0 and turns == 0:
            page.click("[data-action=zoom-in]")
            page.click("[data-action=zoom-in]")  # 1.25 x 1.25
        if turns:
            page.click("[data-action=rotate]")
        page.mouse.click(*screen_point(page, *DOT_A, zoom=zoom, turns=turns))
        expect(page.locator("#pane-0 [data-overlay=hint]")).to_be_visible()
        page.mouse.click(*screen_point(page, *DOT_B, zoom=zoom, turns=turns))
    for n in range(4):
        assert abs(millimetres(page, n) - 50.0) <= 0.2, n
    expect(page.locator("#pane-0 [data-overlay=measurements] li")).to_have_count(4)
    # A drag measures too: half the distance, vertically (on screen, after the turn: along the image's row).
    page.click("[data-action=fit]")
    start = screen_point(page, 256, 256, turns=1)
    end = screen_point(page, 356, 256, turns=1)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=5)
    page.mouse.up()
    assert abs(millimetres(page, 4) - 25.0) <= 0.2
    # An angle: 90° at A between B and a point straight below A.
    page.click("[data-tool=angle]")
    for x, y in (DOT_B, DOT_A, (156, 456)):
        page.mouse.click(*screen_point(page, x, y, turns=1))
    angle = page.locator("#pane-0 [data-overlay=measurements] li .measure-value").nth(5)
    expect(angle).to_have_text(re.compile(r"^(89\.[89]|90\.[01])°$"))
    # Moved with the pan tool: the same dots, the same 50 mm.
    page.click("[data-tool=pan]")
    box = canvas.bounding_box()
    assert box
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 260, box["y"] + 240, steps=4)
    page.mouse.up()
    page.click("[data-tool=length]")
    page.mouse.click(*screen_point(page, *DOT_A, turns=1, pan=(60, 40)))
    page.mouse.click(*screen_point(page, *DOT_B, turns=1, pan=(60, 40)))
    assert abs(millimetres(page, 6) - 50.0) <= 0.2
    screenshot(page, "viewer-ct-measure")


def test_an_x_ray_turns_flips_and_measures_at_the_detector(pages: Pages, screenshot: Shot) -> None:
    page = pages.login("radiologist", f"/studies/{DX_STUDY}")
    shown(page)
    canvas = page.locator("canvas#viewport-0")
    expect(canvas).to_have_attribute("data-quality", "full")
    page.click("[data-action=rotate]")
    page.click("[data-action=flip-h]")
    page.click("[data-action=invert]")
    expect(page.locator("#ct-presets")).to_be_hidden()  # CT presets only for CT
    page.click("[data-tool=length]")
    box = canvas.bounding_box()
    assert box
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(cx - 100, cy)
    page.mouse.click(cx + 100, cy)
    detector = page.evaluate("MP.t('mmDetector')")
    value = page.locator("#pane-0 [data-overlay=measurements] li .measure-value")
    expect(value).to_have_text(re.compile(r"^\d+\.\d " + re.escape(detector) + "$"))
    # 200 screen pixels over a 1536-pixel image fitted in the viewport, 0.28 mm at the detector.
    side = min(box["width"], box["height"])
    assert abs(float(value.inner_text().split()[0]) - 200 * 1536 / side * 0.28) < 0.5
    screenshot(page, "viewer-dx")


def test_the_ultrasound_cine_plays_and_pauses(pages: Pages, screenshot: Shot) -> None:
    page = pages.login("radiologist", f"/studies/{US_STUDY}")
    shown(page)
    images = page.locator("#pane-0 [data-overlay=image]")
    page.keyboard.press("ArrowDown")  # the second image of the series is the 30-frame cine
    expect(images).to_contain_text("1/30")
    expect(page.locator("#cine-fps")).to_have_value("20")  # Frame Time 50 ms
    page.click("#cine-play")
    expect(page.locator("#cine-play")).to_have_attribute("aria-pressed", "true")
    expect(images).to_contain_text(re.compile(r"\b([5-9]|[12]\d|30)/30"))  # it advances
    frames = page.locator("canvas#viewport-0")
    expect(frames).not_to_have_attribute("data-frame", "1")
    screenshot(page, "viewer-us-cine")
    page.click("#cine-play")
    expect(page.locator("#cine-play")).to_have_attribute("aria-pressed", "false")
    stopped = frames.get_attribute("data-frame")
    text = images.inner_text()
    page.wait_for_timeout(600)  # twelve frames' time at 20 fps: nothing may move
    assert frames.get_attribute("data-frame") == stopped and images.inner_text() == text
    # Inside the ultrasound region a length is in mm by the region's calibration; across its edge, in pixels.
    page.click("[data-tool=length]")
    box = frames.bounding_box()
    assert box
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(cx - 100, cy)
    page.mouse.click(cx + 100, cy)
    value = page.locator("#pane-0 [data-overlay=measurements] li .measure-value")
    expect(value.first).to_have_text(re.compile(r"^\d+\.\d " + re.escape(page.evaluate("MP.t('mmRegion')")) + "$"))
    page.mouse.click(cx, cy)
    page.mouse.click(box["x"] + 3, box["y"] + 3)  # the corner of the picture: outside the region
    expect(value.nth(1)).to_have_text(re.compile(r"^\d+\.\d px"))


def test_the_tag_browser_lists_and_filters(pages: Pages, screenshot: Shot) -> None:
    page = pages.login("radiologist", f"/studies/{CT_STUDY}")
    shown(page)
    page.click("[data-action=tags]")
    rows = page.locator("#tags-table tr")
    expect(page.locator("#tags-table tr[data-keyword=PatientName] td.value")).to_contain_text("Nguyễn^Văn An")
    total = rows.count()
    assert total > 40
    page.fill("#tags-filter", "window")
    expect(page.locator("#tags-table tr[data-keyword=WindowCenter]")).to_be_visible()
    expect(page.locator("#tags-table tr[data-keyword=PatientName]")).to_have_count(0)
    assert rows.count() < 10
    page.fill("#tags-filter", "0010,0020")
    expect(page.locator("#tags-table tr[data-keyword=PatientID] td.value").first).to_contain_text("BN26001001")
    page.fill("#tags-filter", "")
    # The panel follows the image.
    page.locator("canvas#viewport-0").click()
    page.keyboard.press("End")
    expect(page.locator("#tags-title")).to_contain_text("20")
    expect(page.locator("#tags-table tr[data-keyword=InstanceNumber] td.value")).to_contain_text("20")
    screenshot(page, "viewer-tags")


def copy_ct(folder: Path, patient: tuple[str, str], date: str, accession: str, description: str,
            count: int) -> tuple[str, list[str]]:
    """The first `count` slices of the sample CT as a study of its own (new UIDs) of `patient` (name, ID)."""
    study, series = generate_uid(), generate_uid()
    sops = []
    for n, path in enumerate(CT_FILES[:count]):
        ds = dcmread(path)
        ds.PatientName, ds.PatientID = patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyDate, ds.AccessionNumber, ds.StudyDescription = date, accession, description
        sops.append(str(ds.SOPInstanceUID))
        ds.save_as(folder / f"{accession}-{n}.dcm")
    return study, sops


def test_a_prior_study_opens_beside_the_current_one(pages: Pages, site: Site, screenshot: Shot, tmp_path: Path) -> None:
    """A patient of this test's own with two CTs: the newer opens, the older is offered beside it."""
    patient = ("Võ^Thị Cũ", "PH-PRIOR")
    current, _ = copy_ct(tmp_path, patient, "20261201", "CT2612010001", "CT sọ não", 10)
    prior_uid, sops = copy_ct(tmp_path, patient, "20250310", "CT2503100007", "CT sọ não (cũ)", 6)
    store_as_is(site.server.port, "CT_ROOM1", sorted(tmp_path.glob("*.dcm")))
    page = pages.login("radiologist", f"/studies/{current}")
    shown(page)
    prior = page.locator("#priors .prior-item")
    expect(prior).to_have_count(1)
    expect(prior).to_contain_text("CT sọ não (cũ)")
    expect(prior).to_contain_text("10/03/2025")
    prior.click()
    shown(page, 1)
    expect(page.locator("canvas#viewport-1")).to_have_attribute("data-sop", sops[0])
    expect(page.locator("#pane-1 [data-overlay=study]")).to_contain_text("CT2503100007")
    expect(page.locator("#pane-0 [data-overlay=study]")).to_contain_text("CT2612010001")
    assert prior_uid in str(page.locator("#priors .prior-item").get_attribute("data-study"))
    expect(page.locator("#priors .series-item")).to_have_count(1)
    # Linked scrolling moves both.
    page.click("[data-action=sync]")
    page.locator("canvas#viewport-0").click()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    expect(page.locator("canvas#viewport-1")).to_have_attribute("data-sop", sops[2])
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("3/10")
    page.click("[data-action=report]")  # more room for the images
    expect(page.locator("#report-panel")).to_be_hidden()
    screenshot(page, "viewer-prior")


def test_a_hostile_patient_name_is_text(pages: Pages, site: Site, tmp_path: Path) -> None:
    name = "<script>alert(1)</script>"
    study = phantom(tmp_path / "xss.dcm", name, "PH-XSS")
    store_as_is(site.server.port, "CT_ROOM1", [tmp_path / "xss.dcm"])
    page = pages.login("radiologist", f"/studies/{study}")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.reload()
    shown(page)
    expect(page.locator("#pane-0 [data-overlay=patient]")).to_contain_text(name)
    expect(page.locator(".study-bar .patient-name")).to_have_text(name)
    page.click("[data-action=tags]")
    expect(page.locator("#tags-table tr[data-keyword=PatientName] td.value")).to_contain_text(name)
    assert page.locator("#pane-0 [data-overlay=patient] script").count() == 0
    assert not dialogs


def test_a_low_quality_preview_comes_first_then_the_full_image(pages: Pages, site: Site) -> None:
    page = pages.login("radiologist", "/ui/")
    held: list[Route] = []

    def hold_full(route: Route) -> None:
        if "quality=90" in route.request.url:
            held.append(route)  # answered later, when the test says
        else:
            route.continue_()

    page.route(re.compile(r"/frames/\d+/rendered\?"), hold_full)
    with page.expect_request(lambda r: "/frames/" in r.url and "quality=90" in r.url, timeout=15_000):
        page.goto(f"/studies/{CT_STUDY}", wait_until="domcontentloaded")  # "load" may wait for the held image
    canvas = page.locator("canvas#viewport-0")
    expect(canvas).to_have_attribute("data-quality", "low")  # the preview is drawn while the full image waits
    for _ in range(50):  # let the route handler see the held request
        if held:
            break
        page.wait_for_timeout(20)
    assert "viewport=" not in held[0].request.url
    expect(canvas).to_have_attribute("data-quality", "low")
    for route in held:
        route.continue_()
    page.unroute(re.compile(r"/frames/\d+/rendered\?"))
    expect(canvas).to_have_attribute("data-quality", "full")


def test_low_bandwidth_keeps_to_previews_until_asked(pages: Pages) -> None:
    page = pages.login("radiologist", f"/studies/{CT_STUDY}")
    shown(page)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "quality=90" in r.url else None)
    page.check("#low-bandwidth")
    expect(page.locator(".toast")).to_be_visible()
    canvas = page.locator("canvas#viewport-0")
    canvas.click()  # the keys are the images' once the checkbox is left
    page.keyboard.press("End")
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("20/20")
    expect(canvas).to_have_attribute("data-quality", "low")
    page.wait_for_timeout(800)  # longer than the pause after which a full image would be asked for
    assert not asked
    page.click("[data-action=full-quality]")
    expect(canvas).to_have_attribute("data-quality", "full")
    page.reload()  # remembered in the account
    expect(page.locator("#low-bandwidth")).to_be_checked()
    page.uncheck("#low-bandwidth")
    expect(page.locator(".toast").last).to_be_visible()


def test_an_emr_link_shows_the_study_images_without_a_login(pages: Pages, site: Site) -> None:
    made = site.call("POST", "/api/iid-tokens", role="admin", json={"studyUID": CT_STUDY})
    assert made.status_code == 201, made.text
    page = pages.new()
    page.goto(made.json()["url"])
    expect(page).to_have_url(re.compile(rf"/studies/{re.escape(CT_STUDY)}$"))
    shown(page)
    expect(page.locator("canvas#viewport-0")).to_have_attribute("data-quality", re.compile("low|full"))
    expect(page.locator("#series-strip img").first).to_have_js_property("complete", True)
    assert page.locator("#priors").count() == 0 and page.locator("#report-panel").count() == 0
    assert page.locator("header.top .logout").count() == 0
    page.keyboard.press("ArrowDown")
    expect(page.locator("#pane-0 [data-overlay=image]")).to_contain_text("2/20")
