"""/rendered, /thumbnail and WADO-URI against a running `minipacs serve`, checked pixel by pixel
against pydicom's own pipeline (apply_modality_lut, apply_voi_lut, convert_color_space, apply_color_lut).

Tolerance: PNG output is compared within 1 grey level (pydicom windows into the stored range
and the reference then rescales to 0..255, so values on .5 may round either way); JPEG output,
which is lossy, by its mean difference (under 2 levels at quality 90).
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from archive import Origin
from tests.conftest import CT_FILES, DX_FILE, US_FILES, Server, site_on
from tests.conftest import both_site_backends as site_backend  # noqa: F401  (SQLite + folder and PostgreSQL + S3)
from tests.dicom_scp.helpers import stop_and_check
from tests.viewer.helpers import start_web_server
from viewer.render_cache import RenderCache

PASSWORD = "xem anh 2026"
AUTH = ("bs.an", PASSWORD)
CT = dcmread(CT_FILES[0])
DX = dcmread(DX_FILE)
US_RGB = dcmread(US_FILES[0])
US_CINE = dcmread(US_FILES[1])
PALETTE = dcmread(get_testdata_file("examples_palette.dcm"))


def monochrome1_dx() -> Dataset:
    """The DX sample as a MONOCHROME1 image (as CR/DX plates often send), its own series."""
    ds = dcmread(DX_FILE)
    ds.decompress(generate_instance_uid=False)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


DX1 = monochrome1_dx()


@dataclass
class Web:
    server: Server
    url: str

    def get(self, path: str, **kwargs: object) -> requests.Response:
        return requests.get(f"{self.url}{path}", auth=AUTH, timeout=60, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def web(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        site_backend: str) -> Iterator[Web]:  # fmt: skip
    data = tmp_path_factory.mktemp("rendered") / "data"
    with site_on(request, site_backend, data) as site:
        archive = site.open_archive()
        try:
            for path in (CT_FILES[0], DX_FILE, *US_FILES, get_testdata_file("examples_palette.dcm")):
                with open(path, "rb") as f:
                    archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
            buffer = io.BytesIO()
            DX1.save_as(buffer, enforce_file_format=True)
            buffer.seek(0)
            archive.ingest(buffer, Origin("IMPORT", "", "IMPORT"))
            archive.accounts.add_user("bs.an", "referrer", PASSWORD, Origin("cli:test", "", "CLI"))
        finally:
            archive.close()
        server, url = start_web_server(data, site=site)
        yield Web(server, url)
        stop_and_check(server)


def path(ds: Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def pixels(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def windowed(ds: Dataset, center: float | None = None, width: float | None = None, frame: int = 0) -> np.ndarray:
    """pydicom's grayscale pipeline, rescaled to 0..255."""
    arr = ds.pixel_array if "NumberOfFrames" not in ds else ds.pixel_array[frame]
    values = apply_modality_lut(arr, ds)
    if center is not None:
        ds = copy.deepcopy(ds)
        ds.WindowCenter, ds.WindowWidth = center, width
        ds.VOILUTFunction = "LINEAR"
    out = apply_voi_lut(values, ds, index=0).astype(np.float64)
    # apply_voi_lut maps into the stored range (through the rescale when there is one); back to 0..255:
    bits = int(ds.BitsStored)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * slope + intercept, hi * slope + intercept
    return np.round((out - lo) / (hi - lo) * 255).astype(np.int16)


def close(got: np.ndarray, want: np.ndarray, levels: int = 1) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= levels, f"max difference {diff.max()} grey levels"


