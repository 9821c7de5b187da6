#!/usr/bin/env bash
# The README's first command: set up minipacs in .venv (once) and run it with
# the sample studies on the embedded default (SQLite + files in ./minipacs-data).
# Arguments go to `minipacs demo`, e.g. appliance/demo.sh --dicom-port 11113
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v python3 >/dev/null; then
    echo "demo: python3 (3.11 or newer) is needed: apt-get install python3 python3-venv" >&2
    exit 1
fi
# Report PDFs embed DejaVu Sans (it covers Vietnamese); Debian ships it as fonts-dejavu-core.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "demo: installing fonts-dejavu-core (the font of report PDFs)" >&2
        apt-get install -y -qq fonts-dejavu-core >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq fonts-dejavu-core >/dev/null; }
    else
        echo "demo: report PDFs need the DejaVu fonts: sudo apt-get install fonts-dejavu-core" >&2
    fi
fi
# Install on the first run, and again when the dependencies changed (a `git pull`);
# tests/setup.sh keeps its own stamp, which also counts.
stamp=.venv/.minipacs-app-installed
installed() {
    for s in "$stamp" .venv/.minipacs-installed; do
        if [ -f "$s" ] && [ ! pyproject.toml -nt "$s" ] && [ ! constraints.txt -nt "$s" ]; then return 0; fi
    done
    return 1
}
if [ ! -x .venv/bin/minipacs ] || ! installed; then
    echo "demo: installing minipacs into .venv (first run, or its dependencies changed)" >&2
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
    touch "$stamp"
fi
exec .venv/bin/minipacs demo "$@"
