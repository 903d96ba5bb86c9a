#!/usr/bin/env bash
# tollgate on PostgreSQL, two replicas behind nginx, against one tollgate on SQLite: the same
# wrk load (plain chat completions, the wrk script of bench/run.sh) through
#   - one tollgate on SQLite (32 connections, then 1 connection),
#   - two tollgate replicas sharing one PostgreSQL database, behind nginx as a round-robin
#     load balancer (32 connections, then 1 connection; and 1 connection to one replica directly),
#   - nginx as a bare reverse proxy to the mock (1 connection: the latency baseline),
# and, as an extra, the replicas at 32 connections with the calls spread over BENCH_USERS users
# (each user's admissions take turns under a lock of that user; see docs/performance.md),
# all in front of the mock OpenAI upstream of bench/run.sh (nginx, one worker). Loopback only,
# bounded in time; PostgreSQL is a private cluster (tests/pg/start.sh), removed at the end.
#
#   bash bench/replicas.sh                      # ~1.5 min with the default 10 s runs
#   BENCH_DURATION=3 bash bench/replicas.sh     # shorter runs
#
# Environment: BENCH_DURATION (seconds per wrk run, default 10), BENCH_CONNECTIONS (default 32),
# BENCH_USERS (users of the extra many-users run, default 16), TOLLGATE_BIN (default
# $CARGO_TARGET_DIR/release/tollgate, built if missing), BENCH_OUT (default
# bench/results/replicas-latest.json), BENCH_KEEP_TMP=1 (keep the scratch directory),
# BENCH_PG_SSLMODE (the replicas' sslmode to PostgreSQL, default disable as in the recorded
# runs; the test cluster also serves TLS: prefer, require, verify-full with its ca.pem).
# Prints a summary and writes the figures as flat JSON; exits 1 if a check fails (errors or
# non-2xx answers, reservations left, calls without a usage record). Not part of `cargo test`.
set -euo pipefail

