#!/usr/bin/env bash
# Render /etc/wharf-nginx/templates/**/*.template into /tmp/nginx with the environment, check the
# result with `nginx -t` (a broken config stops the container here, loudly), then run nginx.
set -euo pipefail
src=/etc/wharf-nginx/templates
out=/tmp/nginx
mkdir -p "$out"/client_body "$out"/proxy "$out"/fastcgi "$out"/uwsgi "$out"/scgi

while IFS= read -r -d '' template; do
  names=$(grep -oE '\$\{[A-Z][A-Z0-9_]*\}' "$template" | sort -u | tr -d '${}' || true)
  for name in $names; do
    if [[ -z ${!name+x} ]]; then
      echo "configuration error: $name is not set (used by ${template#"$src"/})" >&2
      exit 78
    fi
  done
  rel=${template#"$src"/}
  mkdir -p "$(dirname "$out/$rel")"
  # Only the template's own upper-case names are substituted, so nginx's $variables survive.
  envsubst "$(printf '${%s} ' $names)" <"$template" >"$out/${rel%.template}"
done < <(find "$src" -name '*.template' -print0)

nginx -e stderr -c "$out/nginx.conf" -t -q || { echo "nginx: rendered configuration is invalid" >&2; exit 78; }
exec "$@"
