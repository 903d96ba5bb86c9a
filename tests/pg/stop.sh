#!/usr/bin/env bash
# Stops the cluster started by tests/pg/start.sh DIR and removes DIR.
set -uo pipefail
dir=${1:?usage: stop.sh DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -d "$dir/data" ]; then
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/sh -c "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null 2>&1
    else
        "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1
    fi
fi
rm -rf "$dir"
