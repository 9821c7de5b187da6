"""What a patient's phone downloads: the share page and its JPEG pages, for each sample study.

Builds a throw-away archive of the sample studies (sample_dicom/), makes a
share link per study and fetches the page and every image through the Flask
app in-process (no network: sizes and render times only), first uncached
then from the render cache. Prints one line per study.

    .venv/bin/python bench/share_page.py
"""

from __future__ import annotations

import re
import statistics
import tempfile
import time
from pathlib import Path

from archive import Archive, Origin
from viewer import create_app
from viewer.config import WebConfig

SAMPLES = Path(__file__).resolve().parent.parent / "sample_dicom"
PASSWORD = "bench share page 2026"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        archive = Archive.open(f"sqlite:///{data / 'index.sqlite'}", str(data / "objects"))
        try:
            studies: dict[str, str] = {}
            for path in sorted(SAMPLES.glob("*/*.dcm")):
                with open(path, "rb") as f:
                    result = archive.ingest(f, Origin("IMPORT", "", "IMPORT"))
                studies.setdefault(path.parent.name, result.study_instance_uid)
            archive.accounts.add_user("bench", "technologist", PASSWORD, Origin("bench", "", "CLI"))
            app = create_app(archive, WebConfig(secret_file=data / "key", cache_dir=data / "cache"))
            client = app.test_client()
            print(f"{'study':6} {'images':>6} {'page KB':>8} {'thumb KB med/max':>17} {'all thumbs KB':>14} "
                  f"{'large KB med':>12} {'render ms/img':>14} {'cached ms/img':>14}")  # fmt: skip
            for name, uid in sorted(studies.items()):
                made = client.post("/api/share-links", json={"study_instance_uid": uid}, auth=("bench", PASSWORD))
                path = "/s/" + made.get_json()["url"].split("/s/", 1)[1]
                page = client.get(path)
                html = page.get_data(as_text=True)
                thumbs = [s.replace("&amp;", "&") for s in re.findall(r'<img[^>]* src="([^"]+)"', html)]
                large = [s.replace("&amp;", "&") for s in re.findall(r'<a href="([^"]+rendered[^"]+)"', html)]
                start = time.perf_counter()
                sizes = [len(client.get(src).data) for src in thumbs]
                first = (time.perf_counter() - start) / len(thumbs) * 1000
                start = time.perf_counter()
                for src in thumbs:
                    client.get(src)
                cached = (time.perf_counter() - start) / len(thumbs) * 1000
                large_sizes = [len(client.get(src).data) for src in large[:5]]
                print(f"{name:6} {len(thumbs):6d} {len(page.data) / 1024:8.1f} "
                      f"{statistics.median(sizes) / 1024:8.1f}/{max(sizes) / 1024:<8.1f} {sum(sizes) / 1024:14.1f} "
                      f"{statistics.median(large_sizes) / 1024:12.1f} {first:14.1f} {cached:14.1f}")  # fmt: skip
        finally:
            archive.close()


if __name__ == "__main__":
    main()
