#!/bin/bash
# Container health check of the api, auth and nginx images: GET http://127.0.0.1:PORT/PATH over
# bash's /dev/tcp (no curl, no interpreter to start) and succeed only on an HTTP 200 status line.
# Gives up after 2 s without an answer, inside the images' 3 s HEALTHCHECK timeout.
# Usage: wharf-healthcheck PORT PATH
set -u
if (($# != 2)); then
  echo "usage: wharf-healthcheck PORT PATH" >&2
  exit 2
fi
exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
printf 'GET %s HTTP/1.0\r\n\r\n' "$2" >&3 || exit 1
read -r -t 2 status <&3 || exit 1
[[ $status == HTTP/1.?' 200 '* ]]