DUR=${BENCH_DURATION:-10}
CONNS=${BENCH_CONNECTIONS:-32}
USERS=${BENCH_USERS:-16}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/results/replicas-latest.json}
BIN=${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tollgate}
[[ $BIN = /* ]] || BIN=$ROOT/$BIN

log() { printf '[replicas %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $DUR =~ ^[1-9][0-9]*$ && $CONNS =~ ^[1-9][0-9]*$ && $USERS =~ ^[1-9][0-9]*$ ]] \
    || die "BENCH_DURATION, BENCH_CONNECTIONS and BENCH_USERS must be positive integers"

# ---------------------------------------------------------------- tools (as bench/run.sh)
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
    log "installing ${need[*]} with apt-get"
    SUDO=; [[ $(id -u) = 0 ]] || SUDO=sudo
    $SUDO apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || die "apt-get install ${need[*]} failed"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ ! -x $BIN ]]; then
    log "building $BIN (cargo build --release)"
    (cd "$ROOT" && cargo build --release) || die "build failed"
fi
[[ -x $BIN ]] || die "no tollgate binary at $BIN (set TOLLGATE_BIN)"
# read now, not after the runs: the tree is shared and may move on meanwhile. "+uncommitted"
# when the sources differ from that commit; the binary's build time and whether any source is
# newer than it say which tree it was built from.
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -z $(git -C "$ROOT" status --porcelain -- src migrations Cargo.toml Cargo.lock 2>/dev/null) ]] || COMMIT+=+uncommitted
BIN_BUILT=$(date -u -r "$BIN" +%Y-%m-%dT%H:%M:%SZ)
NEWER=$(cd "$ROOT" && find src migrations Cargo.toml Cargo.lock -newer "$BIN" -type f 2>/dev/null | wc -l)

# ---------------------------------------------------------------- scratch + cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-replicas.XXXXXX")
# The cluster's directory is handed to the postgres user: not under $TMP (mode 700, root's).
PGDIR=$(mktemp -u -d "${TMPDIR:-/tmp}/tollgate-replicas-pg.XXXXXX")
PIDS=()
PG_STARTED=
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [[ -n $PG_STARTED ]]; then
        if [[ -n ${BENCH_KEEP_TMP:-} ]]; then cp "$PGDIR/server.log" "$TMP/pg-server.log" 2>/dev/null || true; fi
        bash "$ROOT/tests/pg/stop.sh" "$PGDIR" || true
    fi
    [[ -n ${BENCH_KEEP_TMP:-} ]] && log "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORTS=()
new_port() { # prints a free port not handed out before in this run
    local p
    while :; do
        p=$(free_port)
        [[ " ${PORTS[*]} " = *" $p "* ]] || break
    done
    echo "$p"
}
MOCK_PORT=$(new_port); PORTS+=("$MOCK_PORT")
PROXY_PORT=$(new_port); PORTS+=("$PROXY_PORT")
TG_PORT=$(new_port); PORTS+=("$TG_PORT")
R1_PORT=$(new_port); PORTS+=("$R1_PORT")
R2_PORT=$(new_port); PORTS+=("$R2_PORT")
LB_PORT=$(new_port); PORTS+=("$LB_PORT")

RES=$TMP/results.tsv; : >"$RES"
LOADAVG0=$(cut -d" " -f1-3 /proc/loadavg)   # other work on the machine skews every figure
rec() { printf '%s\t%s\n' "$1" "$2" >>"$RES"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{sub(/^.*\) /, ""); print $12, $13}' "/proc/$1/stat"; }  # pid -> utime stime

# ---------------------------------------------------------------- PostgreSQL
log "starting PostgreSQL in $PGDIR (tests/pg/start.sh)"
PG_STARTED=1
PG_ADMIN=$(bash "$ROOT/tests/pg/start.sh" "$PGDIR" 2>"$TMP/pg-start.log") \
    || { cat "$TMP/pg-start.log" >&2; die "tests/pg/start.sh failed"; }
[[ $PG_ADMIN = postgres://* ]] || { cat "$TMP/pg-start.log" >&2; die "tests/pg/start.sh printed no URL: $PG_ADMIN"; }
PGURL=${PG_ADMIN%/postgres}/bench?sslmode=${BENCH_PG_SSLMODE:-disable}
psql -qAt "$PG_ADMIN" -c 'CREATE DATABASE bench' >/dev/null || die "CREATE DATABASE bench failed"
# time spent inside tollgate_grow() and tollgate_held(), read from pg_stat_user_functions
psql -qAt "$PG_ADMIN" -c "ALTER DATABASE bench SET track_functions = 'all'" >/dev/null
PG_PM=$(head -n1 "$PGDIR/data/postmaster.pid")
kill -0 "$PG_PM" 2>/dev/null || die "no postmaster at pid $PG_PM"
PG_VERSION=$(psql -qAt "$PG_ADMIN" -c 'SHOW server_version' | awk '{print $1}')
log "PostgreSQL $PG_VERSION (postmaster $PG_PM): $PGURL"
# CPU ticks of the whole cluster: the postmaster and every child alive now, plus the times of
# the children that have exited since it started (the postmaster's cutime + cstime)
pg_ticks() {
    local kids t=0 p
    kids=$(ps --ppid "$PG_PM" -o pid= 2>/dev/null || true)
    t=$(awk '{sub(/^.*\) /, ""); print $12 + $13 + $14 + $15}' "/proc/$PG_PM/stat")
    for p in $kids; do
        t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
pgq() { psql -qAt -F $'\t' "$PGURL" -c "$1"; }

# ---------------------------------------------------------------- mock upstream, bare proxy, LB
PLAIN_BODY='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}'
MODELS_BODY='{"object":"list","data":[{"id":"gpt-bench","object":"model","created":1700000000,"owned_by":"mock"}]}'

nginx_head() { # dir master(on|off): the common part of each nginx's configuration
    cat <<EOF
worker_processes 1;
daemon off;
master_process $2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; multi_accept on; }
EOF
}
nginx_http() { # dir
    cat <<EOF
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    tcp_nodelay on;
EOF
}
mkdir -p "$TMP/nginx" "$TMP/proxy" "$TMP/lb"
# the mock OpenAI upstream (as bench/run.sh, plain answers only)
{
    nginx_head "$TMP/nginx" on
    echo "http {"; nginx_http "$TMP/nginx"
    cat <<EOF
    server {
        listen 127.0.0.1:$MOCK_PORT reuseport backlog=4096;
        location = /plain/v1/chat/completions { default_type application/json; return 200 '$PLAIN_BODY'; }
        location = /plain/v1/models { default_type application/json; return 200 '$MODELS_BODY'; }
        location / { return 404; }
    }
}
EOF
} >"$TMP/nginx.conf"
# nginx as a bare reverse proxy to the mock, in a process of its own (as bench/run.sh)
{
    nginx_head "$TMP/proxy" off
    echo "http {"; nginx_http "$TMP/proxy"
    cat <<EOF
    upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$PROXY_PORT reuseport backlog=4096;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$TMP/proxy.conf"
# nginx as the replicas' load balancer: round robin, keep-alive pool, the README's settings
{
    nginx_head "$TMP/lb" off
    echo "http {"; nginx_http "$TMP/lb"
    cat <<EOF
    upstream tollgate { server 127.0.0.1:$R1_PORT; server 127.0.0.1:$R2_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$LB_PORT reuseport backlog=4096;
        location / {
            proxy_pass http://tollgate;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 600s;
        }
    }
}
EOF
} >"$TMP/lb.conf"

# ---------------------------------------------------------------- tollgate configs, users, keys
tg_config() { # listen [database url]
    cat <<EOF
[server]
listen = "$1"
metrics = "public"
trusted_proxies = ["127.0.0.1"]
EOF
    [[ -n ${2:-} ]] && printf '\n[database]\nurl = "%s"\n' "$2"
    cat <<EOF

[metering]

[routing]
default_provider = "plain"

[providers.plain]
base_url = "http://127.0.0.1:$MOCK_PORT/plain/v1"
api = "openai"

[[plans]]
name = "bench"
monthly_tokens = 1000000000000
requests_per_minute = 1000000000
price_usd_month = 0
allowed_models = ["*"]
EOF
}
tg_config "127.0.0.1:$TG_PORT" >"$TMP/sqlite.toml"
tg_config "127.0.0.1:$R1_PORT" "$PGURL" >"$TMP/replica.toml"   # each replica is given --listen
export TOLLGATE_ADMIN_PASSWORD=bench-admin-password RUST_LOG=warn
TG_SQLITE=("$BIN" --config "$TMP/sqlite.toml" --db "$TMP/tollgate.db")
TG_PG=("$BIN" --config "$TMP/replica.toml" --db "$PGURL")
mkuser() { # label tollgate-command...: user "bench" on plan "bench", prints a new key
    local label=$1; shift
    echo 'bench-user-password' | "$@" user add bench --password-stdin --plan bench >/dev/null 2>"$TMP/user-$label.log" \
        || { cat "$TMP/user-$label.log" >&2; die "tollgate user add ($label) failed"; }
    "$@" key create --user bench --name bench 2>"$TMP/key-$label.log" | tail -n1
}
KEY_SQLITE=$(mkuser sqlite "${TG_SQLITE[@]}")
[[ -n $KEY_SQLITE ]] || { cat "$TMP/key-sqlite.log" >&2; die "tollgate key create (sqlite) printed no key"; }
# on PostgreSQL: migrations and the first-start seed (plans from the config) run here, once,
# and the key exists before the replicas start
KEY_PG=$(mkuser pg "${TG_PG[@]}")
[[ -n $KEY_PG ]] || { cat "$TMP/key-pg.log" >&2; die "tollgate key create (pg) printed no key"; }
# the many-users run: users bench1..N, one key each, on the same plan
KEYS_MULTI=()
for ((u = 1; u <= USERS; u++)); do
    echo 'bench-user-password' | "${TG_PG[@]}" user add "bench$u" --password-stdin --plan bench >/dev/null 2>"$TMP/user-multi.log" \
        || { cat "$TMP/user-multi.log" >&2; die "tollgate user add bench$u failed"; }
    KEYS_MULTI+=("$("${TG_PG[@]}" key create --user "bench$u" --name bench 2>"$TMP/key-multi.log" | tail -n1)")
    [[ -n ${KEYS_MULTI[-1]} ]] || { cat "$TMP/key-multi.log" >&2; die "tollgate key create (bench$u) printed no key"; }
done

# ---------------------------------------------------------------- wrk scripts (as bench/run.sh)
for who in sqlite pg; do
    key=KEY_${who^^}
    cat >"$TMP/plain-$who.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"plain/gpt-bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"stream":false}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer ${!key}"
EOF
done

# the same request, each one with the next user's key in turn
{
    printf 'local keys = {'; printf '"%s",' "${KEYS_MULTI[@]}"; printf '}\n'
    cat <<'EOF'
local body = '{"model":"plain/gpt-bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words."}],"stream":false}'
local reqs, i = {}, 0
init = function(args)
    for n, k in ipairs(keys) do
        reqs[n] = wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. k}, body)
    end
end
request = function()
    i = i % #reqs + 1
    return reqs[i]
end
EOF
} >"$TMP/plain-pg-users.lua"

# ---------------------------------------------------------------- start servers
wait_http() { # url, max seconds
    local url=$1 max=${2:-10} t0=$SECONDS
    until curl -s -o /dev/null --max-time 1 "$url"; do
        ((SECONDS - t0 < max)) || return 1
        sleep 0.05
    done
}
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx.conf" -e "$TMP/nginx/error.log" 2>"$TMP/nginx/stderr.log" &
PIDS+=($!)
"$NGINX" -p "$TMP/proxy" -c "$TMP/proxy.conf" -e "$TMP/proxy/error.log" 2>"$TMP/proxy/stderr.log" &
PROXY_PID=$!; PIDS+=("$PROXY_PID")
"$NGINX" -p "$TMP/lb" -c "$TMP/lb.conf" -e "$TMP/lb/error.log" 2>"$TMP/lb/stderr.log" &
LB_PID=$!; PIDS+=("$LB_PID")
wait_http "http://127.0.0.1:$MOCK_PORT/plain/v1/models" || { cat "$TMP/nginx/"*.log >&2; die "mock nginx did not start"; }
wait_http "http://127.0.0.1:$PROXY_PORT/plain/v1/models" || { cat "$TMP/proxy/"*.log >&2; die "nginx proxy did not start"; }

start_tollgate() { # label port command...: starts `serve`, waits for /health, sets STARTED_PID
    local label=$1 port=$2 pid; shift 2
    "$@" serve --listen "127.0.0.1:$port" >"$TMP/tollgate-$label.out" 2>"$TMP/tollgate-$label.log" &
    pid=$!; PIDS+=("$pid"); STARTED_PID=$pid
    for _ in $(seq 400); do   # at most ~20 s
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" && return
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    cat "$TMP/tollgate-$label.log" >&2; die "tollgate $label did not start"
}
start_tollgate sqlite "$TG_PORT" "${TG_SQLITE[@]}"; TG_PID=$STARTED_PID
start_tollgate replica1 "$R1_PORT" "$BIN" --config "$TMP/replica.toml"; R1_PID=$STARTED_PID
start_tollgate replica2 "$R2_PORT" "$BIN" --config "$TMP/replica.toml"; R2_PID=$STARTED_PID
wait_http "http://127.0.0.1:$LB_PORT/health" || { cat "$TMP/lb/"*.log >&2; die "nginx load balancer did not start"; }
log "tollgate on SQLite (pid $TG_PID) :$TG_PORT; replicas on PostgreSQL (pids $R1_PID, $R2_PID) :$R1_PORT :$R2_PORT behind nginx :$LB_PORT"

# ---------------------------------------------------------------- sanity: answers are what they should be
chat() { # url key
    curl -s --max-time 5 -w '\n%{http_code}' "$1/v1/chat/completions" -H "Authorization: Bearer $2" \
        -H 'Content-Type: application/json' -d '{"model":"plain/gpt-bench","messages":[{"role":"user","content":"hi"}]}'
}
check_chat() { # label url key
    local ans
    ans=$(chat "$2" "$3")
    [[ ${ans##*$'\n'} = 200 && $ans = *'"_usage_info"'* ]] || die "$1: not a 200 with _usage_info: $ans"
}
check_chat "tollgate on SQLite" "http://127.0.0.1:$TG_PORT" "$KEY_SQLITE"
for i in 1 2 3 4; do check_chat "load balancer, call $i" "http://127.0.0.1:$LB_PORT" "$KEY_PG"; done
check_chat "replica 1" "http://127.0.0.1:$R1_PORT" "$KEY_PG"
check_chat "replica 2" "http://127.0.0.1:$R2_PORT" "$KEY_PG"

replica_calls() { # port: calls counted by a replica's /metrics
    curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk '/^tollgate_requests_total/ {n += $NF} END {printf "%d", n}'
}
records() { pgq 'SELECT COALESCE(max(id), 0) FROM requests'; }
fn_stats() { # function -> calls, total ms (pg_stat_user_functions)
    pgq "SELECT COALESCE(sum(calls), 0), COALESCE(sum(total_time), 0) FROM pg_stat_user_functions WHERE funcname = '$1'"
}
xacts() { pgq "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'bench'"; }
drain() { # waits until the replicas' usage records stop arriving (at most 15 s); prints ms waited
    local t0 last=-1 now i
    t0=$(date +%s%N)
    for i in $(seq 60); do
        now=$(records)
        [[ $now = "$last" ]] && break
        last=$now; sleep 0.25
    done
    echo $(( ($(date +%s%N) - t0) / 1000000 ))
}

# ---------------------------------------------------------------- wrk runs
to_us() { # wrk latency like 123.45us / 1.23ms / 1.02s -> microseconds
    awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /us$/) f=1; else if (v ~ /ms$/) f=1000; else if (v ~ /m$/) f=60e6; else if (v ~ /s$/) f=1e6; else f=1; printf "%.1f", n*f }'
}
per_req() { # ticks requests -> µs per request
    awk -v d="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN{printf "%.2f", (n > 0 ? d/hz*1e6/n : 0)}'
}
sum_ticks() { local t=0 p u s; for p in "$@"; do read -r u s < <(cpu_ticks "$p"); t=$((t + u + s)); done; echo "$t"; }
sum_ticks_us() { local tu=0 ts=0 p u s; for p in "$@"; do read -r u s < <(cpu_ticks "$p"); tu=$((tu + u)); ts=$((ts + s)); done; echo "$tu $ts"; }
run_wrk() { # name url lua conns threads
    local name=$1 url=$2 script=$3 c=$4 t=$5 f=$TMP/wrk-$1.txt reqs
    local tg0 tg1 pg0 pg1 lb0 lb1 rec0 rec1 ad0 ad1 he0 he1 x0 x1 w0 w1 r10 r11 r20 r21 tgp=() pg=
    case $name in
        sqlite*) tgp=("$TG_PID") ;;
        pg*) tgp=("$R1_PID" "$R2_PID"); pg=1 ;;
    esac
    if [[ -n $pg ]]; then
        rec0=$(records); ad0=$(fn_stats tollgate_grow); he0=$(fn_stats tollgate_held); x0=$(xacts)
        r10=$(replica_calls "$R1_PORT"); r20=$(replica_calls "$R2_PORT")
    fi
    ((${#tgp[@]})) && tg0=$(sum_ticks_us "${tgp[@]}")
    pg0=$(pg_ticks); lb0=$(sum_ticks "$LB_PID"); w0=$(sum_ticks "$PROXY_PID")
    wrk -t"$t" -c"$c" -d"${DUR}s" --timeout 5s --latency -s "$TMP/$script.lua" "$url" >"$f" 2>&1 || { cat "$f" >&2; die "wrk $name failed"; }
    # the replicas' records of this run's calls are written after it: their CPU belongs to it
    [[ -n $pg ]] && rec "$name.usage_drain_ms" "$(drain)"
    ((${#tgp[@]})) && tg1=$(sum_ticks_us "${tgp[@]}")
    pg1=$(pg_ticks); lb1=$(sum_ticks "$LB_PID"); w1=$(sum_ticks "$PROXY_PID")
    reqs=$(awk '/requests in/ {print $1}' "$f")
    rec "$name.connections" "$c"
    rec "$name.requests" "$reqs"
    rec "$name.rps" "$(awk '/^Requests\/sec:/ {print $2}' "$f")"
    rec "$name.non2xx" "$(awk '/Non-2xx/ {n+=$NF} END{print n+0}' "$f")"
    rec "$name.errors" "$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(/,/,""); n+=$4+$6+$8+$10} END{print n+0}' "$f")"
    local p
    for p in 50 75 90 99; do
        rec "$name.latency_us.p$p" "$(to_us "$(awk -v p="$p%" '$1==p {print $2}' "$f")")"
    done
    if ((${#tgp[@]})); then
        local u0 s0 u1 s1
        read -r u0 s0 <<<"$tg0"; read -r u1 s1 <<<"$tg1"
        rec "$name.tollgate_cpu_us_per_request" "$(per_req $((u1 + s1 - u0 - s0)) "$reqs")"
        rec "$name.tollgate_cpu_user_us_per_request" "$(per_req $((u1 - u0)) "$reqs")"
        rec "$name.tollgate_cpu_sys_us_per_request" "$(per_req $((s1 - s0)) "$reqs")"
    fi
    rec "$name.postgres_cpu_us_per_request" "$(per_req $((pg1 - pg0)) "$reqs")"
    [[ $name = pg* ]] && rec "$name.nginx_lb_cpu_us_per_request" "$(per_req $((lb1 - lb0)) "$reqs")"
    [[ $name = proxy* ]] && rec "$name.nginx_proxy_cpu_us_per_request" "$(per_req $((w1 - w0)) "$reqs")"
    if [[ -n $pg ]]; then
        sleep 1.2   # backends report their statistics at most once a second
        rec1=$(records); ad1=$(fn_stats tollgate_grow); he1=$(fn_stats tollgate_held); x1=$(xacts)
        r11=$(replica_calls "$R1_PORT"); r21=$(replica_calls "$R2_PORT")
        rec "$name.usage_records" "$((rec1 - rec0))"
        rec "$name.replica1_calls" "$((r11 - r10))"
        rec "$name.replica2_calls" "$((r21 - r20))"
        rec "$name.pg_transactions_per_request" "$(awk -v d=$((x1 - x0)) -v n="$reqs" 'BEGIN{printf "%.2f", d/n}')"
        # pg_stat_user_functions: calls and mean time inside (a lock wait in tollgate_grow
        # included). Builds before slices (V8) called tollgate_admit on every call instead.
        local fn a b
        for fn in grow held; do
            a=ad0; b=ad1; [[ $fn = held ]] && { a=he0; b=he1; }
            read -r c0 t0 <<<"${!a}"; read -r c1 t1 <<<"${!b}"
            rec "$name.${fn}_calls" "$((c1 - c0))"
            rec "$name.${fn}_mean_us" "$(awk -v c=$((c1 - c0)) -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.1f", (c > 0 ? (t1-t0)*1000/c : 0)}')"
        done
    fi
    log "$name: $(awk '/^Requests\/sec:/ {print $2}' "$f") req/s  p50 $(awk '$1=="50%" {print $2}' "$f")  p99 $(awk '$1=="99%" {print $2}' "$f")"
}
# PostgreSQL's wait events and live reservations during a 32-connection run through the
# balancer, sampled twice a second
sample_waits() { # name seconds -> TMP/waits-NAME.txt (a line per active backend, -- per sample), TMP/reservations-NAME.txt
    local end=$((SECONDS + $2))
    : >"$TMP/waits-$1.txt"; : >"$TMP/reservations-$1.txt"
    sleep 1
    while ((SECONDS < end)); do
        pgq "SELECT COALESCE(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
             WHERE datname = 'bench' AND state = 'active' AND pid <> pg_backend_pid()" >>"$TMP/waits-$1.txt" 2>/dev/null || true
        echo "--" >>"$TMP/waits-$1.txt"
        pgq 'SELECT count(*) FROM reservations' >>"$TMP/reservations-$1.txt" 2>/dev/null || true
        sleep 0.5
    done
}
sampled_run() { # name url lua: run_wrk at $CONNS connections with sample_waits beside it
    sample_waits "$1" "$DUR" & SAMPLER=$!; PIDS+=("$SAMPLER")
    run_wrk "$1" "$2" "$3" "$CONNS" 2
    wait "$SAMPLER" || true
    awk -v pre="$1.waits" '$0 == "--" {n++; next} {c[$0]++; a++}
        END {if (n) {for (k in c) printf "%s.%s\t%.2f\n", pre, k, c[k]/n; printf "%s.active_backends\t%.2f\n", pre, a/n}}' \
        "$TMP/waits-$1.txt" >>"$RES"
    rec "$1.reservations_live_mean" "$(awk '{s += $1; n++} END {printf "%.0f", n ? s/n : 0}' "$TMP/reservations-$1.txt")"
}

# warm-up: model-list caches, upstream and LB pools, the replicas' PostgreSQL pools and
# prepared statements
S=http://127.0.0.1:$TG_PORT; L=http://127.0.0.1:$LB_PORT; P=http://127.0.0.1:$PROXY_PORT; R1=http://127.0.0.1:$R1_PORT
wrk -t2 -c"$CONNS" -d1s -s "$TMP/plain-sqlite.lua" "$S/v1/chat/completions" >/dev/null 2>&1 || true
wrk -t2 -c"$CONNS" -d2s -s "$TMP/plain-pg.lua" "$L/v1/chat/completions" >/dev/null 2>&1 || true
wrk -t2 -c"$CONNS" -d1s -s "$TMP/plain-pg-users.lua" "$L/v1/chat/completions" >/dev/null 2>&1 || true
drain >/dev/null

log "$CONNS connections, ${DUR}s each"
run_wrk sqlite_c$CONNS "$S/v1/chat/completions" plain-sqlite "$CONNS" 2
sampled_run pg_lb_c$CONNS "$L/v1/chat/completions" plain-pg
log "$CONNS connections, calls spread over $USERS users"
sampled_run pg_lb_users_c$CONNS "$L/v1/chat/completions" plain-pg-users
log "one connection"
run_wrk proxy_c1 "$P/plain/v1/chat/completions" plain-sqlite 1 1
run_wrk sqlite_c1 "$S/v1/chat/completions" plain-sqlite 1 1
run_wrk pg_lb_c1 "$L/v1/chat/completions" plain-pg 1 1
run_wrk pg_replica1_c1 "$R1/v1/chat/completions" plain-pg 1 1

# ---------------------------------------------------------------- after the runs
rec pg.reservations_left "$(pgq 'SELECT count(*) FROM reservations')"
rec pg.records_total "$(pgq 'SELECT count(*) FROM requests')"
rec pg.records_not_ok "$(pgq "SELECT count(*) FROM requests WHERE outcome <> 'ok'")"
# which outcomes (wrk ends each run with calls in flight; their clients are gone)
rec pg.records_not_ok_by_outcome "$(pgq "SELECT coalesce(string_agg(outcome || ' ' || n, ', '), '') FROM (SELECT outcome, count(*) AS n FROM requests WHERE outcome <> 'ok' GROUP BY outcome ORDER BY outcome) o")"
rec pg.backends_bench "$(pgq "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bench'")"
rec pg.version "$PG_VERSION"
# the replicas' usage writers retry a batch that PostgreSQL refused (e.g. a deadlock between them)
rec pg.deadlocks "$(grep -c 'deadlock detected' "$PGDIR/server.log" || true)"
rec tollgate.usage_write_retries "$(cat "$TMP"/tollgate-replica*.log | grep -c 'cannot write usage records' || true)"
rec machine.nproc "$(nproc)"
rec machine.cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
rec machine.kernel "$(uname -r)"
rec machine.nginx "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
rec machine.wrk "$(wrk -v 2>&1 | awk 'NR==1 {print $2}')"
rec run.duration_s "$DUR"
rec run.connections "$CONNS"
rec run.users_many "$USERS"
rec run.loadavg_before "$LOADAVG0"
rec run.loadavg_after "$(cut -d" " -f1-3 /proc/loadavg)"
rec run.date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
rec run.tollgate_commit "$COMMIT"
rec run.tollgate_binary_built "$BIN_BUILT"
rec run.sources_newer_than_binary "$NEWER"

# ---------------------------------------------------------------- JSON + summary
mkdir -p "$(dirname "$OUT")"
python3 - "$RES" "$OUT" "$CONNS" <<'EOF'
import json, sys
flat = {}
for line in open(sys.argv[1]):
    k, v = line.rstrip("\n").split("\t", 1)
    try: v = int(v)
    except ValueError:
        try: v = float(v)
        except ValueError: pass
    flat[k] = v
c = sys.argv[3]
S, L, U = f"sqlite_c{c}", f"pg_lb_c{c}", f"pg_lb_users_c{c}"
g = flat.get
flat["ratio_pg_two_replicas_to_sqlite_single"] = round(g(L + ".rps") / g(S + ".rps"), 3)
flat["ratio_pg_two_replicas_many_users_to_sqlite_single"] = round(g(U + ".rps") / g(S + ".rps"), 3)
for n in ("sqlite_c1", "pg_lb_c1", "pg_replica1_c1"):
    for p in ("p50", "p99"):
        flat[f"{n}.added_latency_us_over_bare_proxy.{p}"] = round(g(f"{n}.latency_us.{p}") - g(f"proxy_c1.latency_us.{p}"), 1)
errs = sum(v for k, v in flat.items() if k.endswith(".errors"))
flat["errors_total"] = errs
budget_items = [
    (f"Throughput, two replicas on PostgreSQL / one on SQLite, {c} connections", flat["ratio_pg_two_replicas_to_sqlite_single"], ">=", 0.25),
    ("Added latency at 1 connection p50, replicas behind nginx over the bare proxy (µs)", flat["pg_lb_c1.added_latency_us_over_bare_proxy.p50"], "<=", 500),
]
pg_runs = (L, U, "pg_lb_c1", "pg_replica1_c1")
flat["pg.requests_without_record"] = max(0, sum(g(n + ".requests") - g(n + ".usage_records") for n in pg_runs))
check_items = [
    ("Errors and non-2xx answers in all runs", errs, "<=", 0),
    ("Reservations left after the runs", g("pg.reservations_left"), "<=", 0),
    ("Calls served through PostgreSQL without a usage record", flat["pg.requests_without_record"], "<=", 0),
]
def judge(prefix, items):
    out = []
    for i, (name, val, op, lim) in enumerate(items):
        ok = val <= lim if op == "<=" else val >= lim
        flat[f"{prefix}.{i}.item"] = name; flat[f"{prefix}.{i}.value"] = val
        flat[f"{prefix}.{i}.limit"] = f"{op} {lim}"; flat[f"{prefix}.{i}.met"] = ok
        out.append((name, val, op, lim, ok))
    return out
budget, checks = judge("budget", budget_items), judge("check", check_items)
json.dump(flat, open(sys.argv[2], "w"), indent=2, ensure_ascii=False); open(sys.argv[2], "a").write("\n")

print(f"\ntollgate {g('run.tollgate_commit')}, binary built {g('run.tollgate_binary_built')} "
      f"({g('run.sources_newer_than_binary')} source files newer than it)")
print(f"machine: {g('machine.nproc')} cores, {g('machine.cpu')}; PostgreSQL {g('pg.version')}; "
      f"{g('run.duration_s')} s per run; load average before/after {g('run.loadavg_before')} / {g('run.loadavg_after')}")
rows = [(f"SQLite, one tollgate, {c} conn", S), (f"PG, 2 replicas via nginx, {c} conn", L),
        (f"  same, {g('run.users_many')} users in turn", U),
        ("bare nginx proxy, 1 conn", "proxy_c1"), ("SQLite, one tollgate, 1 conn", "sqlite_c1"),
        ("PG, 2 replicas via nginx, 1 conn", "pg_lb_c1"), ("PG, replica 1 direct, 1 conn", "pg_replica1_c1")]
print(f"{'':36}{'req/s':>9}{'p50 µs':>9}{'p99 µs':>9}{'+p50':>8}{'tg CPU':>8}{'PG CPU':>8}{'LB CPU':>8}{'errors':>7}")
def f(v, w, fmt="{:.0f}"): return f"{'' if v is None else fmt.format(v):>{w}}"
for label, n in rows:
    print(f"{label:36}{f(g(n + '.rps'), 9)}{f(g(n + '.latency_us.p50'), 9)}{f(g(n + '.latency_us.p99'), 9)}"
          f"{f(g(n + '.added_latency_us_over_bare_proxy.p50'), 8, '{:+.0f}')}"
          f"{f(g(n + '.tollgate_cpu_us_per_request'), 8, '{:.1f}')}{f(g(n + '.postgres_cpu_us_per_request'), 8, '{:.1f}')}"
          f"{f(g(n + '.nginx_lb_cpu_us_per_request') or g(n + '.nginx_proxy_cpu_us_per_request'), 8, '{:.1f}')}{f(g(n + '.errors'), 7)}")
print("(CPU in µs per request: tollgate = both replicas' processes; PG = every process of the cluster; LB = nginx balancer or bare proxy)")
print("tollgate CPU user/system µs per request: " + "; ".join(
    f"{label.strip()} {g(n + '.tollgate_cpu_user_us_per_request')}/{g(n + '.tollgate_cpu_sys_us_per_request')}"
    for label, n in rows if g(n + '.tollgate_cpu_user_us_per_request') is not None))
print(f"ratio two replicas on PG / one on SQLite at {c} connections: {flat['ratio_pg_two_replicas_to_sqlite_single']} "
      f"(calls of {g('run.users_many')} users in turn: {flat['ratio_pg_two_replicas_many_users_to_sqlite_single']})")
for n in (L, U, "pg_lb_c1", "pg_replica1_c1"):
    print(f"{n}: calls per replica {g(n + '.replica1_calls')} / {g(n + '.replica2_calls')}; usage records {g(n + '.usage_records')} "
          f"for {g(n + '.requests')} requests (drained {g(n + '.usage_drain_ms')} ms after wrk); PG transactions per request "
          f"{g(n + '.pg_transactions_per_request')}; tollgate_grow calls {g(n + '.grow_calls')}, mean time inside {g(n + '.grow_mean_us')} µs"
          + (f", of tollgate_held (called by it) {g(n + '.held_mean_us')} µs" if g(n + '.held_calls') else ""))
for n in (L, U):
    waits = {k.split(".", 2)[2]: v for k, v in flat.items() if k.startswith(n + ".waits.")}
    print(f"{n}: PostgreSQL backends active, mean per sample: " + ", ".join(f"{k} {v}" for k, v in sorted(waits.items(), key=lambda kv: -kv[1]))
          + f"; live reservations {g(n + '.reservations_live_mean')}")
print(f"usage writes retried: {g('tollgate.usage_write_retries')} (PostgreSQL deadlocks: {g('pg.deadlocks')}); "
      f"usage records not 'ok': {g('pg.records_not_ok')} ({g('pg.records_not_ok_by_outcome') or 'none'})")
print("\nbudget:")
for name, val, op, lim, ok in budget:
    print(f"  {'met   ' if ok else 'MISSED'}  {name}: {val} (budget {op} {lim})")
print("checks:")
for name, val, op, lim, ok in checks:
    print(f"  {'ok    ' if ok else 'FAILED'}  {name}: {val} ({op} {lim})")
print(f"\nwritten to {sys.argv[2]}")
# a missed budget is a finding; a failed check means the figures are not to be trusted
sys.exit(0 if all(ok for *_, ok in checks) else 1)
EOF
