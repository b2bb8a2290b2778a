#!/usr/bin/env bash
# `make deploy` / `make rollback`: a new version of api and auth on one host without a failed request.
#   deploy    build the api and auth images, run db-init and both migrations (expand-then-contract,
#             README: the running release keeps working on the new schema), then replace the
#             replicas of auth, then of api, one at a time.
#   rollback  the images that ran before the last deploy, the same way; the schema stays as it is
#             (the previous release runs on it, and its migration step leaves it alone).
# One at a time: one replica of the new image starts beside the old ones; once it is healthy and
# nginx has answered a request with it (nginx follows Docker's DNS: deploy/nginx/README.md,
# Replicas), one old replica is stopped: on SIGTERM it refuses new connections at once, which
# nginx retries on another replica (nothing was sent), and finishes what it took. Then the next.
# The images that ran before are kept as <image>-previous; a second rollback goes forward again.
# nginx itself is not replaced (one container owns the published ports): `make up` does that.
# Extra arguments go to compose (e.g. -p PROJECT); COMPOSE_PROJECT_NAME works too.
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1-}
[[ $action == deploy || $action == rollback ]] || { echo "usage: scripts/deploy.sh deploy|rollback [compose args]" >&2; exit 2; }
shift
# Chosen once (base-images.sh probes the registry), then every compose call below reuses it.
# shellcheck source=scripts/base-images.sh
source scripts/base-images.sh
SERVICES=(auth api)
DRAIN_SECONDS=30  # compose's stop_grace_period of api and auth

log() { printf '[%s] %s\n' "$action" "$*" >&2; }
die() { printf '%s: %s\n' "$action" "$*" >&2; exit 1; }
compose() { scripts/compose.sh "$@"; }
image_of() { echo "${WHARF_IMAGE_PREFIX:-wharf}/$1:${WHARF_TAG:-dev}"; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }
containers() { compose "$@" ps --quiet "${service:?}" 2>/dev/null; }
# The first line of its input, read to the end. Not `head -n1`: head exits after one line,
# compose's next write then fails (EPIPE) and it exits 255, which pipefail makes the script's silent
# exit status (3 runs of the deploy test in 13 here).
first_line() { sed -n 1p; }
backend_address() {  # the container's address on the project's backend network (the one nginx uses)
  docker inspect -f '{{range $n, $v := .NetworkSettings.Networks}}{{$n}} {{$v.IPAddress}}{{"\n"}}{{end}}' "$1" \
    | awk '$1 ~ /_backend$/ {print $2}'
}

# Whether nginx has answered a request for $service with the replica at ADDRESS (within 60 s):
# requests for /<service>/healthz sent through nginx from inside its container, then its access
# log (written at least every second) read for a 200 from that upstream.
routed() {
  local address=$1 nginx since deadline=$((SECONDS + 60)) i answered=
  nginx=$(service=nginx containers "${compose_args[@]}" | first_line)
  [[ -n $nginx ]] || die "no nginx container runs: start the stack with make up"
  since=$(date +%s)
  while ((SECONDS < deadline)); do
    for ((i = 0; i < 8; i++)); do
      docker exec "$nginx" bash -c "exec wharf-healthcheck \"\$NGINX_PORT\" /$service/healthz" >/dev/null 2>&1 || true
    done
    sleep 1.5
    answered=$(docker logs --since "$since" "$nginx" 2>/dev/null | grep -F "\"path\":\"/$service/healthz\"" \
      | grep -oE '"upstream_addr":"[^"]*","upstream_status":"[^"]*"' | sort | uniq -c || true)
    [[ $answered != *"\"upstream_addr\":\"$address:8000\",\"upstream_status\":\"200\""* ]] || return 0
  done
  log "$service: nginx answered /$service/healthz with: $(tr -s " \n" " " <<<"$answered")"
  return 1
}

