#!/usr/bin/env bash
# `make bench`: install what the benchmark needs (Docker engine, Compose v2, the tooling virtualenv,
# wrk from Debian), then run the driver (bench/__main__.py). BENCH_* variables tune it (bench/README.md).
# `scripts/bench.sh workers [MODEL...]` runs the worker-model sweep instead (bench/workers.py), `idle`
# the stack's CPU at rest alone (bench/footprint.py), `soak` memory under a long load (bench/soak.py),
# `ab TAG_A TAG_B [SCENARIO...]` an interleaved A/B of two builds (bench/ab.py).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap-docker.sh
scripts/venv.sh
scripts/install-wrk.sh
export WHARF_TAG=${WHARF_TAG:-dev}
case ${1:-} in
  workers) exec .venv/bin/python -m bench.workers "${@:2}" ;;
  idle) exec .venv/bin/python -m bench.footprint ;;
  soak) exec .venv/bin/python -m bench.soak ;;
  ab) exec .venv/bin/python -m bench.ab "${@:2}" ;;
esac
exec .venv/bin/python -m bench "$@"
