#!/usr/bin/env bash
# tollgate accounts bench (SPEC §13, issue "accounts at scale"): loads
# BENCH_USERS users (default 100,000) and BENCH_KEYS keys (default 200,000)
# straight through the store, then measures with the server running on that
# database: start time, key creation, user edit, revocation-to-refusal on the
# same server, login, a page of /admin/keys and /admin/users, and resident
# memory. SQLite by default; BENCH_DB=postgres://… runs it on PostgreSQL
# (an empty database).
#
#   bash bench/accounts.sh                       # ~2 min
#   BENCH_USERS=10000 BENCH_KEYS=20000 bash bench/accounts.sh
#
# Writes bench/results/accounts-latest.json (BENCH_OUT). Not part of `cargo test`.
set -euo pipefail

USERS=${BENCH_USERS:-100000}
KEYS=${BENCH_KEYS:-200000}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/results/accounts-latest.json}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET = /* ]] || TARGET=$ROOT/$TARGET
BIN=$TARGET/release/tollgate
LOADER=$TARGET/release/examples/load_accounts

log() { printf '[accounts %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

log "building (cargo build --release, with the loader)"
(cd "$ROOT" && cargo build --release --bin tollgate --example load_accounts -q) || die "build failed"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock migrations 2>/dev/null) ]] || COMMIT+=+dirty

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-accounts.XXXXXX")
PID=
cleanup() { [[ -z $PID ]] || kill "$PID" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
DB=${BENCH_DB:-$TMP/tollgate.db}
ADMIN_PW=bench-admin-password
export TOLLGATE_ADMIN_PASSWORD=$ADMIN_PW RUST_LOG=warn

# Starts the server; START_MS is the time until /health answers.
start() {
    local t0 t1
    t0=$(date +%s%N)
    "$BIN" --db "$DB" serve --listen "127.0.0.1:$PORT" >>"$TMP/server.log" 2>&1 &
    PID=$!
    until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || { cat "$TMP/server.log" >&2; die "the server exited"; }
        sleep 0.01
    done
    t1=$(date +%s%N)
    START_MS=$(((t1 - t0) / 1000000))
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$PID/status"; }

log "first start (plans and the admin)"
start
stop
log "loading $USERS users and $KEYS keys through the store"
t0=$(date +%s)
"$LOADER" "$DB" "$USERS" "$KEYS"
LOAD_S=$(($(date +%s) - t0))

start
RSS_START=$(rss_mb)
log "started in $START_MS ms, $RSS_START MB resident; measuring"
FIG=$(python3 "$ROOT/bench/accounts.py" 127.0.0.1 "$PORT" "$ADMIN_PW")
sleep 6 # one last-use flush and one change-log poll with the keys in memory
RSS_END=$(rss_mb)
stop

mkdir -p "$(dirname "$OUT")"
python3 - "$OUT" <<PY
import json, sys
fig = json.loads('''$FIG''')
fig.update({
    "commit": "$COMMIT",
    "backend": "postgres" if "$DB".startswith("postgres") else "sqlite",
    "users": $USERS, "keys": $KEYS, "load_s": $LOAD_S,
    "start_ms": $START_MS, "rss_after_start_mb": $RSS_START, "rss_after_bench_mb": $RSS_END,
})
json.dump(fig, open(sys.argv[1], "w"), indent=2)
print(json.dumps(fig, indent=2))
PY
log "wrote $OUT"
