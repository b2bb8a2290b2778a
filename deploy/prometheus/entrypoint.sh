#!/bin/sh
# The wharf/prometheus image's entrypoint (deploy/prometheus/Dockerfile). Prometheus loads the rule
# files of /etc/prometheus/rules, not their promtool tests (*.test.yml beside them), through links
# in $RULES, where it also records the replicas the stack wants of each scraped service
# (API_REPLICAS, AUTH_REPLICAS) as wharf:replicas:expected: a stopped replica leaves service
# discovery, so only that number says one is missing (rules/availability.yml). Then it runs
# Prometheus with the arguments given. POSIX sh: the official image has busybox and no bash.
set -eu
RULES=/tmp/wharf-rules  # rule_files in prometheus.yml

fail() {
  echo "configuration error: $*" >&2
  exit 78
}

for name in API_REPLICAS AUTH_REPLICAS; do
  eval "value=\${$name:-}"
  case $value in
    '' | *[!0-9]*) fail "$name: the number of replicas the stack runs, a whole number (got '$value')" ;;
  esac
done

rm -rf "$RULES"
mkdir -p "$RULES"
for file in /etc/prometheus/rules/*.yml; do
  case $file in *.test.yml) continue ;; esac
  [ -e "$file" ] && ln -s "$file" "$RULES/"
done
cat >"$RULES/expected-replicas.generated.yml" <<YAML
groups:
  - name: wharf-expected-replicas
    rules:
      - record: wharf:replicas:expected
        expr: vector($API_REPLICAS)
        labels: {job: api}
      - record: wharf:replicas:expected
        expr: vector($AUTH_REPLICAS)
        labels: {job: auth}
YAML

exec /bin/prometheus "$@"
