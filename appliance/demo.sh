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
if [ ! -x .venv/bin/minipacs ]; then
    echo "demo: installing minipacs into .venv (first run only)" >&2
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e .
fi
exec .venv/bin/minipacs demo "$@"
