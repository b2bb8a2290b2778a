#!/usr/bin/env bash
# wharf-backup: Wharf's backups on pgBackRest, for the postgres container (archive_command), the
# `backup` service (schedules, metrics) and the one-shots behind make backup, backups, restore and
# backup-verify (scripts/backup.sh runs those on the host). pgBackRest does the work; this script
# turns Wharf's settings (docs/operations.md, "Backups") into pgBackRest's environment, reads its
# JSON, and runs the steps around a restore and a verification.
#
#   wharf-backup serve                    the backup service: stanza, schedules (snooze), metrics (busybox httpd),
#                                         archiving watch (wake_archiving)
#   wharf-backup serve-metrics            the metrics server and the archiving watch (Kubernetes, where CronJobs
#                                         hold the schedules)
#   wharf-backup backup [full|diff|incr] [REPO...]  a backup now into every repository (or those); prints label and size
#   wharf-backup list                     the backups, the restorable window, the newest archived WAL
#   wharf-backup check-target [--at T | --label L]   validate a restore target; touches nothing
#   wharf-backup restore [--at T | --label L]        (postgres stopped) restore beside the old data, recover, swap
#   wharf-backup restore-finish | restore-rollback   drop the kept old data / put it back
#   wharf-backup verify                   restore the newest backup into scratch, start it, check it, drop it
#   wharf-backup metrics                  Prometheus text format (the metrics CGI)
#   wharf-backup pgbackrest ARGS...       pgBackRest itself, configured (postgres's archive_command and
#                                         restore_command: pgBackRest insists on seeing its name there)
set -Eeuo pipefail

STANZA=wharf
PGDATA=${PGDATA:-/var/lib/postgresql/data}
SOCKET_DIR=${BACKUP_PG_SOCKET_DIR:-/var/run/postgresql}
REPO_PATH=${BACKUP_REPO_PATH:-/var/lib/pgbackrest}
STATE_DIR=$REPO_PATH/wharf  # verification results, beside the repository they speak of
SCRATCH_DIR=${BACKUP_SCRATCH_DIR:-/var/lib/wharf-backup/scratch}
WEB_DIR=/usr/local/share/wharf-backup
METRICS_PORT=${BACKUP_METRICS_PORT:-9000}
RECOVERY_TIMEOUT=${BACKUP_RECOVERY_TIMEOUT_SECONDS:-3600}
KEPT_PREFIX=.wharf-before-restore-
NEW_PREFIX=.wharf-restoring-

