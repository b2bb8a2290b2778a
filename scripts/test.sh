#!/usr/bin/env bash
# `make test`: install what the suite needs on a fresh machine (Docker engine, Compose v2, the
# test virtualenv, the pinned kubectl, wrk, Debian's Chromium and chromedriver, the images), then run
# every suite: the unit suites (every test under libs/ and services/) on the images' interpreter in
# parallel (scripts/test-unit.sh), then all the others in one pytest session on the host (the
# composed stack, Kubernetes, the docs, the pages in a browser).
# Both run, and the first failure's exit code is returned: pytest's 5 (no test ran) is a failure
# like any other.
# With arguments, only the host's session runs, with those arguments (e.g. tests/integration).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap-docker.sh
status=0
if (($# == 0)); then
  scripts/test-unit.sh || status=$?
fi
scripts/venv.sh
scripts/bootstrap-browser.sh
scripts/k8s-tools.sh >/dev/null  # the pinned kubectl/kustomize tests/k8s renders with
scripts/install-wrk.sh  # the short soak's load (tests/integration/test_soak.py)
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh
echo "[test] base images: $WHARF_BASE_IMAGES" >&2
docker compose build --quiet
export TESTCONTAINERS_RYUK_DISABLED=true
host_args=("$@")
(($#)) || mapfile -t host_args < <(scripts/test-unit.sh --testpaths host)  # the unit suites ran above
.venv/bin/pytest "${host_args[@]}" || { code=$?; ((status)) || status=$code; }
exit "$status"
