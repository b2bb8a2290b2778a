#!/usr/bin/env bash
# `make test`: install what the suite needs on a fresh machine (Docker engine, Compose v2, the
# test virtualenv, the pinned kubectl, wrk, the images), then run every suite in one pytest session.
# Extra arguments go to pytest. pytest's own exit code is returned: 5 (no test ran) is a failure
# like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap-docker.sh
scripts/venv.sh
scripts/k8s-tools.sh >/dev/null  # the pinned kubectl/kustomize tests/k8s renders with
scripts/install-wrk.sh  # the short soak's load (tests/integration/test_soak.py)
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh
echo "[test] base images: $WHARF_BASE_IMAGES" >&2
docker compose build --quiet
export TESTCONTAINERS_RYUK_DISABLED=true
exec .venv/bin/pytest "$@"
