#!/usr/bin/env bash
# Readiness, decided now: each container's own health check, run at once by `docker exec` exactly as
# Docker runs it, instead of waiting for Docker's verdict. Docker 20.10 (Debian 12's) runs a
# container's first health check one interval after it starts (it has no `start_interval`), and
# the intervals are long on purpose (30-60 s: every check is an exec through dockerd, containerd
# and runc; docs/operations.md, "Health checks"), so waiting for Docker would make every start wait
# that long. Docker's own checks go on as configured and `docker compose ps` shows their verdict
# (`health: starting` until the first one).
#
#   scripts/ready.sh [--timeout SECONDS] CONTAINER...   exit 0 once every container is ready
#
# Ready: running and its health check passes (or it has none); a one-shot (restart "no") that
# exited 0. A container that exited otherwise, restarts or is gone fails at once. Sourced by
# scripts/compose.sh (`up --wait`) and scripts/why-down.sh for health_check_now and wait_ready
# (both safe under `set -e`).

# health_check_now CONTAINER: run its health check once, within its timeout; 0 passed, 1 failed,
# 2 it has none. What the check printed is in $health_output.
health_check_now() {
  local container=$1 timeout test=()
  health_output=
  mapfile -d '' test < <(docker inspect -f '{{range .Config.Healthcheck.Test}}{{.}}{{"\x00"}}{{end}}' "$container" 2>/dev/null)
  if [[ ${test[-1]-} == $'\n' ]]; then unset 'test[-1]'; fi  # the newline docker inspect ends with
  timeout=$(docker inspect -f '{{with .Config.Healthcheck}}{{printf "%.0f" .Timeout.Seconds}}{{end}}' "$container" 2>/dev/null)
  [[ -n $timeout && $timeout != 0 ]] || timeout=30  # Docker's default
  case ${test[0]-} in
    CMD) health_output=$(timeout "$timeout" docker exec "$container" "${test[@]:1}" 2>&1) ;;
    CMD-SHELL) health_output=$(timeout "$timeout" docker exec "$container" /bin/sh -c "${test[1]}" 2>&1) ;;
    *) return 2 ;;  # none, or NONE
  esac || return 1
}

# wait_ready SECONDS CONTAINER...: until each container is ready (see above), within SECONDS in all.
# Prints what failed to stderr.
wait_ready() {
  local deadline=$((SECONDS + $1)) id name state code restart status pending=("${@:2}") next
  while ((${#pending[@]})); do
    next=()
    while read -r id name state code restart; do
      name=${name#/}
      case $state in
        running)
          status=0
          health_check_now "$id" || status=$?
          ((status != 1)) || next+=("$id")
          ;;
        exited)
          [[ $code == 0 && $restart == no ]] && continue
          echo "$name exited with code $code" >&2
          return 1
          ;;
        created) next+=("$id") ;;
        gone)
          echo "a container was removed while it was awaited" >&2
          return 1
          ;;
        *)
          echo "$name is $state" >&2
          return 1
          ;;
      esac
    done < <(docker inspect -f '{{.Id}} {{.Name}} {{.State.Status}} {{.State.ExitCode}} {{.HostConfig.RestartPolicy.Name}}' \
      "${pending[@]}" 2>/dev/null || echo "- - gone - -")
    pending=("${next[@]}")
    ((${#pending[@]})) || return 0
    if ((SECONDS >= deadline)); then
      for id in "${pending[@]}"; do
        health_check_now "$id" || true
        echo "$(docker inspect -f '{{.Name}}' "$id" | tr -d /): not ready within $1 s${health_output:+: $health_output}" >&2
      done
      return 1
    fi
    sleep 0.5
  done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  set -uo pipefail
  seconds=120
  if [[ ${1-} == --timeout ]]; then
    seconds=$2
    shift 2
  fi
  (($#)) || { echo "usage: scripts/ready.sh [--timeout SECONDS] CONTAINER..." >&2; exit 2; }
  wait_ready "$seconds" "$@"
fi
