#!/bin/bash
# GET /cgi-bin/metrics on the backup service (busybox httpd): the backup metrics, read when
# Prometheus asks, so nothing runs between scrapes.
printf 'Content-Type: text/plain; version=0.0.4\r\n\r\n'
exec wharf-backup metrics