fail_config() {
  printf 'configuration error: %s\n' "$*" >&2
  exit 78
}
# Bad input to a verb: one line, exit 2, nothing touched.
refuse() {
  printf 'refused: %s\n' "$*" >&2
  exit 2
}
say() { printf 'wharf-backup: %s\n' "$*" >&2; }

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# A five-field cron expression (minute hour day-of-month month day-of-week) as snooze's options.
snooze_args() {
  local -a fields
  read -r -a fields <<<"$1"
  ((${#fields[@]} == 5)) || return 1
  printf '%s\n' "-M${fields[0]}" "-H${fields[1]}" "-d${fields[2]}" "-m${fields[3]}" "-w${fields[4]}"
}

check_schedule() {  # NAME VALUE ("off": never)
  [[ $2 == off ]] && return 0
  local -a args
  mapfile -t args < <(snooze_args "$2")
  ((${#args[@]} == 5)) \
    || fail_config "$1 must be 'off' or a cron expression of five fields (minute hour day month weekday), got '$2'"
  snooze -n "${args[@]}" true >/dev/null 2>&1 || fail_config "$1 is not a valid schedule: '$2'"
}

# Wharf's settings -> pgBackRest's environment (it reads PGBACKREST_<OPTION>), validated.
configure() {
  local pass_file=${BACKUP_CIPHER_PASS_FILE:-/run/secrets/backup/repo_cipher_pass} pass
  [[ -r $pass_file ]] || fail_config "cannot read BACKUP_CIPHER_PASS_FILE ($pass_file): run make up, which generates it, or put the repository's passphrase there"
  pass=$(<"$pass_file")
  pass=${pass//[[:space:]]/}
  ((${#pass} >= 20)) || fail_config "BACKUP_CIPHER_PASS_FILE ($pass_file) must hold a passphrase of at least 20 characters"
  local retention=${BACKUP_RETENTION_FULL:-2}
  is_uint "$retention" && ((retention >= 1)) || fail_config "BACKUP_RETENTION_FULL must be a whole number >= 1, got '$retention'"
  export PGBACKREST_STANZA=$STANZA PGBACKREST_PG1_PATH=$PGDATA PGBACKREST_PG1_SOCKET_PATH=$SOCKET_DIR \
    PGBACKREST_PG1_USER=postgres PGBACKREST_REPO1_PATH=$REPO_PATH \
    PGBACKREST_REPO1_CIPHER_TYPE=aes-256-cbc PGBACKREST_REPO1_CIPHER_PASS=$pass \
    PGBACKREST_REPO1_RETENTION_FULL=$retention \
    PGBACKREST_LOCK_PATH=$REPO_PATH/lock PGBACKREST_LOG_LEVEL_FILE=off \
    PGBACKREST_LOG_LEVEL_CONSOLE=${PGBACKREST_LOG_LEVEL_CONSOLE:-warn} PGBACKREST_LOG_LEVEL_STDERR=off \
    PGBACKREST_COMPRESS_TYPE=zst PGBACKREST_START_FAST=y PGBACKREST_PROCESS_MAX=${BACKUP_PROCESS_MAX:-1}
  [[ -n ${BACKUP_SFTP_HOST:-} ]] && configure_sftp "$pass" "$retention"
  return 0
}

# The second, off-host repository (repo2) on an SFTP server, when BACKUP_SFTP_HOST is set.
configure_sftp() {  # PASS RETENTION
  local key=${BACKUP_SFTP_KEY_FILE:-/run/secrets/backup/sftp_key} port=${BACKUP_SFTP_PORT:-22}
  local print=${BACKUP_SFTP_HOST_FINGERPRINT:-}
  [[ -n ${BACKUP_SFTP_USER:-} ]] || fail_config "BACKUP_SFTP_USER is required when BACKUP_SFTP_HOST is set"
  [[ -r $key ]] || fail_config "cannot read BACKUP_SFTP_KEY_FILE ($key): the private key that logs in to $BACKUP_SFTP_HOST"
  is_uint "$port" || fail_config "BACKUP_SFTP_PORT must be a port number, got '$port'"
  [[ $print =~ ^[0-9a-f]{64}$ ]] \
    || fail_config "BACKUP_SFTP_HOST_FINGERPRINT must be the SHA-256 of the server's host key, 64 hex digits (docs/operations.md shows how to get it)"
  export PGBACKREST_REPO2_TYPE=sftp PGBACKREST_REPO2_PATH=${BACKUP_SFTP_PATH:-/wharf-backups} \
    PGBACKREST_REPO2_SFTP_HOST=$BACKUP_SFTP_HOST PGBACKREST_REPO2_SFTP_HOST_PORT=$port \
    PGBACKREST_REPO2_SFTP_HOST_USER=$BACKUP_SFTP_USER PGBACKREST_REPO2_SFTP_PRIVATE_KEY_FILE=$key \
    PGBACKREST_REPO2_SFTP_HOST_KEY_CHECK_TYPE=fingerprint PGBACKREST_REPO2_SFTP_HOST_KEY_HASH_TYPE=sha256 \
    PGBACKREST_REPO2_SFTP_HOST_FINGERPRINT=$print \
    PGBACKREST_REPO2_CIPHER_TYPE=aes-256-cbc PGBACKREST_REPO2_CIPHER_PASS=$1 \
    PGBACKREST_REPO2_RETENTION_FULL=${BACKUP_SFTP_RETENTION_FULL:-$2}
}

repos() { if [[ -n ${PGBACKREST_REPO2_TYPE:-} ]]; then echo 1 2; else echo 1; fi; }

psql_live() { psql -X -q -h "$SOCKET_DIR" -U postgres -d wharf -v ON_ERROR_STOP=1 -tA "$@"; }

info_json() { pgbackrest info --output=json; }

# --- the service -----------------------------------------------------------------------------

schedule_loop() {  # NAME CRON COMMAND...: run COMMAND at every time CRON names, forever
  local name=$1 cron=$2 args
  shift 2
  mapfile -t args < <(snooze_args "$cron")
  while :; do
    snooze "${args[@]}" true
    say "scheduled $name starts"
    "$@" || say "scheduled $name failed (exit $?)"
  done
}

# PostgreSQL's checkpointer forces archive_timeout's segment switches, but after a start it may first
# sleep for all of checkpoint_timeout (5 min): it plans that sleep while the startup process still
# runs, when archive_timeout does not apply, and nothing wakes it before. Meanwhile nothing is
# archived until 16 MiB of WAL fill a segment, and a lost disk loses minutes instead of
# archive_timeout. A configuration reload wakes it (and changes nothing else): once per postgres
# start, seen in postmaster.pid (its start time, and "ready" once it accepts connections), which is
# read every 10 seconds (no connection until it changes).
wake_archiving() {
  local -a pid_file
  { mapfile -t pid_file <"$PGDATA/postmaster.pid"; } 2>/dev/null || return 0
  [[ ${pid_file[7]:-} == ready* && ${pid_file[2]:-} != "$woken_start" ]] || return 0
  psql_live -c "SELECT pg_reload_conf()" >/dev/null || return 0
  woken_start=${pid_file[2]}
  say "postgres started at $(date -u -d "@$woken_start" '+%F %T') UTC: its checkpointer woken, so archive_timeout applies at once"
}

watch_archiving() {
  local woken_start=
  while :; do
    wake_archiving
    sleep 10
  done
}

# Kubernetes: the metrics server and the archiving watch (CronJobs hold the schedules).
serve_metrics() {
  configure
  busybox httpd -f -p "$METRICS_PORT" -h "$WEB_DIR" &
  watch_archiving &
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  wait -n
  say "the metrics server or the archiving watch stopped; exiting so the container is restarted"
  exit 1
}

serve() {
  configure
  local full=${BACKUP_FULL_SCHEDULE:-0 1 * * 0} diff=${BACKUP_DIFF_SCHEDULE:-0 1 * * 1-6}
  local verify=${BACKUP_VERIFY_SCHEDULE:-30 3 * * *}
  check_schedule BACKUP_FULL_SCHEDULE "$full"
  check_schedule BACKUP_DIFF_SCHEDULE "$diff"
  check_schedule BACKUP_VERIFY_SCHEDULE "$verify"
  is_uint "${BACKUP_MAX_AGE_SECONDS:-93600}" || fail_config "BACKUP_MAX_AGE_SECONDS must be a whole number of seconds"
  mkdir -p "$STATE_DIR"
  # Idempotent: creates the stanza on a new repository, checks it matches the database otherwise.
  if ! pgbackrest stanza-create >&2; then
    say "stanza-create failed. If the repository was made under another passphrase, put that one back in" \
      "BACKUP_CIPHER_PASS_FILE. If it belongs to an earlier database on a data" \
      "volume that was lost or replaced, make restore brings that database back; to keep the new one" \
      "instead, move the repository volume aside (after a PostgreSQL major upgrade: pgbackrest stanza-upgrade)"
    exit 1
  fi
  say "repositories ready: $(repos | sed 's/\([0-9]\)/repo\1/g')"
  # A first full backup right away into each repository that has none (a new installation, an
  # off-host repository just added, a repository lost with its host): archived WAL alone restores nothing.
  local repo empty=()
  for repo in $(repos); do
    [[ $(pgbackrest --repo="$repo" info --output=json | jq '.[0].backup | length') != 0 ]] || empty+=("$repo")
  done
  if ((${#empty[@]})); then
    "$0" backup full "${empty[@]}" &
    disown
  fi
  # One process per job, and the metrics server: if any of them ends, the container ends and is restarted.
  busybox httpd -f -p "$METRICS_PORT" -h "$WEB_DIR" &
  watch_archiving &
  if [[ $full != off ]]; then schedule_loop "full backup" "$full" "$0" backup full & fi
  if [[ $diff != off ]]; then schedule_loop "differential backup" "$diff" "$0" backup diff & fi
  if [[ $verify != off ]]; then schedule_loop verification "$verify" "$0" verify & fi
  trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM INT
  wait -n
  say "a scheduler, the metrics server or the archiving watch stopped; exiting so the container is restarted"
  exit 1
}

# --- backups -----------------------------------------------------------------------------------

# The schemas' Alembic revisions on the live database, as pgBackRest annotations.
alembic_annotations() {
  local schema rev
  for schema in auth api; do
    rev=$(psql_live -c "SELECT string_agg(version_num, ',') FROM $schema.alembic_version" 2>/dev/null) || rev=
    [[ -n $rev ]] && printf -- '--annotation=alembic-%s=%s\n' "$schema" "$rev"
  done
  return 0
}

human_bytes() { numfmt --to=iec-i --suffix=B --format='%.1f' "$1"; }

backup() {  # [TYPE [REPO...]]: into the given repositories, or every one
  configure
  local type=${1:-diff} repo started label json annotations
  [[ $type =~ ^(full|diff|incr)$ ]] || refuse "backup type must be full, diff or incr, got '$type'"
  shift || true
  local -a targets=("$@")
  ((${#targets[@]})) || read -r -a targets <<<"$(repos)"
  for repo in "${targets[@]}"; do
    [[ " $(repos) " == *" $repo "* ]] || refuse "no repository '$repo' (configured: $(repos))"
  done
  # Idempotent; on Kubernetes the first backup Job is what creates the stanza.
  pgbackrest stanza-create >&2
  mapfile -t annotations < <(alembic_annotations)
  for repo in "${targets[@]}"; do
    started=$(date +%s)
    pgbackrest --repo="$repo" --type="$type" "${annotations[@]}" backup
    json=$(pgbackrest --repo="$repo" info --output=json)
    label=$(jq -r '.[0].backup[-1].label' <<<"$json")
    jq -r --arg took "$(($(date +%s) - started))" --arg repo "repo$repo" '.[0].backup[-1] |
      "backup \(.label) (\(.type)) in \($repo): \(.info.repository.delta) bytes stored, \(.info.delta) bytes of data copied, \(.info.size) bytes of database, \($took) s"' <<<"$json"
    printf 'label=%s repo=%s size=%s\n' "$label" "repo$repo" \
      "$(human_bytes "$(jq -r '.[0].backup[-1].info.repository.delta' <<<"$json")")"
  done
}

list() {
  configure
  local json archived
  json=$(info_json)
  if [[ $(jq '.[0].backup | length' <<<"$json") == 0 ]]; then
    echo "no backups yet (the backup service takes the first at start-up; make backup takes one now)"
    return 0
  fi
  printf '%-33s %-5s %-5s %-20s %-20s %10s %10s\n' LABEL REPO TYPE STARTED FINISHED STORED DATABASE
  jq -r '.[0].backup[] | [.label, "repo\(.database."repo-key")", .type,
      (.timestamp.start | todate), (.timestamp.stop | todate), .info.repository.delta, .info.size] | @tsv' <<<"$json" |
    while IFS=$'\t' read -r label repo type started stopped stored size; do
      printf '%-33s %-5s %-5s %-20s %-20s %10s %10s\n' "$label" "$repo" "$type" "$started" "$stopped" \
        "$(human_bytes "$stored")" "$(human_bytes "$size")"
    done
  printf 'oldest restorable time: %s\n' "$(jq -r '[.[0].backup[].timestamp.stop] | min | todate' <<<"$json")"
  printf 'newest archived WAL:    %s' "$(jq -r '[.[0].archive[].max // empty] | max // "none"' <<<"$json")"
  archived=$(psql_live -c "SELECT coalesce(to_char(last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), '') FROM pg_stat_archiver" 2>/dev/null) || archived=
  if [[ -n $archived ]]; then printf ' (archived at %s)\n' "$archived"; else printf '\n'; fi
}

# --- restore -----------------------------------------------------------------------------------

# AT (a time with its UTC offset) or LABEL -> pgBackRest restore options on stdout, after checking
# them against the repository. Bad input: one line on stderr, exit 2.
target_options() {  # [--at T | --label L]
  local at= label=
  while (($#)); do
    case $1 in
      --at) at=${2-}; shift 2 ;;
      --label) label=${2-}; shift 2 ;;
      *) refuse "unknown option '$1'" ;;
    esac
  done
  [[ -n $at && -n $label ]] && refuse "give AT or LABEL, not both"
  local json
  json=$(info_json) || refuse "cannot read the backup repository (see the error above)"
  [[ $(jq '.[0].backup | length' <<<"$json") != 0 ]] || refuse "the repository holds no backup yet: nothing to restore"
  if [[ -n $label ]]; then
    jq -e --arg l "$label" 'any(.[0].backup[]; .label == $l)' <<<"$json" >/dev/null \
      || refuse "no backup labelled '$label' (make backups lists them)"
    printf '%s\n' "--set=$label" --type=immediate --target-action=promote
    return 0
  fi
  if [[ -z $at ]]; then
    printf '%s\n' --type=default
    return 0
  fi
  local tz='([+-][0-9]{2}(:?[0-9]{2})?|Z| UTC)$'
  [[ $at =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}[T\ ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?\ ?$tz ]] \
    || refuse "AT must be a time with its UTC offset, like '2026-12-06 14:02:59+00'; got '$at'"
  local epoch oldest normalized
  epoch=$(date -u -d "$at" +%s 2>/dev/null) || refuse "AT '$at' is not a valid time"
  normalized=$(date -u -d "$at" '+%Y-%m-%d %H:%M:%S.%6N+00')
  (($(date +%s) >= epoch)) || refuse "AT '$at' is in the future"
  oldest=$(jq '[.[0].backup[].timestamp.stop] | min' <<<"$json")
  ((epoch >= oldest)) || refuse "AT '$at' is before the oldest restorable time, $(date -u -d "@$oldest" '+%Y-%m-%d %H:%M:%S+00')"
  printf '%s\n' --type=time "--target=$normalized" --target-action=promote
}

check_target() {
  configure
  local options
  options=$(target_options "$@")
  printf 'target: %s\n' "$(tr '\n' ' ' <<<"$options")"
}

kept_dir() { find "$PGDATA" -mindepth 1 -maxdepth 1 -name "$KEPT_PREFIX*" | sort | tail -n1; }

# Move every entry of $1 except Wharf's own restore directories into $2.
move_entries() {
  find "$1" -mindepth 1 -maxdepth 1 ! -name "$KEPT_PREFIX*" ! -name "$NEW_PREFIX*" -exec mv -t "$2" -- {} +
}

recovery_log=/tmp/wharf-recovery.log
postgres_errors() { grep -E 'FATAL|PANIC|DETAIL|HINT' "$recovery_log" | tail -n 4 | sed 's/^/  postgres: /' >&2; }

# Start postgres on the data directory in recovery (socket only), wait until it has promoted,
# stop it. Fails when postgres stops first (e.g. the target was never reached).
recover() {  # DATA_DIR SOCKET_DIR [extra postgres -c settings...]
  local data=$1 socket=$2 deadline
  shift 2
  mkdir -p "$socket"
  local settings="-c listen_addresses='' -c unix_socket_directories='$socket'"
  local setting
  for setting in "$@"; do settings+=" -c $setting"; done
  pg_ctl -D "$data" -l "$recovery_log" -w -t "$RECOVERY_TIMEOUT" -o "$settings" start >/dev/null \
    || { postgres_errors; return 1; }
  deadline=$(($(date +%s) + RECOVERY_TIMEOUT))
  until [[ $(psql -X -h "$socket" -U postgres -d postgres -tAc 'SELECT pg_is_in_recovery()' 2>/dev/null) == f ]]; do
    if ! pg_ctl -D "$data" status >/dev/null; then
      say "postgres stopped during recovery:"
      postgres_errors
      return 1
    fi
    (($(date +%s) < deadline)) || { say "recovery took longer than $RECOVERY_TIMEOUT s"; pg_ctl -D "$data" -m fast -w stop; return 1; }
    sleep 1
  done
  grep -E 'recovery stopping|selected new timeline|archive recovery complete' "$recovery_log" | sed 's/^/  postgres: /' >&2 || true
}

stop_postgres() { pg_ctl -D "$1" -m fast -w stop >/dev/null; }

restore() {
  configure
  local -a options
  mapfile -t options < <(target_options "$@")
  ((${#options[@]})) || exit 2
  if pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then refuse "postgres is running on $PGDATA; stop it first"; fi
  [[ -z $(kept_dir) ]] || refuse "$(kept_dir) is left from an earlier restore: make restore-rollback or restore-finish first"
  local stamp new kept
  # A lost disk leaves a new, empty volume whose root may be the image's (mode 1777 in postgres:17):
  # postgres wants its data directory 0700.
  mkdir -p "$PGDATA" && chmod 0700 "$PGDATA"
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  new=$PGDATA/$NEW_PREFIX$stamp kept=$PGDATA/$KEPT_PREFIX$stamp
  find "$PGDATA" -mindepth 1 -maxdepth 1 -name "$NEW_PREFIX*" -exec rm -rf -- {} +  # an interrupted attempt
  mkdir -m 0700 "$new"
  say "restoring ${options[*]} beside the current data"
  if ! pgbackrest restore --pg1-path="$new" "${options[@]}" \
    --recovery-option="restore_command=wharf-backup pgbackrest archive-get %f \"%p\""; then
    rm -rf -- "$new"
    say "restore failed before anything was changed: the data directory is as it was"
    exit 1
  fi
  # The swap: renames inside one volume. The old data stays whole in $kept until the new is proven.
  mkdir -m 0700 "$kept"
  move_entries "$PGDATA" "$kept"
  find "$new" -mindepth 1 -maxdepth 1 -exec mv -t "$PGDATA" -- {} +
  rmdir "$new"
  say "recovering (postgres replays the archived WAL up to the target, then promotes)"
  if ! recover "$PGDATA" /tmp/wharf-recovery-socket "archive_mode=on" \
    "archive_command='wharf-backup pgbackrest archive-push %p'"; then
    rollback
    say "restore failed: the data directory is back as it was before. Fix the cause above (make backups shows what can be restored), then make up"
    exit 1
  fi
  stop_postgres "$PGDATA"
  say "recovered and promoted; the data before the restore is kept in $(basename "$kept") until make restore finishes"
}

# Put the data kept by the last restore back (the restored data is removed).
rollback() {
  local kept
  kept=$(kept_dir)
  [[ -n $kept ]] || refuse "no data kept from an earlier restore in $PGDATA"
  if pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then stop_postgres "$PGDATA"; fi
  find "$PGDATA" -mindepth 1 -maxdepth 1 ! -name "$KEPT_PREFIX*" -exec rm -rf -- {} +
  find "$kept" -mindepth 1 -maxdepth 1 -exec mv -t "$PGDATA" -- {} +
  rmdir "$kept"
  say "the data from before the restore is back in place"
}

finish() {
  local kept
  kept=$(kept_dir)
  [[ -z $kept ]] || rm -rf -- "$kept"
  say "restore finished; the data from before it is removed"
}

# --- verification ------------------------------------------------------------------------------

write_verify_metrics() {  # OK(0|1) LABEL STARTED
  local now previous_success=0 file=$STATE_DIR/verify.prom
  now=$(date +%s)
  mkdir -p "$STATE_DIR"
  [[ -r $file ]] && previous_success=$(awk '$1 == "wharf_backup_verify_last_success_timestamp_seconds" {print $2}' "$file")
  ((${1})) && previous_success=$now
  cat >"$file.tmp" <<EOF
# HELP wharf_backup_verify_ok Whether the last verification of the newest backup passed (1) or failed (0).
# TYPE wharf_backup_verify_ok gauge
wharf_backup_verify_ok{label="$2"} $1
# HELP wharf_backup_verify_last_run_timestamp_seconds When the last verification ended.
# TYPE wharf_backup_verify_last_run_timestamp_seconds gauge
wharf_backup_verify_last_run_timestamp_seconds $now
# HELP wharf_backup_verify_last_success_timestamp_seconds When a verification last passed (0: never).
# TYPE wharf_backup_verify_last_success_timestamp_seconds gauge
wharf_backup_verify_last_success_timestamp_seconds ${previous_success:-0}
# HELP wharf_backup_verify_duration_seconds How long the last verification took.
# TYPE wharf_backup_verify_duration_seconds gauge
wharf_backup_verify_duration_seconds $((now - $3))
EOF
  mv "$file.tmp" "$file"
}

scratch_query() {  # SQL [ROLE]: as the superuser, or as ROLE (the service's own rights)
  PGOPTIONS=${2:+-c role=$2} psql -X -h "$SCRATCH_DIR/run" -U postgres -d wharf -v ON_ERROR_STOP=1 -tAc "$1"
}

# The checks on the restored copy: Alembic revisions as annotated at backup time, and the services'
# own roles can read their tables.
check_scratch() {  # INFO_JSON_OF_THE_BACKUP
  local schema expected found
  for schema in auth api; do
    found=$(scratch_query "SELECT string_agg(version_num, ',') FROM $schema.alembic_version") \
      || { say "FAILED: schema $schema has no Alembic version table"; return 1; }
    expected=$(jq -r --arg k "alembic-$schema" '.annotation[$k] // empty' <<<"$1")
    if [[ -n $expected && $found != "$expected" ]]; then
      say "FAILED: schema $schema is at Alembic revision '$found', the backup recorded '$expected'"
      return 1
    fi
    say "schema $schema at Alembic revision $found"
  done
  local rows
  rows=$(scratch_query "SELECT count(*) FROM api.users" api) || { say "FAILED: role api cannot read api.users"; return 1; }
  say "api: role api reads api.users ($rows rows)"
  rows=$(scratch_query "SELECT count(*) FROM auth.accounts" auth) || { say "FAILED: role auth cannot read auth.accounts"; return 1; }
  say "auth: role auth reads auth.accounts ($rows rows)"
}

# pgBackRest's verify of every backup and WAL segment in repository REPO. Its exit code is 0 even
# when it finds damage (pgbackrest/pgbackrest#2502), so its summary says: "status: ok" or "error".
verify_repo() {  # REPO
  local summary
  summary=$(pgbackrest --repo="$1" verify --output=text --verbose) || { printf '%s\n' "$summary" >&2; return 1; }
  printf '%s\n' "$summary" | sed 's/^/  /' >&2
  grep -qx 'status: ok' <<<"$summary"
}

verify_newest() {  # -> 0 when every check passed; prints the label on stdout
  local json backup label repo
  json=$(info_json)
  backup=$(jq -c '.[0].backup[-1] // empty' <<<"$json")
  [[ -n $backup ]] || { say "FAILED: the repository holds no backup"; return 1; }
  label=$(jq -r .label <<<"$backup")
  echo "$label"
  for repo in $(repos); do
    say "pgbackrest verify (repo$repo)"
    verify_repo "$repo" || { say "FAILED: pgbackrest verify found damage in repo$repo"; return 1; }
  done
  rm -rf -- "$SCRATCH_DIR/data" "$SCRATCH_DIR/run"
  mkdir -p -m 0700 "$SCRATCH_DIR/data"
  say "restoring $label into scratch"
  PGBACKREST_PG1_PATH=$SCRATCH_DIR/data pgbackrest restore --set="$label" --type=immediate \
    --target-action=promote --archive-mode=off \
    --recovery-option="restore_command=wharf-backup pgbackrest archive-get %f \"%p\"" \
    || { say "FAILED: the backup $label does not restore"; return 1; }
  PGBACKREST_PG1_PATH=$SCRATCH_DIR/data recover "$SCRATCH_DIR/data" "$SCRATCH_DIR/run" archive_mode=off \
    || { say "FAILED: the restored copy of $label does not start"; return 1; }
  check_scratch "$backup"
}

verify() {
  configure
  local started label ok=0
  started=$(date +%s)
  if label=$(verify_newest); then ok=1; fi
  if [[ -d $SCRATCH_DIR/data ]] && pg_ctl -D "$SCRATCH_DIR/data" status >/dev/null 2>&1; then stop_postgres "$SCRATCH_DIR/data"; fi
  rm -rf -- "$SCRATCH_DIR/data" "$SCRATCH_DIR/run"
  label=$(tail -n1 <<<"$label")
  write_verify_metrics "$ok" "$label" "$started"
  if ((ok)); then
    echo "verified: backup ${label} restores, starts and answers ($(($(date +%s) - started)) s)"
  else
    echo "verification FAILED for backup ${label:-none}: see the lines above" >&2
    return 1
  fi
}

# --- metrics -----------------------------------------------------------------------------------

metrics() {
  # Each part stands alone: a failing one (its error goes to the container's log) leaves the others.
  [[ ! -r $STATE_DIR/verify.prom ]] || cat "$STATE_DIR/verify.prom"
  if ! (configure); then
    echo "wharf_backup_info_ok 0"
    return 0
  fi
  configure
  local json
  json=$(info_json) || json='[]'
  jq -r --arg max "${BACKUP_MAX_AGE_SECONDS:-93600}" '
    "# HELP wharf_backup_info_ok Whether the repositories could be read (pgBackRest info).",
    "# TYPE wharf_backup_info_ok gauge",
    "wharf_backup_info_ok \(if length > 0 and .[0].status.code == 0 then 1 else 0 end)",
    "# HELP wharf_backup_max_age_seconds How old the newest backup may be before an alert (BACKUP_MAX_AGE_SECONDS).",
    "# TYPE wharf_backup_max_age_seconds gauge",
    "wharf_backup_max_age_seconds \($max)",
    "# HELP wharf_backup_last_success_timestamp_seconds When the newest backup of each type finished.",
    "# TYPE wharf_backup_last_success_timestamp_seconds gauge",
    ((.[0].backup // []) | group_by(.type)[] | max_by(.timestamp.stop) |
      "wharf_backup_last_success_timestamp_seconds{type=\"\(.type)\"} \(.timestamp.stop)"),
    "# HELP wharf_backup_last_size_bytes Repository bytes the newest backup added.",
    "# TYPE wharf_backup_last_size_bytes gauge",
    ((.[0].backup // [])[-1] // empty | "wharf_backup_last_size_bytes \(.info.repository.delta)"),
    "# HELP wharf_backup_oldest_restorable_timestamp_seconds The earliest time a restore can reach.",
    "# TYPE wharf_backup_oldest_restorable_timestamp_seconds gauge",
    ((.[0].backup // []) | map(.timestamp.stop) | min // empty | "wharf_backup_oldest_restorable_timestamp_seconds \(.)")
  ' <<<"$json" || echo "wharf_backup_info_ok 0"
  local archiver
  archiver=$(psql_live -F ' ' -c "SELECT archived_count, failed_count,
      coalesce(extract(epoch FROM last_archived_time)::bigint, 0), coalesce(extract(epoch FROM last_failed_time)::bigint, 0)
    FROM pg_stat_archiver" 2>/dev/null) || archiver=
  if [[ -n $archiver ]]; then
    local archived failed last_ok last_failed pending
    read -r archived failed last_ok last_failed <<<"$archiver"
    pending=$(find "$PGDATA/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l)
    cat <<EOF
# HELP wharf_backup_archive_archived_total WAL segments postgres has archived since its statistics were reset.
# TYPE wharf_backup_archive_archived_total counter
wharf_backup_archive_archived_total $archived
# HELP wharf_backup_archive_failed_total Failed attempts to archive a WAL segment.
# TYPE wharf_backup_archive_failed_total counter
wharf_backup_archive_failed_total $failed
# HELP wharf_backup_archive_last_success_timestamp_seconds When postgres last archived a WAL segment (0: never).
# TYPE wharf_backup_archive_last_success_timestamp_seconds gauge
wharf_backup_archive_last_success_timestamp_seconds $last_ok
# HELP wharf_backup_archive_last_failure_timestamp_seconds When archiving last failed (0: never).
# TYPE wharf_backup_archive_last_failure_timestamp_seconds gauge
wharf_backup_archive_last_failure_timestamp_seconds $last_failed
# HELP wharf_backup_archive_pending_segments WAL segments waiting to be archived (the archive's lag).
# TYPE wharf_backup_archive_pending_segments gauge
wharf_backup_archive_pending_segments $pending
EOF
  fi
}

command=${1-}
shift || true
case $command in
  serve) serve ;;
  serve-metrics) serve_metrics ;;
  pgbackrest) configure && exec pgbackrest "$@" ;;
  backup) backup "$@" ;;
  list) list ;;
  check-target) check_target "$@" ;;
  restore) restore "$@" ;;
  restore-rollback) rollback ;;
  restore-finish) finish ;;
  verify) verify ;;
  metrics) metrics ;;
  *) echo "usage: wharf-backup serve|serve-metrics|backup|list|check-target|restore|restore-rollback|restore-finish|verify|metrics|pgbackrest ..." >&2; exit 2 ;;
esac
