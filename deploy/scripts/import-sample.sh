#!/bin/sh
# One-shot job of deploy/compose.yaml: load the sample config (SAMPLE, default
# /etc/zonegate/kong.yml) into an empty database, so that the stack proxies and its dashboards fill
# up at once. A database that already holds entities is left alone: restarts never undo Admin API
# changes.
set -eu

SAMPLE=${SAMPLE:-/etc/zonegate/kong.yml}

summary=$(zonegate config db-export - 2>&1 >/dev/null)
case "$summary" in
    *"exported 0 entities"*) exec zonegate config db-import "$SAMPLE" ;;
    *) echo "the database already has a config, sample not imported (${summary})" ;;
esac
