#!/usr/bin/env bash
# Build registry-free drop-in equivalents of the official base images from Debian 13 packages:
#   wharf-local/python:3.13-slim  ~ python:3.13-slim
#   wharf-local/postgres:17       ~ postgres:17
#   wharf-local/redis:8           ~ redis:8
#   wharf-local/nginx:stable      ~ nginx:1.30 (Debian 13's nginx 1.26, without `resolve` in upstreams)
#   wharf-local/prometheus:2      ~ prom/prometheus:v2.53.3 (compose profile `observability`)
#   wharf-local/nginx-prometheus-exporter:1 ~ nginx/nginx-prometheus-exporter:1.4.1 (same profile)
#   wharf-local/alertmanager:0       ~ prom/alertmanager:v0.28.1 (same profile)
#   wharf-local/blackbox-exporter:0  ~ prom/blackbox-exporter:v0.26.0 (same profile)
#   wharf-local/node-exporter:1      ~ prom/node-exporter:v1.9.0 (same profile)
# Each honours the same environment variables, ports, volumes, users and health commands as the
# official image, so compose and the tests do not care which one runs. Idempotent: images that
# already exist are kept (FORCE=1 rebuilds), unless their recipe (deploy/images/<name>/) changed
# since they were built: each image carries the hash of its recipe as a label.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root_image=wharf-local/debian:trixie
force=${FORCE:-0}
built=0

log() { printf '[local-bases] %s\n' "$*" >&2; }
have_image() { [[ $force != 1 ]] && docker image inspect "$1" >/dev/null 2>&1; }
recipe_hash() { (cd "$here/$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }
built_from() {  # tag recipe: the image exists and was built from this recipe
  [[ $force != 1 ]] && [[ $(docker image inspect --format '{{index .Config.Labels "wharf.recipe"}}' "$1" 2>/dev/null) == "$2" ]]
}

# The Debian mirror this machine already uses (deb822 or one-line sources), never a hard-coded host.
debian_mirror() {
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -vE 'security|updates' | grep -E '/debian/?$' | head -n1 || true)
  if [[ -z $uri ]]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '{print $2}' | grep -vE 'security' | grep -E '/debian/?$' | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

build_root_image() {
  have_image "$root_image" && return 0
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  local rootfs mirror
  rootfs=$(mktemp -d /tmp/wharf-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  mirror=$(debian_mirror)
  log "debootstrap trixie (minbase) from $mirror"
  debootstrap --variant=minbase trixie "$rootfs" "$mirror" >/tmp/wharf-debootstrap.log 2>&1 \
    || { tail -n 20 /tmp/wharf-debootstrap.log >&2; exit 1; }
  # Trim what a container never needs.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
         "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  # Keep future apt installs small too.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-wharf-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/01-wharf-norecommends"
  log "importing $root_image"
  built=1
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' - "$root_image" >/dev/null
}

build_one() {  # name tag
  local name=$1 tag=$2 recipe
  recipe=$(recipe_hash "$name")
  built_from "$tag" "$recipe" && return 0
  log "building $tag"
  built=1
  # The classic builder is enough here (no build secrets); its deprecation notice is noise.
  local out
  out=$(docker build --quiet --label "wharf.recipe=$recipe" --build-arg "BASE_IMAGE=$root_image" -t "$tag" "$here/$name" 2>&1) \
    || { printf '%s\n' "$out" >&2; exit 1; }
}

build_root_image
build_one python   wharf-local/python:3.13-slim
build_one postgres wharf-local/postgres:17
build_one redis    wharf-local/redis:8
build_one nginx    wharf-local/nginx:stable
build_one prometheus wharf-local/prometheus:2
build_one nginx-exporter wharf-local/nginx-prometheus-exporter:1
build_one alertmanager wharf-local/alertmanager:0
build_one blackbox-exporter wharf-local/blackbox-exporter:0
build_one node-exporter wharf-local/node-exporter:1
[[ $built == 1 ]] && log "ready: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' 'wharf-local/*' | tr '\n' ' ')"
exit 0
