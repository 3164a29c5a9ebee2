#!/bin/sh
# One-shot job of deploy/compose.yaml: make the database schema what this Zonegate needs, as Kong's
# compose file does: bootstrap a new database; on an existing one, run new migrations (up, then
# finish). `zonegate migrations list` answers with Kong's exit codes.
set -u

status=0
zonegate migrations list || status=$?
case "$status" in
    0) echo "database schema is up to date" ;;
    3) exec zonegate migrations bootstrap ;;
    4) exec zonegate migrations finish ;;
    5) zonegate migrations up && exec zonegate migrations finish ;;
    *) exit "$status" ;;
esac