# Replace every replica of $service that does not run ${target[$service]} by one that does.
roll() {
  local want=${target[$service]} old victim before new address count replaced=0
  mapfile -t old < <(containers "${compose_args[@]}")
  count=${#old[@]}
  ((count > 0)) || die "$service: no replica runs: start the stack with make up"
  for victim in "${old[@]}"; do
    [[ $(docker inspect -f '{{.Image}}' "$victim") != "$want" ]] || continue
    before=$(containers "${compose_args[@]}" | sort)
    compose "${compose_args[@]}" up --detach --no-deps --no-recreate --wait --wait-timeout 120 \
      --scale "$service=$((count + 1))" "$service" >/dev/null 2>&1 \
      || die "$service: a replica of the new image did not become healthy; the old ones still serve (scripts/why-down.sh)"
    new=$(comm -13 <(echo "$before") <(containers "${compose_args[@]}" | sort) | first_line)
    [[ -n $new ]] || die "$service: compose started no new replica"
    address=$(backend_address "$new")
    if ! routed "$address"; then
      docker rm --force "$new" >/dev/null
      die "$service: nginx did not route to the new replica ($address) within 60 s; removed it, the old ones still serve"
    fi
    log "$service: $(docker inspect -f '{{.Name}}' "$new" | tr -d /) ($address) healthy and routed;" \
      "stopping $(docker inspect -f '{{.Name}}' "$victim" | tr -d /)"
    docker stop --time "$DRAIN_SECONDS" "$victim" >/dev/null
    docker rm "$victim" >/dev/null
    replaced=$((replaced + 1))
  done
  if ((replaced)); then
    log "$service: every replica runs ${want:7:12} ($replaced replaced)"
  else
    log "$service: unchanged (every replica runs ${want:7:12})"
  fi
}

compose_args=("$@")
declare -A running target
for service in "${SERVICES[@]}"; do
  first=$(containers "${compose_args[@]}" | first_line) || die "$service: docker compose ps failed (scripts/compose.sh ps $service)"
  [[ -n $first ]] || die "$service: no replica runs: start the stack with make up"
  running[$service]=$(docker inspect -f '{{.Image}}' "$first")
done

if [[ $action == deploy ]]; then
  log "building $(image_of auth) and $(image_of api)"
  compose "${compose_args[@]}" build --quiet dev-secrets api-migrate  # the services that build those images
  log "roles and migrations (the running release keeps serving on the new schema)"
  for oneshot in db-init auth-migrate api-migrate; do
    compose "${compose_args[@]}" run --rm --no-deps "$oneshot" >/dev/null \
      || die "$oneshot failed: nothing was replaced ($(compose "${compose_args[@]}" logs --no-log-prefix --tail 1 "$oneshot" 2>&1))"
  done
  for service in "${SERVICES[@]}"; do
    target[$service]=$(image_id "$(image_of "$service")")
    # What ran before, for make rollback (not when a deploy that stopped half-way is run again).
    [[ ${target[$service]} == "${running[$service]}" ]] || docker tag "${running[$service]}" "$(image_of "$service")-previous"
  done
else
  for service in "${SERVICES[@]}"; do
    target[$service]=$(image_id "$(image_of "$service")-previous") \
      || die "$service: no previous image ($(image_of "$service")-previous): nothing to roll back to"
  done
  # Compose starts replicas from the image's tag: it names the previous images while they roll
  # out; if that stops half-way, the tags go back, so `make rollback` again finishes the job.
  swap_tags() {
    local service current
    for service in "${SERVICES[@]}"; do
      current=$(image_id "$(image_of "$service")")
      docker tag "$(image_id "$(image_of "$service")-previous")" "$(image_of "$service")"
      docker tag "$current" "$(image_of "$service")-previous"
    done
  }
  swap_tags
  trap 'swap_tags' EXIT
fi

for service in "${SERVICES[@]}"; do
  roll
done
trap - EXIT
log "done"
