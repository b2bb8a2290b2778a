#!/usr/bin/env bash
# Create or update Wharf's Secrets from a directory laid out like compose's secrets directory:
#   postgres/password  auth/{db_password,redis_password,mfa_encryption_key,signing-keys/*.pem}  auth-mail/redis_password
#   [auth-mail/smtp_password]  api/{db_password,redis_password}  redis/users.acl  nginx/{tls.crt,tls.key}
#   backup/repo_cipher_pass  [backup/sftp_key]
# Files missing from DIR are generated first by the same code compose uses
# (python -m wharf_common.devsecrets: random passwords, an Ed25519 key, the Redis ACL derived
# from the passwords, a self-signed certificate for localhost); files already there are kept, so
# production brings its own (the generator replaces a certificate that expires within 30 days).
#
# usage: k8s/secrets.sh [-n NAMESPACE] [--dry-run] DIR
#   --dry-run   print the Secret manifests instead of applying them (they contain the secrets)
# env: KUBECTL (default kubectl), PYTHON (default: the repository's .venv, built if missing)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
namespace=wharf
dry_run=false
while [[ $# -gt 0 ]]; do
  case $1 in
    -n | --namespace) namespace=$2; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[[ $# -eq 1 ]] || { echo "usage: k8s/secrets.sh [-n NAMESPACE] [--dry-run] DIR" >&2; exit 2; }
dir=$1
kubectl=${KUBECTL:-kubectl}
if [[ -z ${PYTHON:-} ]]; then
  "$root/scripts/venv.sh"
  PYTHON=$root/.venv/bin/python
fi

umask 077
"$PYTHON" -m wharf_common.devsecrets "$dir" >&2

# One Secret per consumer, as in compose; each key is a file name in the container.
secret() {
  local type=$1 name=$2
  shift 2
  "$kubectl" create secret "$type" "$name" --namespace "$namespace" --dry-run=client --output yaml "$@"
  echo "---"
}
manifests=$(
  secret generic wharf-postgres --from-file=password="$dir/postgres/password"
  secret generic wharf-auth --from-file=db_password="$dir/auth/db_password" --from-file=redis_password="$dir/auth/redis_password" \
    --from-file=mfa_encryption_key="$dir/auth/mfa_encryption_key"
  secret generic wharf-auth-signing-keys --from-file="$dir/auth/signing-keys/"
  # The mail worker's Redis password, and its SMTP server's password when DIR has one.
  mail=(--from-file=redis_password="$dir/auth-mail/redis_password")
  [[ -f $dir/auth-mail/smtp_password ]] && mail+=(--from-file=smtp_password="$dir/auth-mail/smtp_password")
  secret generic wharf-auth-mail "${mail[@]}"
  secret generic wharf-api --from-file=db_password="$dir/api/db_password" --from-file=redis_password="$dir/api/redis_password"
  secret generic wharf-redis --from-file=users.acl="$dir/redis/users.acl"
  # The backup repositories' passphrase, and the off-host repository's SSH key when DIR has one.
  backup=(--from-file=repo_cipher_pass="$dir/backup/repo_cipher_pass")
  [[ -f $dir/backup/sftp_key ]] && backup+=(--from-file=sftp_key="$dir/backup/sftp_key")
  secret generic wharf-backup "${backup[@]}"
  # type kubernetes.io/tls (keys tls.crt, tls.key): kubectl checks that key and certificate match
  secret tls wharf-nginx --cert="$dir/nginx/tls.crt" --key="$dir/nginx/tls.key"
)
if $dry_run; then
  printf '%s\n' "$manifests"
else
  printf '%s\n' "$manifests" | "$kubectl" apply --filename -
fi
