#!/usr/bin/env bash
# Regenerate the hash-pinned lock files. The dev lock covers every package; each service's lock
# (and the unit suites' and the development mail sink's) is constrained by it, so tests and images run the very same versions.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
common=(--quiet --generate-hashes --universal --python-version 3.11 --no-header --annotation-style line)
"$uv" pip compile "${common[@]}" -o requirements-dev.lock \
  libs/wharf-common/pyproject.toml services/api/pyproject.toml services/auth/pyproject.toml requirements-dev.in \
  deploy/mail-sink/requirements.in
for svc in api auth; do
  "$uv" pip compile "${common[@]}" -c requirements-dev.lock -o "services/$svc/requirements.lock" \
    libs/wharf-common/pyproject.toml "services/$svc/pyproject.toml"
done
# The unit suites' test image (scripts/test-unit.sh): the services' dependencies and the test tools.
"$uv" pip compile "${common[@]}" -c requirements-dev.lock -o tests/requirements-unit.lock \
  libs/wharf-common/pyproject.toml services/api/pyproject.toml services/auth/pyproject.toml tests/requirements-unit.in
# The development mail sink's image (deploy/mail-sink): aiosmtpd and what it needs, nothing else.
"$uv" pip compile "${common[@]}" -c requirements-dev.lock -o deploy/mail-sink/requirements.lock \
  deploy/mail-sink/requirements.in
