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

# `up --wait [--wait-timeout SECONDS]`: compose itself would wait for Docker's health verdicts, which
# Docker 20.10 gives only one interval (30-60 s) after a container starts; instead every container
# of the services brought up is waited for with its own health check, run at once
# (scripts/ready.sh; docs/operations.md, "Health checks").
if ((i <= $#)); then
  globals=("${@:1:i-1}") up_args=() services=() wait= wait_timeout=300
  set -- "${@:i+1}"
  while (($#)); do
    case $1 in
      --wait) wait=1 ;;
      --wait-timeout) wait_timeout=$2 && shift ;;
      --wait-timeout=*) wait_timeout=${1#*=} ;;
      # `up`'s options that take a value (docker compose up --help, v2.40)
      --attach | --exit-code-from | --no-attach | --pull | --scale | -t | --timeout) up_args+=("$1" "$2") && shift ;;
      -*) up_args+=("$1") ;;
      *) up_args+=("$1") services+=("$1") ;;
    esac
    shift
  done
  if [[ -z $wait ]]; then
    exec docker compose "${globals[@]}" up "${up_args[@]}"
  fi
  docker compose "${globals[@]}" up --detach "${up_args[@]}" || exit
  mapfile -t containers < <(docker compose "${globals[@]}" ps --all --quiet "${services[@]}")
  # shellcheck source=scripts/ready.sh
  source scripts/ready.sh
  wait_ready "$wait_timeout" "${containers[@]}"
  exit
fi
exec docker compose "$@"
