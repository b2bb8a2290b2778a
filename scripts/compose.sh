#!/usr/bin/env bash
# `docker compose` for this repository, with the base images chosen (see base-images.sh) and the
# secrets directory tracked.
#
# Compose mounts the secrets directory's files by path and never notices when they change, nor
# when another clone's `make up` points the same project at another directory. So the directory
# is resolved to an absolute path, and every container that reads secrets carries the label
# `wharf.secrets` (WHARF_SECRETS_STAMP): a digest of that path and of the files' contents. Another
# clone, a regenerated or a replaced secret changes it, and `up` recreates those containers, so
# each starts with the files as they are now (postgres then sets its superuser password from its
# file, deploy/postgres/entrypoint.sh). Signing keys and the edge's certificate and key are left
# out: auth and nginx read them live (`make rotate-keys` and a renewed certificate restart nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh

# Relative to deploy/compose/ when relative, as compose resolves it there.
secrets_dir=${WHARF_SECRETS_DIR:-./secrets}
[[ $secrets_dir == /* ]] || secrets_dir=$PWD/deploy/compose/$secrets_dir
mkdir -p "$secrets_dir"/{postgres,auth,auth-mail,api,redis,nginx,alertmanager,backup}  # a deleted directory is made again
WHARF_SECRETS_DIR=$(cd "$secrets_dir" && pwd)
export WHARF_SECRETS_DIR

secrets_stamp() {
  {
    echo "$WHARF_SECRETS_DIR"
    (cd "$WHARF_SECRETS_DIR" && find . -type f ! -name .gitignore ! -name '*.tmp' ! -path './auth/signing-keys/*' \
      ! -path ./nginx/tls.crt ! -path ./nginx/tls.key \
      -print0 | sort -z | xargs -0r sha256sum 2>/dev/null) || true
  } | sha256sum | cut -c1-16
}

# `up` generates missing secrets first (the dev-secrets one-shot, as `up` itself would), so the
# containers are created with the stamp of the files they will run with.
for ((i = 1; i <= $#; i++)); do [[ ${!i} == up ]] && break; done
if ((i <= $#)) && [[ ! -s $WHARF_SECRETS_DIR/postgres/password ]]; then
  docker compose "${@:1:i-1}" run --rm --no-deps --quiet-pull dev-secrets >&2
fi
WHARF_SECRETS_STAMP=$(secrets_stamp)
export WHARF_SECRETS_STAMP
exec docker compose "$@"
