#!/usr/bin/env bash
# `make test-unit`: the unit suites (every test under libs/ and services/) on the interpreter the
# images run, in the test stage of services/Dockerfile (tests/unit.compose.yaml), in parallel
# processes (pytest-xdist, WHARF_TEST_PROCESSES of them, default 4), each with its own Postgres and
# Redis containers. Arguments replace the default ones: `scripts/test-unit.sh services/api/tests -x`.
# pytest's own exit code is returned: 5 (no test ran) is a failure like any other.
set -euo pipefail
cd "$(dirname "$0")/.."

# pytest's testpaths (pyproject.toml) split in two: `unit`, the suites under libs/ and services/
# (run here), and `host`, the others (scripts/test.sh runs them on the host).
testpaths() {
  python3 -c 'import sys, tomllib
paths = tomllib.load(open("pyproject.toml", "rb"))["tool"]["pytest"]["ini_options"]["testpaths"]
print(*(p for p in paths if p.startswith(("libs/", "services/")) == (sys.argv[1] == "unit")), sep="\n")' "$1"
}
if [[ ${1:-} == --testpaths ]]; then testpaths "$2"; exit; fi

scripts/bootstrap-docker.sh
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh  # PYTHON_IMAGE (the services' base), POSTGRES_IMAGE, REDIS_IMAGE

export WHARF_ROOT=$PWD WHARF_UID=$(id -u) WHARF_GID=$(id -g)
DOCKER_SOCKET_GID=$(stat -c %g /var/run/docker.sock)
export DOCKER_SOCKET_GID WHARF_UNIT_PROJECT=wharf-unit-${WHARF_TAG:-dev}
runner=(docker compose -f tests/unit.compose.yaml)
"${runner[@]}" build --quiet unit-tests

run() {
  echo "[test-unit] $PYTHON_IMAGE: pytest $*" >&2
  "${runner[@]}" run --rm --no-deps -T unit-tests pytest "$@"
}
if (($#)); then run "$@"; exit; fi

# Four processes: the suites mostly wait (on Postgres, Redis, sockets and timeouts), so more
# processes than this machine's two cores still shorten the run. The tests that compare or bound
# durations (marker `timing`) then run alone, as the other processes would skew what they measure.
# Both passes run; the first failure's exit code is returned.
mapfile -t suites < <(testpaths unit)
status=0
run --numprocesses "${WHARF_TEST_PROCESSES:-4}" --dist worksteal -m "not timing" "${suites[@]}" || status=$?
run -m timing "${suites[@]}" || { code=$?; ((status)) || status=$code; }
exit "$status"
