#!/usr/bin/env bash
# wharf-acme: the edge's certificate, obtained and renewed from an ACME CA (Let's Encrypt unless
# ACME_DIRECTORY names another) with lego over HTTP-01, and installed where nginx reads it on every
# TLS handshake: nginx/tls.crt of the secrets directory, mounted here at /run/secrets/nginx.
#
#   wharf-acme run              the service: a pass at start, then one every 12 hours; after a
#                               failed pass the next one comes 5 minutes later, doubling up to 12 h
#   wharf-acme renew [--force]  one pass now; exit status 0 when the certificate is in place and
#                               current. --force orders a new certificate even when none is due.
#
# A pass orders a certificate when there is none for ACME_DOMAINS (or it is not for the edge's key),
# renews it when fewer than ACME_RENEW_DAYS days are left or the CA's renewal information (ARI, RFC
# 9773) says so, and installs it when it differs from the one nginx serves. The certificate is
# always for the edge's own key, nginx/tls.key (written once by dev-secrets, never replaced here):
# installing is then one atomic rename of tls.crt, and no handshake can read a certificate and a key
# that do not belong together.
set -euo pipefail

state=/var/lib/wharf-acme              # volume `acme`: the ACME account and lego's certificates
webroot=/var/lib/wharf-acme-challenges # volume `acme-challenges`: nginx serves it on /.well-known/acme-challenge/
edge=/run/secrets/nginx                # the secrets directory's nginx/ (read-only in nginx)
edge_url=http://nginx:8080             # nginx's plain listener, as compose names it
check_every=$((12 * 3600))
first_retry=300

log() { printf 'wharf-acme: %s\n' "$*" >&2; }
error() { printf 'wharf-acme: error: %s\n' "$*" >&2; }
fail() {
  printf 'configuration error: %s\n' "$*" >&2
  exit 78
}

