#!/usr/bin/env bash
# The postgres container's entrypoint in compose (official and registry-free image alike; mounted
# read-only, see deploy/compose/compose.yaml): on every start of an initialised data directory the
# superuser's password is set from POSTGRES_PASSWORD_FILE, then the image's own entrypoint runs.
#
# The image's entrypoint applies the file only when it creates the data directory, so a volume
# initialised by another clone, or before the secrets directory was regenerated, kept a password
# no file held any more and db-init could not log in. Here the password is set in PostgreSQL's
# single-user mode: the server process itself on the data directory, with no listener at all, so
# it works whatever pg_hba.conf says and before anything can connect over the network.
# What cannot work (data of another PostgreSQL major version, an unreadable data directory) stops
# the container with one `configuration error: ...` line naming the cause and the fix (exit 78);
# `--check` runs those checks alone, writing nothing (compose's postgres-check one-shot).
set -Eeuo pipefail

fail() {
  printf 'configuration error: %s\n' "$*" >&2
  exit 78
}

# The password from POSTGRES_PASSWORD_FILE into $password. Surrounding whitespace is not part of
# it, as for every other secret file (wharf_common.settings).
read_password() {
  local file=${POSTGRES_PASSWORD_FILE-}
  [[ -n $file ]] || fail "POSTGRES_PASSWORD_FILE is not set (the superuser password follows that file)"
  [[ -r $file ]] || fail "cannot read POSTGRES_PASSWORD_FILE ($file): run make up, which generates it, or put it there"
  password=$(<"$file")
  password=${password#"${password%%[![:space:]]*}"}
  password=${password%"${password##*[![:space:]]}"}
  [[ -n $password ]] || fail "POSTGRES_PASSWORD_FILE ($file) is empty"
  [[ $password != *$'\n'* ]] || fail "POSTGRES_PASSWORD_FILE ($file) holds more than one line"
}

server_major() { postgres -V | sed -n 's/^postgres (PostgreSQL) \([0-9]*\).*/\1/p'; }

check_data_version() {
  local data_major
  [[ -r $PGDATA/PG_VERSION ]] || fail "cannot read $PGDATA/PG_VERSION as uid $(id -u): the data volume must belong to the postgres user"
  data_major=$(<"$PGDATA/PG_VERSION")
  if [[ $data_major != "$(server_major)" ]]; then
    fail "the data volume holds PostgreSQL $data_major data and this image runs PostgreSQL $(server_major)." \
      "Fix: start the PostgreSQL $data_major image (POSTGRES_IMAGE) and make dump, then remove the volume" \
      "(make clean) and make up and make load FILE=... with PostgreSQL $(server_major); or pg_upgrade the volume"
  fi
}

set_superuser_password() {
  local user=${POSTGRES_USER:-postgres} out
  # Quotes doubled for SQL; the statement reaches the server on stdin, never on a command line, and
  # log_min_error_statement=panic keeps it out of the log even when it fails.
  local sql="ALTER ROLE \"${user//\"/\"\"}\" PASSWORD '${password//\'/\'\'}';"
  out=$(postgres --single -D "$PGDATA" -c log_min_error_statement=panic -c log_checkpoints=off \
    -c log_min_messages=warning postgres <<<"$sql" 2>&1 >/dev/null) || true
  if [[ $out == *"FATAL:"* || $out == *"PANIC:"* || $out == *"ERROR:"* ]]; then
    fail "could not set the superuser password from POSTGRES_PASSWORD_FILE:" \
      "$(grep -m1 -oE '(FATAL|PANIC|ERROR): .*' <<<"$out")." \
      "Fix: the data volume must be a PostgreSQL $(server_major) data directory owned by uid $(id -u) with a role '$user'"
  fi
  echo "wharf-postgres: superuser '$user' password set from POSTGRES_PASSWORD_FILE" >&2
}

: "${PGDATA:?PGDATA is not set}"
password=
if [[ ${1-} == --check ]]; then
  # The postgres-check one-shot, before postgres starts (the volume read-only): what the start
  # below could not fix ends `make up` at once, rather than a postgres container restarting.
  read_password
  [[ ! -e $PGDATA/PG_VERSION ]] || check_data_version
  exit 0
fi
if [[ ${1-} == postgres && -s $PGDATA/PG_VERSION ]]; then
  # Single-user mode refuses to run as root; compose runs this container as the postgres user.
  [[ $(id -u) != 0 ]] || fail "run the postgres container as the postgres user (compose: user: postgres)"
  read_password
  check_data_version
  set_superuser_password
fi
# A fresh data directory: the image's entrypoint creates it with the file's password.
exec docker-entrypoint.sh "$@"
