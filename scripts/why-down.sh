#!/usr/bin/env bash
# After a failed `make up` / `make deploy`: one line per container of the project that exited with
# an error, keeps restarting or is unhealthy, with what it said: its `configuration error: ...`
# line (every Wharf container states the cause and the fix that way), else its last log line.
# Arguments go to compose before `ps` (e.g. -p PROJECT).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
# shellcheck source=scripts/ready.sh
source scripts/ready.sh
found=0
while read -r name service state code health; do
  case $state:$code:$health in
    exited:0:* | running:*:healthy | running:*: | created:*) continue ;;  # fine, or never started
  esac
  # Docker has not run its first check yet (one interval after start): run it now.
  if [[ $state:$health == running:starting ]] && health_check_now "$name"; then continue; fi
  logs=$(docker logs --tail 200 "$name" 2>&1)
  line=$(grep -E '^configuration error: ' <<<"$logs" | tail -n1)
  [[ -n $line ]] || line="$state (exit $code${health:+, $health}): $(grep -v '^\s*$' <<<"$logs" | tail -n1)"
  echo "$service: $line"
  found=1
done < <(scripts/compose.sh "$@" ps --all --format '{{.Name}} {{.Service}} {{.State}} {{.ExitCode}} {{.Health}}' 2>/dev/null)
((found)) || echo "no container failed; see scripts/compose.sh logs"
