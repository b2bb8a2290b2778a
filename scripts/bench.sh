#!/usr/bin/env bash
# `make bench`: install what the benchmark needs (Docker engine, Compose v2, the tooling virtualenv,
# wrk from Debian), then run the driver (bench/__main__.py). BENCH_* variables tune it (bench/README.md).
# `scripts/bench.sh workers [MODEL...]` runs the worker-model sweep instead (bench/workers.py),
# `scripts/bench.sh ab TAG_A TAG_B [SCENARIO...]` an interleaved A/B of two builds (bench/ab.py).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

scripts/bootstrap-docker.sh
scripts/venv.sh
if ! command -v wrk >/dev/null 2>&1; then
  echo "[bench] installing wrk from Debian" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
fi
export WHARF_TAG=${WHARF_TAG:-dev}
if [[ ${1:-} == workers ]]; then exec .venv/bin/python -m bench.workers "${@:2}"; fi
if [[ ${1:-} == ab ]]; then exec .venv/bin/python -m bench.ab "${@:2}"; fi
exec .venv/bin/python -m bench "$@"
