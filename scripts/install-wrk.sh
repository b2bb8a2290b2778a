#!/usr/bin/env bash
# wrk (the HTTP load generator `make bench`, `make soak` and the short soak of `make test` drive the
# stack with) from Debian, when it is missing.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
echo "[wrk] installing wrk from Debian" >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
