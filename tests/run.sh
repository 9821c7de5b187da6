#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the suite needs when it is
# missing (tests/setup.sh), then runs pytest. Arguments go to pytest, e.g.
#   tests/run.sh -m "not slow"      # skip the long end-to-end tests
#   tests/run.sh -m slow            # only the long ones
#   tests/run.sh tests/archive      # one folder
#   tests/run.sh -n 0               # in one process (default: MINIPACS_TEST_WORKERS=2
#                                   # processes, each test module kept in one of them)
set -euo pipefail
cd "$(dirname "$0")/.."
tests/setup.sh

# Two pytest processes (pytest-xdist); a module's tests stay in one, with its shared servers.
set -- -n "${MINIPACS_TEST_WORKERS:-2}" --dist loadscope "$@"

# dcmtk 3.6.7's SCPs (storescp, movescu's receiver) listen on every address.
# Run the suite in a private network namespace with only loopback, so nothing
# the tests start is reachable from outside and no traffic leaves the machine.
if [ "$(id -u)" -eq 0 ] && [ -z "${MINIPACS_TEST_NETNS:-}" ] && unshare --net true 2>/dev/null; then
    exec unshare --net -- env MINIPACS_TEST_NETNS=1 sh -c \
        'ip link set lo up && exec .venv/bin/python -m pytest "$@"' sh "$@"
fi
exec .venv/bin/python -m pytest "$@"