# --- Settings -----------------------------------------------------------------------------------
ACME_DIRECTORY=${ACME_DIRECTORY:-https://acme-v02.api.letsencrypt.org/directory}
ACME_RENEW_DAYS=${ACME_RENEW_DAYS:-30}
ACME_EMAIL=${ACME_EMAIL:-}
domains=()

validate_settings() {
  local name names
  IFS=', ' read -ra names <<<"${ACME_DOMAINS:-}"
  for name in "${names[@]}"; do
    [[ -n $name ]] || continue
    name=${name,,}
    [[ $name =~ ^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ && ${#name} -le 253 ]] \
      || fail "ACME_DOMAINS: '$name' is not a host name (HTTP-01 proves a DNS name with a dot, no wildcard, no address)"
    domains+=("$name")
  done
  ((${#domains[@]})) || fail "ACME_DOMAINS is not set (the public host names of the certificate, comma-separated)"
  [[ $ACME_DIRECTORY =~ ^https://[^[:space:]]+$ ]] || fail "ACME_DIRECTORY must be an https:// URL (got '$ACME_DIRECTORY')"
  [[ -z $ACME_EMAIL || $ACME_EMAIL =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]] \
    || fail "ACME_EMAIL is not an email address (got '$ACME_EMAIL')"
  [[ $ACME_RENEW_DAYS =~ ^[1-9][0-9]?$ ]] || fail "ACME_RENEW_DAYS must be a whole number of days from 1 to 99 (got '$ACME_RENEW_DAYS')"
}

# --- Certificates -------------------------------------------------------------------------------
public_key_of_certificate() { openssl x509 -in "$1" -noout -pubkey 2>/dev/null; }
public_key_of_key() { openssl pkey -in "$1" -pubout 2>/dev/null; }
names_of() { openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null | grep -oE 'DNS:[^, ]+' | cut -c5- | sort -u; }
wanted_names() { printf '%s\n' "${domains[@]}" | sort -u; }
describe() { # one line: names, issuer, expiry
  local issuer until
  issuer=$(openssl x509 -in "$1" -noout -issuer -nameopt sep_multiline 2>/dev/null | sed -n 's/^ *CN=//p' | head -n1)
  until=$(openssl x509 -in "$1" -noout -enddate | cut -d= -f2)
  echo "$(names_of "$1" | paste -sd,) from '${issuer:-?}', valid until $until"
}
is_for_edge_key() { [[ $(public_key_of_certificate "$1") == "$(public_key_of_key "$edge/tls.key")" ]]; }
is_for_wanted_names() { [[ $(names_of "$1") == "$(wanted_names)" ]]; }

# nginx reads tls.crt on every new TLS connection: rename a complete copy over it (atomic), so a
# handshake sees either the old file or the new one, both valid for the same key.
install() {
  local certificate=$1 staged
  if ! staged=$(mktemp --suffix=.tmp "$edge/tls.crt.XXXXXX") || ! cp "$certificate" "$staged" \
    || ! chmod 0644 "$staged" || ! mv -f "$staged" "$edge/tls.crt"; then
    rm -f "${staged:-}"
    error "could not write $edge/tls.crt; nginx keeps serving $(describe "$edge/tls.crt")"
    return 1
  fi
  log "installed the certificate for $(describe "$edge/tls.crt"); nginx serves it from the next TLS handshake"
}

# Before asking the CA to look: does nginx serve a file put into the shared challenge directory?
nginx_serves_challenges() {
  local probe answer
  probe=wharf-acme-probe-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
  mkdir -p "$webroot/.well-known/acme-challenge"
  printf '%s' "$probe" >"$webroot/.well-known/acme-challenge/$probe"
  answer=$(curl -sS --max-time 10 "$edge_url/.well-known/acme-challenge/$probe" 2>&1 | head -c 300) || true
  rm -f "$webroot/.well-known/acme-challenge/$probe"
  [[ $answer == "$probe" ]] && return 0
  error "nginx does not serve the shared challenge directory (GET $edge_url/.well-known/acme-challenge/$probe: ${answer:-no answer}); is nginx up with the volume acme-challenges?"
  return 1
}

# Why lego failed, on one line: its last message without a log level (the fatal one, e.g. "Could
# not obtain certificates:") with the lines that follow it: the CA's problem (RFC 8555 error type
# and detail, per host name) or the connection error.
cause_of_failure() {
  local cause
  cause=$(awk '/^[0-9]{4}\/[0-9]{2}\/[0-9]{2} [0-9:]{8} [^[]/ { text = ""; keep = 1 } keep { text = text " " $0 } END { print text }' "$1" \
    | sed -E 's#[0-9]{4}/[0-9]{2}/[0-9]{2} [0-9:]{8} ##; s/(Post|POST) "?https?:[^ ]+ (giving up after [0-9]+ attempt\(s\): )?//g; s/[[:space:]]+/ /g; s/^ //')
  echo "${cause:-$(tail -n1 "$1")}"
}

# lego's account directory for ACME_DIRECTORY's server (lego names it after the host and port).
account_directory() {
  local host=${ACME_DIRECTORY#https://}
  host=${host%%/*}
  echo "$state/accounts/${host//:/_}"
}

run_lego() { # lego's own lines go to the log as they are; its exit status is returned
  local output=$1
  shift
  local args=(--path "$state" --server "$ACME_DIRECTORY" --accept-tos --http --http.webroot "$webroot"
    --user-agent wharf-acme)
  [[ -z $ACME_EMAIL ]] || args+=(--email "$ACME_EMAIL")
  local name
  for name in "${domains[@]}"; do args+=(--domains "$name"); done
  local status=0
  lego "${args[@]}" "$@" >"$output" 2>&1 || status=$?
  sed 's/^/lego: /' "$output" >&2
  return "$status"
}

# One pass; $1 is `force` to order a new certificate whether or not one is due. A subshell, so the
# lock (one pass at a time: the service's and a `wharf-acme renew` run beside it) ends with it.
pass() (
  local certificate=$state/certificates/${domains[0]}.crt output status=0
  exec 9>"$state/.lock"
  flock -w 900 9 || { error "another pass has held $state/.lock for 15 minutes"; return 1; }
  if [[ ! -w $edge ]]; then
    error "cannot write $edge (the secrets directory's nginx/, owned by uid $(stat -c %u "$edge")): dev-secrets gives it to uid $(id -u) on \`make up\`"
    return 1
  fi
  if [[ -z $(public_key_of_key "$edge/tls.key") ]]; then
    error "no private key in $edge/tls.key: \`make up\` writes one (dev-secrets), or put yours there"
    return 1
  fi
  nginx_serves_challenges || return 1
  output=$(mktemp)
  if [[ ${1-} == force || ! -s $certificate ]] || ! is_for_edge_key "$certificate" || ! is_for_wanted_names "$certificate"; then
    log "ordering a certificate for ${domains[*]} from $ACME_DIRECTORY"
    run_lego "$output" run --private-key "$edge/tls.key" || status=$?
  else
    # Our passes are 12 h apart from whenever the container started, so lego's random delay (meant
    # for cron jobs at round hours) is not needed.
    run_lego "$output" renew --days "$ACME_RENEW_DAYS" --reuse-key --no-random-sleep || status=$?
  fi
  # A CA that has forgotten the account (a test CA restarted, a staging CA reset): a new one.
  if ((status != 0)) && grep -q 'accountDoesNotExist' "$output"; then
    log "the CA no longer knows the account in $(account_directory); registering a new one"
    rm -rf "$(account_directory)"
    status=0
    run_lego "$output" run --private-key "$edge/tls.key" || status=$?
  fi
  if ((status != 0)); then
    error "no certificate for ${domains[*]} from $ACME_DIRECTORY: $(cause_of_failure "$output")"
    rm -f "$output"
    if [[ -s $edge/tls.crt ]]; then log "nginx keeps serving $(describe "$edge/tls.crt")"; fi
    return 1
  fi
  rm -f "$output"
  if ! is_for_edge_key "$certificate" || ! is_for_wanted_names "$certificate"; then
    error "lego's certificate $certificate is not for the edge's key and ${domains[*]}; not installed"
    return 1
  fi
  if cmp -s "$certificate" "$edge/tls.crt"; then
    log "current: $(describe "$edge/tls.crt"); renewed when fewer than $ACME_RENEW_DAYS days are left"
  else
    install "$certificate"
  fi
)

# --- Commands -----------------------------------------------------------------------------------
serve() {
  local delay=$first_retry
  trap 'log "stopping"; exit 0' TERM INT
  log "keeping the certificate for ${domains[*]} from $ACME_DIRECTORY; a pass now and every $((check_every / 3600)) h"
  while true; do
    if pass; then
      delay=$first_retry
      sleep "$check_every" &
    else
      log "next attempt in $((delay / 60)) min"
      sleep "$delay" &
      delay=$((delay * 2 > check_every ? check_every : delay * 2))
    fi
    wait $! || true
  done
}

validate_settings
case ${1-run} in
  run) serve ;;
  renew)
    case ${2-} in
      --force) pass force ;;
      "") pass ;;
      *) fail "usage: wharf-acme run | renew [--force]" ;;
    esac
    ;;
  *) fail "usage: wharf-acme run | renew [--force]" ;;
esac
