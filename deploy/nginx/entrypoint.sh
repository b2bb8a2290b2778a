#!/usr/bin/env bash
# Render /etc/wharf-nginx/templates/**/*.template into /tmp/nginx with the environment, write the
# upstreams and the trusted-proxy list, check the result with `nginx -t` (a broken config stops
# the container here, loudly, with exit 78), then run nginx.
#
# Replicas that come and go (Docker DNS) are followed without ever reloading nginx: a reload closes
# every idle client keep-alive connection at once, and a client that sends on one at that instant
# sees a reset (a failed request under a rolling deploy). nginx >= 1.27.3 (the official nginx:1.30
# image) re-resolves upstream names itself (`server NAME:PORT resolve`, upstream blocks with
# keepalive pools and failure memory). Older nginx (Debian 13's 1.26 in the registry-free image)
# lacks `resolve`, so there proxy_pass names the service through a variable and nginx resolves it
# when a request needs it (`per-request`: cached NGINX_DNS_INTERVAL seconds, every address tried in
# turn on a refused connection). NGINX_UPSTREAM_DISCOVERY=auto (default) picks one of the two.
# `reload` (Kubernetes, where each name is one Service with a stable ClusterIP) resolves with the
# system resolver at start and re-checks every NGINX_DNS_INTERVAL seconds, reloading only when an
# address changed (a Service re-created).
set -euo pipefail
src=/etc/wharf-nginx/templates
out=/tmp/nginx
conf=$out/nginx.conf
# HTTPS certificate chain and key (tls.conf.template names the same files).
tls_files=(/run/secrets/nginx/tls.crt /run/secrets/nginx/tls.key)

log() { printf 'wharf-nginx: %s\n' "$*" >&2; }
fail() {
  printf 'configuration error: %s\n' "$*" >&2
  exit 78
}

on_off() {
  local name=$1
  [[ ${!name-} == on || ${!name-} == off ]] || fail "$name must be on or off (got '${!name-}')"
}

# --- Defaults, then derived and validated settings ------------------------------------------
# Values are single nginx tokens or short lists, never config syntax.
not_in_values='[;{}"'"'"'\\$#]'
check_value() {
  if [[ ${!1} =~ $not_in_values || ${!1} == *$'\n'* ]]; then
    fail "$1 contains a character not allowed in a setting: '${!1}'"
  fi
}
while IFS='=' read -r name value; do
  [[ $name =~ ^[A-Z][A-Z0-9_]*$ ]] || continue
  if [[ -z ${!name-} ]]; then export "$name=$value"; fi
  check_value "$name"
done </etc/wharf-nginx/defaults.env

on_off NGINX_TLS
on_off NGINX_HTTPS_REDIRECT
on_off NGINX_MAINTENANCE
if [[ $NGINX_HTTPS_REDIRECT == on && $NGINX_TLS != on ]]; then
  fail "NGINX_HTTPS_REDIRECT=on needs NGINX_TLS=on"
fi
[[ ${NGINX_HTTPS_REDIRECT_PORT-} =~ ^[0-9]{1,5}$ ]] || fail "NGINX_HTTPS_REDIRECT_PORT must be a port number"
if [[ $NGINX_HTTPS_REDIRECT_PORT == 443 ]]; then
  export NGINX_HTTPS_REDIRECT_PORT_SUFFIX=""
else
  export NGINX_HTTPS_REDIRECT_PORT_SUFFIX=":$NGINX_HTTPS_REDIRECT_PORT"
fi
[[ ${NGINX_STATUS_PORT-} =~ ^[0-9]{1,5}$ ]] || fail "NGINX_STATUS_PORT must be a port number"
if [[ $NGINX_STATUS_PORT == "${NGINX_PORT-}" || $NGINX_STATUS_PORT == "${NGINX_TLS_PORT-}" ]]; then
  fail "NGINX_STATUS_PORT ($NGINX_STATUS_PORT) must differ from the public ports"
