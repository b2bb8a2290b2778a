#!/usr/bin/env bash
# `docker compose` for this repository, with the base images chosen (see base-images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh
exec docker compose "$@"
