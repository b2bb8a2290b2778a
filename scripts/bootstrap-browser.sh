#!/usr/bin/env bash
# Make sure Debian's Chromium and its chromedriver are installed: the integration tests of the
# account pages drive them headless with Selenium (tests/integration/test_account_pages.py). Debian's
# packages, not a browser download. Idempotent: does nothing when both are there.
set -euo pipefail

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
printf '[bootstrap] installing chromium and chromium-driver from Debian\n' >&2
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
