#!/usr/bin/env bash
# The test/tooling virtualenv in .venv, from the hash-pinned requirements-dev.lock.
# Rebuilt only when the lock changes. The project's own packages are put on the path with a .pth
# file (no build step, always the working tree's code).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp=$venv/.wharf-lock.sha256
want=$(sha256sum requirements-dev.lock | cut -d' ' -f1)
if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then exit 0; fi
echo "[venv] installing test dependencies into $venv" >&2
python3 -m venv "$venv"
# --no-compile: a module is compiled when first imported, not every module of every package now.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-compile --require-hashes -r requirements-dev.lock
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%s\n' "$PWD/libs/wharf-common/src" "$PWD/services/api/src" "$PWD/services/auth/src" >"$site/wharf-src.pth"
echo "$want" >"$stamp"