fi
[[ ${NGINX_DNS_INTERVAL-} =~ ^[1-9][0-9]*$ ]] || fail "NGINX_DNS_INTERVAL must be a whole number of seconds"
# The HTTPS listener names its files through variables (read on every handshake, so a replaced
# certificate needs no reload), which `nginx -t` does not load: load the pair once here, so a
# broken or mismatched pair stops the container now rather than failing every handshake.
tls_pair_loads() {
  local check status=0
  check=$(mktemp -d /tmp/wharf-tls-check.XXXXXX)
  printf '%s\n' "pid $check/nginx.pid; events {}" \
    "http { client_body_temp_path $check; proxy_temp_path $check; fastcgi_temp_path $check;" \
    "  uwsgi_temp_path $check; scgi_temp_path $check;" \
    "  server { listen 127.0.0.1:1 ssl; ssl_certificate ${tls_files[0]}; ssl_certificate_key ${tls_files[1]}; } }" \
    >"$check/nginx.conf"
  nginx -e stderr -c "$check/nginx.conf" -t -q || status=$?
  rm -rf "$check"
  return "$status"
}
if [[ $NGINX_TLS == on ]]; then
  for file in "${tls_files[@]}"; do
    [[ -r $file ]] || fail "cannot read '$file' (NGINX_TLS=on needs a certificate and key)"
  done
  tls_pair_loads || fail "nginx cannot use ${tls_files[0]} with ${tls_files[1]} (its message is above)"
fi

nginx_supports_resolve() {
  # `server ... resolve` in upstream blocks is in open-source nginx from 1.27.3.
  local version
  version=$(nginx -v 2>&1 | sed -n 's#.*nginx/\([0-9.]*\).*#\1#p')
  [[ -n $version && $(printf '%s\n' 1.27.3 "$version" | sort -V | head -n1) == 1.27.3 ]]
}

discovery=${NGINX_UPSTREAM_DISCOVERY:-auto}
case $discovery in
  auto) if nginx_supports_resolve; then discovery=resolve; else discovery=per-request; fi ;;
  resolve) nginx_supports_resolve || fail "NGINX_UPSTREAM_DISCOVERY=resolve needs nginx >= 1.27.3 ($(nginx -v 2>&1))" ;;
  per-request | reload) ;;
  *) fail "NGINX_UPSTREAM_DISCOVERY must be auto, resolve, per-request or reload (got '$discovery')" ;;
esac

# --- Templates ----------------------------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out"/client_body "$out"/proxy "$out"/fastcgi "$out"/uwsgi "$out"/scgi "$out"/conf.d

