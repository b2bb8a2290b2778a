#!/usr/bin/env bash
# The backup verbs of the Makefile, on the compose project (pgBackRest in the backup service and the
# backup-restore one-shot; deploy/backup/wharf-backup.sh does the work inside them):
#   scripts/backup.sh backup [full|diff|incr]   a backup now (default diff: a full one when none exists)
#   scripts/backup.sh list                      the backups and the restorable window
#   scripts/backup.sh verify                    restore the newest backup into scratch and check it
#   scripts/backup.sh restore                   the newest state; AT="<time with offset>" or LABEL=<label>
# A restore stops api, auth, auth-mail and backup, restores beside the current data, recovers and
# promotes, runs the migrations, clears the api cache and starts everything again. Bad input is
# refused before anything stops.
set -euo pipefail
cd "$(dirname "$0")/.."

compose() { scripts/compose.sh "$@"; }
# A step whose chatter (compose's progress lines) is shown only when it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}
running() { [[ -n $(compose ps --status running --quiet "$1" 2>/dev/null) ]]; }
oneshot() { compose run --rm --no-deps -T backup-restore "$@"; }  # its entrypoint is wharf-backup
# In the backup service when it runs (it reaches postgres's socket), else in the one-shot.
in_backup() {
  if running backup; then compose exec -T backup wharf-backup "$@"; else oneshot "$@"; fi
}

restore() {
  local -a target=()
  [[ -z ${AT:-} ]] || target+=(--at "$AT")
  [[ -z ${LABEL:-} ]] || target+=(--label "$LABEL")
  local started
  started=$(date +%s)
  # Checked against the repository first: bad input ends here with one line, nothing stopped.
  in_backup check-target "${target[@]}" >/dev/null
  echo "restore: stopping api, auth, auth-mail, backup and postgres"
  quiet compose stop api auth auth-mail backup
  quiet compose stop postgres
  if ! oneshot restore "${target[@]}"; then
    echo "restore: starting the stack again on the data it had" >&2
    quiet compose up --detach --wait --wait-timeout 300 || true
    exit 1
  fi
  quiet compose up --detach --wait --wait-timeout 300 postgres
  echo "restore: migrations check (auth-migrate, api-migrate)"
  if ! quiet compose run --rm auth-migrate || ! quiet compose run --rm api-migrate; then
    echo "restore failed at the migrations check: putting the data from before the restore back" >&2
    quiet compose stop postgres
    oneshot restore-rollback
    quiet compose up --detach --wait --wait-timeout 300 || true
    echo "the stack runs on its data from before the restore; see the migration error above" >&2
    exit 1
  fi
  compose exec -T postgres wharf-backup restore-finish
  quiet compose run --rm --no-deps api flask cache-clear
  quiet compose up --detach --wait --wait-timeout 300 \
    || { echo "restore: the data is restored but the stack did not come up healthy (make ps)" >&2; exit 1; }
  local what=${AT:+to $AT}
  what=${what:-${LABEL:+to backup $LABEL}}
  echo "restored ${what:-to the newest archived state} in $(($(date +%s) - started)) s; the stack is up"
}

verb=${1-}
shift || true
case $verb in
  backup)
    running backup || { echo "the backup service is not running: make up first" >&2; exit 1; }
    compose exec -T backup wharf-backup backup "${1:-diff}"
    ;;
  list) in_backup list ;;
  verify)
    running backup || { echo "the backup service is not running: make up first" >&2; exit 1; }
    compose exec -T backup wharf-backup verify
    ;;
  restore) restore ;;
  *) echo "usage: scripts/backup.sh backup [full|diff|incr] | list | verify | restore (AT=... or LABEL=...)" >&2; exit 2 ;;
esac
