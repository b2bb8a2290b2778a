# shellcheck shell=bash
# Sourced by scripts/compose.sh: choose the base images and export them for compose.
#   WHARF_BASE_IMAGES=official  python:3.13-slim, postgres:17, redis:8, nginx:1.30 (from a registry)
#   WHARF_BASE_IMAGES=local     wharf-local/* built from Debian 13 packages, no registry needed
#   WHARF_BASE_IMAGES=auto      (default) official when a registry answers, else local
#   (plus prom/prometheus, nginx/nginx-prometheus-exporter, prom/alertmanager,
#   prom/blackbox-exporter and prom/node-exporter for the `observability` profile, and a plain
#   Debian 13 image the integration tests build their browser image on)
# Any of PYTHON_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE, NGINX_IMAGE, PROMETHEUS_IMAGE,
# NGINX_EXPORTER_IMAGE, ALERTMANAGER_IMAGE, BLACKBOX_EXPORTER_IMAGE, NODE_EXPORTER_IMAGE,
# DEBIAN_IMAGE set by hand wins.

registry_answers() {
  # Any HTTP answer (401 is the usual one) means the registry is reachable.
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -m 4 "https://${WHARF_REGISTRY_PROBE:-registry-1.docker.io}/v2/" || true)
  [[ $code != 000 && -n $code ]]
}

wharf_base_images=${WHARF_BASE_IMAGES:-auto}
if [[ $wharf_base_images == auto ]]; then
  if registry_answers; then wharf_base_images=official; else wharf_base_images=local; fi
fi
case $wharf_base_images in
  local)
    "$(dirname "${BASH_SOURCE[0]}")/../deploy/images/build-local-bases.sh"
    export PYTHON_IMAGE=${PYTHON_IMAGE:-wharf-local/python:3.13-slim}
    export POSTGRES_IMAGE=${POSTGRES_IMAGE:-wharf-local/postgres:17}
    export REDIS_IMAGE=${REDIS_IMAGE:-wharf-local/redis:8}
    export NGINX_IMAGE=${NGINX_IMAGE:-wharf-local/nginx:stable}
    export PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-wharf-local/prometheus:2}
    export NGINX_EXPORTER_IMAGE=${NGINX_EXPORTER_IMAGE:-wharf-local/nginx-prometheus-exporter:1}
    export ALERTMANAGER_IMAGE=${ALERTMANAGER_IMAGE:-wharf-local/alertmanager:0}
    export BLACKBOX_EXPORTER_IMAGE=${BLACKBOX_EXPORTER_IMAGE:-wharf-local/blackbox-exporter:0}
    export NODE_EXPORTER_IMAGE=${NODE_EXPORTER_IMAGE:-wharf-local/node-exporter:1}
    export DEBIAN_IMAGE=${DEBIAN_IMAGE:-wharf-local/debian:trixie}
    ;;
  official)
    export PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.13-slim}
    export POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:17}
    export REDIS_IMAGE=${REDIS_IMAGE:-redis:8}
    export NGINX_IMAGE=${NGINX_IMAGE:-nginx:1.30}
    export PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.3}
    export NGINX_EXPORTER_IMAGE=${NGINX_EXPORTER_IMAGE:-nginx/nginx-prometheus-exporter:1.4.1}
    export ALERTMANAGER_IMAGE=${ALERTMANAGER_IMAGE:-prom/alertmanager:v0.28.1}
    export BLACKBOX_EXPORTER_IMAGE=${BLACKBOX_EXPORTER_IMAGE:-prom/blackbox-exporter:v0.26.0}
    export NODE_EXPORTER_IMAGE=${NODE_EXPORTER_IMAGE:-prom/node-exporter:v1.9.0}
    export DEBIAN_IMAGE=${DEBIAN_IMAGE:-debian:trixie-slim}
    ;;
  *)
    echo "WHARF_BASE_IMAGES must be auto, official or local (got '$wharf_base_images')" >&2
    exit 2
    ;;
esac
export WHARF_BASE_IMAGES=$wharf_base_images
# A TLS-intercepting proxy's CA reaches pip inside builds as a BuildKit secret (never a layer).
if [[ -z ${EXTRA_CA_FILE:-} && -s /etc/ssl/certs/ca-certificates.crt ]]; then
  export EXTRA_CA_FILE=/etc/ssl/certs/ca-certificates.crt
fi
