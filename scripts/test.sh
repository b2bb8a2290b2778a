#!/usr/bin/env bash
# `make test`: install what the suite needs on a fresh machine (Docker engine, Compose v2, the
# test virtualenv, the pinned kubectl, wrk, Debian's Chromium and chromedriver, the images), then run
# every suite: the unit suites (every test under libs/ and services/) on the images' interpreter in
# parallel (scripts/test-unit.sh), while the host is made ready (the rest of that list) beside them,
# then all the others in one pytest session on the host (the composed stack, Kubernetes, the docs,
# the pages in a browser), in parallel processes that share the work out by compose project
# (tests/conftest.py; WHARF_HOST_PROCESSES of them, default 4).
# Both run, and the first failure's exit code is returned: pytest's 5 (no test ran) is a failure
# like any other.
# With arguments, only the host's session runs, with those arguments (e.g. tests/integration).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap-docker.sh
# Chosen (and the registry-free ones built) once, before anything runs beside anything else.
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh
echo "[test] base images: $WHARF_BASE_IMAGES" >&2

# Everything the host's session needs. Its output is kept until the unit suites have printed theirs.
prepare_host() {
  scripts/venv.sh
  scripts/bootstrap-browser.sh
  scripts/k8s-tools.sh >/dev/null  # the pinned kubectl/kustomize tests/k8s renders with
  scripts/install-wrk.sh  # the short soak's load (tests/integration/test_soak.py)
  docker compose build --quiet
}

status=0
if (($# == 0)); then
  prepared=$(mktemp)
  trap 'rm -f "$prepared"' EXIT
  prepare_host >"$prepared" 2>&1 &
  preparing=$!
  scripts/test-unit.sh || status=$?
  wait "$preparing" || { cat "$prepared" >&2; echo "[test] making the host ready failed" >&2; exit 1; }
  cat "$prepared" >&2
else
  prepare_host
fi

export TESTCONTAINERS_RYUK_DISABLED=true
host_args=("$@")
(($#)) || mapfile -t host_args < <(scripts/test-unit.sh --testpaths host)  # the unit suites ran above
# One group of tests per process at a time, the longest first (tests/conftest.py); the arguments
# given come after these, so `-n 0` runs everything in this process.
parallel=(--numprocesses "${WHARF_HOST_PROCESSES:-4}" --dist loadgroup --no-loadscope-reorder)
.venv/bin/pytest "${parallel[@]}" "${host_args[@]}" || { code=$?; ((status)) || status=$code; }
exit "$status"