while IFS= read -r -d '' template; do
  rel=${template#"$src"/}
  # A first line `# wharf-render-if: NAME=value` renders the template only when NAME has that value.
  condition=$(sed -n '1s/^# wharf-render-if: \([A-Z][A-Z0-9_]*=.*\)$/\1/p' "$template")
  if [[ -n $condition ]]; then
    condition_name=${condition%%=*}
    [[ ${!condition_name-} == "${condition#*=}" ]] || continue
  fi
  names=$(grep -oE '\$\{[A-Z][A-Z0-9_]*\}' "$template" | sort -u | tr -d '${}' || true)
  for name in $names; do
    if [[ -z ${!name+x} ]]; then
      fail "$name is not set (used by $rel)"
    fi
    check_value "$name"
  done
  mkdir -p "$(dirname "$out/$rel")"
  # Only the template's own upper-case names are substituted, so nginx's $variables survive.
  envsubst "$(printf '${%s} ' $names)" <"$template" >"$out/${rel%.template}"
done < <(find "$src" -name '*.template' -print0)

# `addresses NAME VALUE`: the addresses/CIDRs of the comma-separated setting, one per line;
# anything else stops here.
addresses() {
  local cidr
  for cidr in ${2//,/ }; do
    [[ $cidr =~ ^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$ ]] || fail "$1: '$cidr' is not an address or CIDR"
    echo "$cidr"
  done
}

# --- Trusted proxies (real_ip): none by default, so $remote_addr is the TCP peer ---------------
real_ip_from=$(addresses NGINX_REAL_IP_FROM "${NGINX_REAL_IP_FROM-}")
{
  echo "# Written by wharf-nginx-entrypoint from NGINX_REAL_IP_FROM."
  if [[ -n $real_ip_from ]]; then
    echo "real_ip_header X-Forwarded-For;"
    echo "real_ip_recursive on;"
    # shellcheck disable=SC2086 # split on purpose: one directive per address
    printf 'set_real_ip_from %s;\n' $real_ip_from
  fi
} >"$out/conf.d/realip.conf"

# --- Who may read the status listener (NGINX_STATUS_ALLOW); everyone else is denied ------------
status_allow=$(addresses NGINX_STATUS_ALLOW "$NGINX_STATUS_ALLOW")
{
  echo "# Written by wharf-nginx-entrypoint from NGINX_STATUS_ALLOW."
  # shellcheck disable=SC2086 # split on purpose: one directive per address
  [[ -z $status_allow ]] || printf 'allow %s;\n' $status_allow
  echo "deny all;"
} >"$out/snippets/status-access.conf"

# --- Upstreams ----------------------------------------------------------------------------------
upstream_names=(api auth)
declare -A upstream_targets=([api]=$API_UPSTREAM [auth]=$AUTH_UPSTREAM)
for name in "${upstream_names[@]}"; do
  [[ ${upstream_targets[$name]} =~ ^[A-Za-z0-9.-]+:[0-9]{1,5}$ ]] \
    || fail "${name^^}_UPSTREAM must be HOST:PORT (got '${upstream_targets[$name]}')"
done

is_ip() { [[ $1 =~ ^[0-9.]+$ ]]; }

# A replica that failed once (refused, timed out, answered 502) is skipped for 5 s.
server_options="max_fails=1 fail_timeout=5s"

# Prints upstreams.conf: for each service, the variable proxy_pass names it by ($wharf_api_upstream,
# $wharf_auth_upstream) and, except in `per-request` mode, the upstream block that name means. In
# `reload` mode with the addresses the names resolve to right now; with `--keep-on-failure` (the
# watcher), a name that does not resolve fails the whole render, so a DNS hiccup keeps the last
# known replicas instead of taking them all out of service.
render_upstreams() {
  local name host port ip addresses keep=false
  [[ ${1-} == --keep-on-failure ]] && keep=true
  echo "# Written by wharf-nginx-entrypoint (upstream discovery: $discovery)."
  for name in "${upstream_names[@]}"; do
    host=${upstream_targets[$name]%:*}
    port=${upstream_targets[$name]##*:}
    if [[ $discovery == per-request ]] && ! is_ip "$host"; then
      # No upstream block: proxy_pass resolves HOST through `resolver` (nginx.conf) per request.
      echo "map \"\" \$wharf_${name}_upstream { default $host:$port; }"
      continue
    fi
    echo "map \"\" \$wharf_${name}_upstream { default $name; }"
    echo "upstream $name {"
    echo "    zone upstream_$name 64k;"
    if is_ip "$host"; then
      echo "    server $host:$port $server_options;"
    elif [[ $discovery == resolve ]]; then
      echo "    server $host:$port resolve $server_options;"
    else
      addresses=$(getent ahostsv4 "$host" | awk '{print $1}' | sort -u -V || true)
      if [[ -z $addresses ]]; then
        $keep && return 1
        # No replica right now: a placeholder marked down, so nginx answers 502 until one appears.
        echo "    server 127.0.0.1:$port down;  # $host did not resolve"
      fi
      for ip in $addresses; do
        echo "    server $ip:$port $server_options;  # $host"
      done
    fi
    # Idle connections kept per worker, closed after 1 s: below the 2 s a stopping gunicorn worker
    # keeps its idle connections, so nginx closes one itself before the replica does and never
    # sends a request on a connection being closed.
    echo "    keepalive 16;"
    echo "    keepalive_timeout 1s;"
    echo "}"
  done
}

render_upstreams >"$out/conf.d/upstreams.conf"

nginx -e stderr -c "$conf" -t -q || fail "nginx: rendered configuration is invalid"

watch_upstreams() {
  local current=$out/conf.d/upstreams.conf next=$out/upstreams.next
  while sleep "$NGINX_DNS_INTERVAL"; do
    render_upstreams --keep-on-failure >"$next" 2>/dev/null || continue
    cmp -s "$next" "$current" && continue
    cp "$current" "$out/upstreams.previous"
    mv "$next" "$current"
    if nginx -e stderr -c "$conf" -t -q && nginx -e stderr -c "$conf" -s reload; then
      log "upstream addresses changed, reloaded: $(grep -oE 'server [0-9.:]+( down)?' "$current" | cut -d' ' -f2- | paste -sd' ')"
    else
      log "upstream addresses changed but the new configuration was refused; keeping the old one"
      mv "$out/upstreams.previous" "$current"
    fi
  done
}

case "${1-}:$discovery" in
  nginx:reload)
    # The watcher runs beside nginx (it becomes a child of nginx, which stays PID 1).
    needs_watch=false
    for name in "${upstream_names[@]}"; do
      is_ip "${upstream_targets[$name]%:*}" || needs_watch=true
    done
    if $needs_watch; then
      log "upstream discovery: re-resolving every ${NGINX_DNS_INTERVAL}s, reload on change ($(nginx -v 2>&1))"
      watch_upstreams </dev/null &
    fi
    ;;
  nginx:resolve) log "upstream discovery: nginx re-resolves upstream names itself ($(nginx -v 2>&1))" ;;
  nginx:per-request) log "upstream discovery: names resolved per request, cached ${NGINX_DNS_INTERVAL}s ($(nginx -v 2>&1))" ;;
esac
exec "$@"
