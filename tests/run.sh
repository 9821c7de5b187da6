#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the suite needs when it is
# missing, then runs pytest. Arguments are passed to pytest, e.g.
#   tests/run.sh -m "not slow"      # skip the long end-to-end tests
#   tests/run.sh -m slow            # only the long ones
#   tests/run.sh tests/archive      # one folder
set -euo pipefail
cd "$(dirname "$0")/.."

# Real protocol peers from Debian: dcmtk (storescu, findscu, movescu, getscu,
# storescp, dcmcjpeg, ...) and dicom3tools (dciodvfy).
need_apt=()
command -v storescu >/dev/null || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v ip >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
    echo "tests/run.sh: installing ${need_apt[*]} with apt-get" >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A virtual environment with the pinned packages (constraints.txt).
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.minipacs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test]"
    touch "$stamp"
fi

# dcmtk 3.6.7's SCPs (storescp, movescu's receiver) listen on every address.
# Run the suite in a private network namespace with only loopback, so nothing
# the tests start is reachable from outside and no traffic leaves the machine.
if [ "$(id -u)" -eq 0 ] && [ -z "${MINIPACS_TEST_NETNS:-}" ] && unshare --net true 2>/dev/null; then
    exec unshare --net -- env MINIPACS_TEST_NETNS=1 sh -c \
        'ip link set lo up && exec .venv/bin/python -m pytest "$@"' sh "$@"
fi
exec .venv/bin/python -m pytest "$@"
