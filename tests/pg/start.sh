#!/usr/bin/env bash
# Starts a private PostgreSQL cluster for the tests and prints its admin URL.
#
#   export TOLLGATE_TEST_PG_URL=$(bash tests/pg/start.sh /tmp/tollgate-pg)
#   ...
#   bash tests/pg/stop.sh /tmp/tollgate-pg
#
# The cluster runs as the `postgres` user on a free loopback port, with its own
# data directory under DIR (created, must not hold a running cluster). Debian's
# postgresql package is installed when no server is found.
set -euo pipefail
dir=${1:?usage: start.sh DIR}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
bin=$(find_bin)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
    echo "installing postgresql from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bin=$(find_bin)
fi
id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" postgres

mkdir -p "$dir"
chown postgres "$dir"
chmod 700 "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi; }
as_pg "'$bin/initdb' -D '$dir/data' -A trust -U postgres -E UTF8 --no-sync >'$dir/initdb.log' 2>&1"

# TLS with a CA of the test run's own (tests/postgres_tls.rs finds ca.pem
# beside the server's certificate): the server certificate names localhost
# and 127.0.0.1.
if ! command -v openssl >/dev/null 2>&1; then
    echo "installing openssl from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >&2
fi
tls=$dir/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=tollgate-test-ca -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 30 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
if [ "$(id -u)" = 0 ]; then chown -R postgres "$tls"; fi
chmod 600 "$tls/server.key" "$tls/ca.key"
chmod 644 "$tls/ca.pem"

# Tests start many servers at once, each with its own pool; fsync is off
# because a lost machine loses the test run anyway.
as_pg "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c full_page_writes=off -c ssl=on -c ssl_cert_file='$tls/server.pem' -c ssl_key_file='$tls/server.key'\" start >&2"
echo "postgres://postgres@127.0.0.1:$port/postgres"