def test_ct_with_a_requested_window_matches_pydicom(web: Web) -> None:
    answer = web.get(f"{path(CT)}/rendered", params={"window": "40,400", "accept": "image/png"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/png"
    close(pixels(answer.content), windowed(CT, 40, 400))


def test_ct_default_window_is_the_headers_first(web: Web) -> None:
    answer = web.get(f"{path(CT)}/rendered", headers={"Accept": "image/png"})
    close(pixels(answer.content), windowed(CT, float(CT.WindowCenter[0]), float(CT.WindowWidth[0])))
    jpeg = web.get(f"{path(CT)}/rendered")  # JPEG by default
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    diff = np.abs(pixels(jpeg.content).astype(np.int16) - windowed(CT, 40, 80))
    assert diff.mean() < 2


def test_jpeg2000_dx_and_its_monochrome1_twin(web: Web) -> None:
    png = {"accept": "image/png"}
    dx = pixels(web.get(f"{path(DX)}/rendered", params=png).content)
    close(dx, windowed(DX, float(DX.WindowCenter), float(DX.WindowWidth)))
    inverted = pixels(web.get(f"{path(DX1)}/rendered", params=png).content)
    close(inverted, 255 - windowed(DX1, float(DX.WindowCenter), float(DX.WindowWidth)))


def test_colour_rgb_ybr_cine_and_palette(web: Web) -> None:
    png = {"accept": "image/png"}
    assert np.array_equal(pixels(web.get(f"{path(US_RGB)}/rendered", params=png).content), US_RGB.pixel_array)
    # YBR_FULL_422 JPEG cine: frame 15 comes back as RGB, as pydicom decodes it.
    frame = pixels(web.get(f"{path(US_CINE)}/frames/15/rendered", params=png).content)
    close(frame, US_CINE.pixel_array[14], levels=0)
    palette = pixels(web.get(f"{path(PALETTE)}/rendered", params=png).content)
    rgb16 = apply_color_lut(PALETTE.pixel_array, PALETTE)
    close(palette, np.round(rgb16 / 65535 * 255).astype(np.int16))


def test_dicomweb_client_gets_rendered_frames_and_instances(web: Web) -> None:
    client = DICOMwebClient(url=f"{web.url}/dicomweb", session=_session())
    jpeg = client.retrieve_instance_rendered(CT.StudyInstanceUID, CT.SeriesInstanceUID, CT.SOPInstanceUID,
                                             media_types=("image/jpeg",), params={"viewport": "256,256"})  # fmt: skip
    assert Image.open(io.BytesIO(jpeg)).size == (256, 256)
    frame = client.retrieve_instance_frames_rendered(US_CINE.StudyInstanceUID, US_CINE.SeriesInstanceUID,
                                                     US_CINE.SOPInstanceUID, [3], media_types=("image/png",))  # fmt: skip
    assert np.array_equal(pixels(frame), US_CINE.pixel_array[2])


def _session() -> requests.Session:
    session = requests.Session()
    session.auth = AUTH
    return session


def test_viewport_quality_and_several_frames(web: Web) -> None:
    small = web.get(f"{path(US_RGB)}/rendered", params={"viewport": "128,128"})
    assert Image.open(io.BytesIO(small.content)).size == (128, 96)  # 640 x 480 keeps its shape
    low = web.get(f"{path(CT)}/rendered", params={"quality": "10"}).content
    high = web.get(f"{path(CT)}/rendered", params={"quality": "95"}).content
    assert len(low) * 3 < len(high)
    several = web.get(f"{path(US_CINE)}/frames/1,2,30/rendered")
    assert several.headers["Content-Type"].startswith('multipart/related; type="image/jpeg"')
    boundary = several.headers["Content-Type"].split("boundary=")[1]
    assert several.content.count(f"--{boundary}\r\n".encode()) == 3
    series = web.get(f"/dicomweb/studies/{CT.StudyInstanceUID}/series/{CT.SeriesInstanceUID}/rendered")
    assert series.status_code == 200 and series.headers["Content-Type"].startswith("multipart/related")


def test_thumbnails_at_every_level_are_small_jpegs(web: Web) -> None:
    study = f"/dicomweb/studies/{US_CINE.StudyInstanceUID}"
    for url in (f"{study}/thumbnail", f"{study}/series/{US_CINE.SeriesInstanceUID}/thumbnail",
                f"{path(US_CINE)}/thumbnail", f"{path(DX)}/thumbnail", f"{path(CT)}/frames/1/thumbnail"):  # fmt: skip
        answer = web.get(url)
        assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg", url
        assert max(Image.open(io.BytesIO(answer.content)).size) == 128, url
    assert max(Image.open(io.BytesIO(web.get(f"{path(DX)}/thumbnail",
                                             params={"viewport": "64,64"}).content)).size) == 64  # fmt: skip
    assert web.get(f"{path(DX)}/thumbnail", headers={"Accept": "image/png"}).status_code == 406


def test_rendered_images_are_cached_with_an_etag(web: Web) -> None:
    url = f"{path(DX)}/rendered?window=1000,2000&viewport=300,300"
    cache = web.server.data / "cache" / "rendered"
    before = len(list(cache.glob("*/*"))) if cache.exists() else 0
    first = web.get(url)
    assert first.headers["Cache-Control"] == "private, max-age=3600"  # a browser may keep it, a proxy not
    assert len(list(cache.glob("*/*"))) == before + 1
    again = web.get(url)
    assert again.content == first.content and again.headers["ETag"] == first.headers["ETag"]
    assert len(list(cache.glob("*/*"))) == before + 1
    unchanged = web.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert unchanged.status_code == 304 and not unchanged.content
    other = web.get(f"{path(DX)}/rendered?window=1000,2001&viewport=300,300")
    assert other.headers["ETag"] != first.headers["ETag"]


def test_the_cache_stays_within_its_bound(tmp_path: Path) -> None:
    cache = RenderCache(tmp_path, max_bytes=10_000)
    for n in range(30):
        cache.put(f"{n:040x}", bytes(1000))
    assert cache.get(f"{29:040x}") == bytes(1000)  # the newest stays
    assert cache.get(f"{0:040x}") is None  # the oldest went
    assert sum(p.stat().st_size for p in tmp_path.glob("*/*")) <= 10_000


@pytest.mark.parametrize("query, status, message", [
    ("window=abc", 400, "give center,width"), ("window=40,0", 400, "width"), ("window=40,400,cubic", 400, "function"),
    ("viewport=0,0", 400, "viewport"), ("viewport=99999,10", 400, "viewport"), ("quality=500", 400, "quality"),
    ("window=nan,400", 400, "finite"), ("bogus=1", 400, "unknown parameter"),
    ("accept=image/gif", 406, "image/jpeg and image/png"), ("accept=application/dicom", 406, "renders"),
])  # fmt: skip
def test_bad_rendering_requests_get_a_json_4xx(web: Web, query: str, status: int, message: str) -> None:
    answer = web.get(f"{path(CT)}/rendered?{query}")
    assert answer.status_code == status and message in answer.json()["message"], answer.text


@pytest.mark.parametrize("url, status", [
    ("{ct}/frames/2/rendered", 404), ("{ct}/frames/0/rendered", 400), ("{ct}/frames/1,x/rendered", 400),
    ("/dicomweb/studies/1.2.3/series/4.5/instances/6.7/rendered", 404),
    ("/dicomweb/studies/..%2F..%2Fetc/series/1/instances/2/rendered", 404),  # decoded: no such route
    ("/dicomweb/studies/1.2.3/series/4.5/instances/<script>/thumbnail", 400),
])  # fmt: skip
def test_missing_frames_and_hostile_uids(web: Web, url: str, status: int) -> None:
    answer = web.get(url.format(ct=path(CT)))
    assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"


# --- WADO-URI --------------------------------------------------------------------------------


def wado(ds: Dataset, **params: str) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
            "objectUID": ds.SOPInstanceUID, **params}  # fmt: skip


def test_wado_uri_images(web: Web) -> None:
    jpeg = web.get("/wado", params=wado(CT))
    assert jpeg.status_code == 200 and jpeg.headers["Content-Type"] == "image/jpeg"
    png = web.get("/wado", params=wado(CT, contentType="image/png", windowCenter="40", windowWidth="400"))
    close(pixels(png.content), windowed(CT, 40, 400))
    frame = web.get("/wado", params=wado(US_CINE, contentType="image/png", frameNumber="15"))
    close(pixels(frame.content), US_CINE.pixel_array[14], levels=0)
    small = web.get("/wado", params=wado(US_RGB, rows="120"))
    assert Image.open(io.BytesIO(small.content)).size == (160, 120)


def test_wado_uri_dicom_as_stored_or_explicit_little_endian(web: Web) -> None:
    stored = web.get("/wado", params=wado(DX, contentType="application/dicom", transferSyntax="*"))
    assert stored.status_code == 200 and stored.headers["Content-Type"] == "application/dicom"
    as_stored = dcmread(io.BytesIO(stored.content))
    assert as_stored.file_meta.TransferSyntaxUID == DX.file_meta.TransferSyntaxUID and as_stored == DX
    default = dcmread(io.BytesIO(web.get("/wado", params=wado(DX, contentType="application/dicom")).content))
    assert default.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(default.pixel_array, DX.pixel_array)  # JPEG 2000 lossless, decoded


@pytest.mark.parametrize("params, status, message", [
    ({"requestType": "WADO"}, 400, "studyUID, seriesUID, objectUID missing"),
    (wado(CT, requestType="WADOX"), 400, "requestType=WADO"),
    (wado(CT, contentType="image/gif"), 406, "contentType"),
    (wado(CT, anonymize="yes"), 400, "anonymize is not supported"),
    (wado(CT, windowCenter="40"), 400, "both windowCenter and windowWidth"),
    (wado(CT, frameNumber="0"), 400, "frameNumber"), (wado(CT, frameNumber="2"), 404, "no frame 2"),
    (wado(CT, rows="-5"), 400, "whole numbers"), (wado(CT, objectUID="1.2.3"), 404, "no instance"),
    (wado(CT, objectUID="' OR 1=1 --"), 400, "UID"), (wado(CT, foo="1"), 400, "unknown WADO-URI parameter"),
    (wado(CT, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"), 406, "cannot be sent"),
])  # fmt: skip
def test_wado_uri_refusals(web: Web, params: dict[str, str], status: int, message: str) -> None:
    answer = web.get("/wado", params=params)
    assert answer.status_code == status and message in answer.json()["message"], answer.text


def test_nobody_sees_images_without_logging_in(web: Web) -> None:
    for url in (f"{path(CT)}/rendered", f"{path(CT)}/thumbnail", "/wado?" + "&".join(f"{k}={v}" for k, v in wado(CT).items())):
        assert requests.get(f"{web.url}{url}", timeout=30).status_code == 401
