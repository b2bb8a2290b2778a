#!/bin/sh
# The wharf/alertmanager image's entrypoint (deploy/alertmanager/Dockerfile): writes Alertmanager's
# configuration from the ALERT_* settings (docs/operations.md, "Alert routing"), checks it with
# amtool, then runs Alertmanager with it and the arguments given. Every alert goes by mail to
# ALERT_MAIL_TO, and again when it is resolved. A bad setting stops here with one
# `configuration error` line (exit 78). POSIX sh: the official image has busybox and no bash.
set -eu
CONFIG=/tmp/alertmanager.yml

fail() {
  echo "configuration error: $*" >&2
  exit 78
}

# Values are written into double-quoted YAML strings: nothing in them may end the string.
text() {  # NAME: required, one line
  eval "value=\${$1:-}"
  [ -n "$value" ] || fail "$1 is required"
  case $value in
    *'"'* | *'\'* | *'
'*) fail "$1: no double quote, backslash or line break" ;;
  esac
}

duration() {  # NAME: a Prometheus duration such as 30s, 5m, 4h or 1h30m
  eval "value=\${$1:-}"
  case $value in
    [0-9]*[smhdwy]) case $value in *[!0-9smhdwy]*) fail "$1: a duration such as 30s, 5m or 4h (got '$value')" ;; esac ;;
    *) fail "$1: a duration such as 30s, 5m or 4h (got '$value')" ;;
  esac
}

for name in ALERT_MAIL_TO ALERT_MAIL_FROM ALERT_SMTP_SMARTHOST; do text "$name"; done
case $ALERT_SMTP_SMARTHOST in
  *:[0-9]*) case ${ALERT_SMTP_SMARTHOST##*:} in *[!0-9]*) fail "ALERT_SMTP_SMARTHOST: host:port (got '$ALERT_SMTP_SMARTHOST')" ;; esac ;;
  *) fail "ALERT_SMTP_SMARTHOST: host:port (got '$ALERT_SMTP_SMARTHOST')" ;;
esac
case ${ALERT_SMTP_REQUIRE_TLS:-} in
  true | false) ;;
  *) fail "ALERT_SMTP_REQUIRE_TLS: true or false (got '${ALERT_SMTP_REQUIRE_TLS:-}')" ;;
esac
for name in ALERT_GROUP_WAIT ALERT_GROUP_INTERVAL ALERT_REPEAT_INTERVAL; do duration "$name"; done

# A login at the SMTP server with ALERT_SMTP_USERNAME: the password is read from its secret file
# (ALERT_SMTP_PASSWORD_FILE, by default the compose secret's), and never sent in clear text
# (STARTTLS required, or implicit TLS on port 465).
auth=
if [ -n "${ALERT_SMTP_USERNAME:-}" ]; then
  ALERT_SMTP_PASSWORD_FILE=${ALERT_SMTP_PASSWORD_FILE:-/run/secrets/alertmanager/smtp_password}
  text ALERT_SMTP_USERNAME
  text ALERT_SMTP_PASSWORD_FILE
  [ -r "$ALERT_SMTP_PASSWORD_FILE" ] && [ -s "$ALERT_SMTP_PASSWORD_FILE" ] \
    || fail "ALERT_SMTP_PASSWORD_FILE: cannot read $ALERT_SMTP_PASSWORD_FILE, or it is empty"
  [ "$ALERT_SMTP_REQUIRE_TLS" = true ] || [ "${ALERT_SMTP_SMARTHOST##*:}" = 465 ] \
    || fail "ALERT_SMTP_REQUIRE_TLS=false would send the SMTP password in clear text; set it to true (or use port 465)"
  auth="
        auth_username: \"$ALERT_SMTP_USERNAME\"
        auth_password_file: \"$ALERT_SMTP_PASSWORD_FILE\""
fi

cat >"$CONFIG" <<YAML
global:
  smtp_smarthost: "$ALERT_SMTP_SMARTHOST"
  smtp_from: "$ALERT_MAIL_FROM"
  smtp_require_tls: $ALERT_SMTP_REQUIRE_TLS
templates:
  - /etc/alertmanager/templates/*.tmpl
route:
  receiver: mail
  group_by: [alertname, job]
  group_wait: $ALERT_GROUP_WAIT
  group_interval: $ALERT_GROUP_INTERVAL
  repeat_interval: $ALERT_REPEAT_INTERVAL
receivers:
  - name: mail
    email_configs:
      - to: "$ALERT_MAIL_TO"
        send_resolved: true
        text: '{{ template "wharf.mail.text" . }}'$auth
YAML

checked=$(amtool check-config "$CONFIG" 2>&1) || fail "Alertmanager refuses the configuration: $(echo "$checked" | tail -n 1)"
exec /bin/alertmanager --config.file="$CONFIG" "$@"
