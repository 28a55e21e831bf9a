#!/usr/bin/env bash
# Many pipelines in one process (`host run --config tidemark.toml`).
#
# Default mode: PG_PIPELINES PostgreSQL tables (schema tidemark_many, t001…) and
# SQLITE_PIPELINES SQLite files, ROWS rows each, one pipeline per table, a mix of no module,
# mask_pii, passthrough (all into /dev/null) and the webhook example posting to a local receiver
# (bench/receiver.py, allowed by IP). One polling host runs them all. Reports:
#   - drain: from the host's start until every pipeline has delivered its ROWS rows
#     (`host status --json` polled every 0.25 s): seconds and total rows/s;
#   - tick: one new row in every table, then the time until every pipeline has it (the
#     slowest tenant's latency), and the largest lag_seconds in status at that moment;
#   - the host's peak RSS (VmHWM), threads, and its connections to PostgreSQL.
#
# --fault-isolation mode: one healthy PostgreSQL tenant (passthrough, ROWS rows, default
# 50000) alone, then next to bad tenants (guests spinning to their deadline, guests exhausting
# their memory, a webhook whose receiver is down, one that always answers 429, an unreachable
# source); prints the healthy tenant's rows/s in both runs and their ratio.
#
# Usage: bench/many-pipelines.sh [ROWS]                     (default 2000)
#        bench/many-pipelines.sh --fault-isolation [ROWS]   (default 50000)
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL   default postgres://postgres@127.0.0.1:5432/test; schema
#                                 tidemark_many is created there and dropped at the end
#   TIDEMARK_BENCH_PG_PIPELINES   default 150
#   TIDEMARK_BENCH_SQLITE_PIPELINES  default 50
#   TIDEMARK_BENCH_MAX_IN_FLIGHT  max_batches_in_flight (default 8)
#   TIDEMARK_BENCH_BATCH_SIZE     batch_size (default 500)
#   TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS  max_source_connections (default 8)
# The PostgreSQL pipelines share one pool of max_source_connections: the server's
# max_connections must leave room for it.
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_PIPELINES="${TIDEMARK_BENCH_PG_PIPELINES:-150}"
SQLITE_PIPELINES="${TIDEMARK_BENCH_SQLITE_PIPELINES:-50}"
MAX_IN_FLIGHT="${TIDEMARK_BENCH_MAX_IN_FLIGHT:-8}"
BATCH_SIZE="${TIDEMARK_BENCH_BATCH_SIZE:-500}"
MAX_SOURCE="${TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS:-8}"
SCHEMA=tidemark_many

BENCH_NAME=many-pipelines
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mode=many
if [[ "${1:-}" == "--fault-isolation" ]]; then
    mode=faults
    shift
fi
bench_help "${BASH_SOURCE[0]}" "$@"
if [[ $mode == many ]]; then ROWS="${1:-2000}"; else ROWS="${1:-50000}"; fi
for n in "$ROWS" "$PG_PIPELINES" "$SQLITE_PIPELINES" "$MAX_IN_FLIGHT" "$BATCH_SIZE"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a number (usage: $0 [--fault-isolation] [ROWS])"
done
prepare_bench tidemark-many --postgres psql python3 sqlite3 cargo ss
release="$target_dir/wasm32-wasip2/release"
for module in mask_pii passthrough webhook guest_loop_forever guest_allocate_unbounded; do
    [[ -f "$release/$module.wasm" ]] || build_guests
done
cache="$tmp/cache"
for module in mask_pii passthrough webhook guest_loop_forever guest_allocate_unbounded; do
    "$host" check --module "$release/$module.wasm" --cache-dir "$cache" >/dev/null 2>&1 ||
        die "host check --module $release/$module.wasm failed"
done

state_url="sqlite://$tmp/state.db"

# A receiver answering STATUS (default 200); sets receiver_port. Killed on exit with the temp dir.
receivers=()
start_receiver() {
    local port_file="$tmp/receiver.$RANDOM.port"
    python3 "$repo/bench/receiver.py" "$port_file" "${1:-200}" &
    receivers+=($!)
    for _ in $(seq 100); do [[ -s "$port_file" ]] && break; sleep 0.05; done
    [[ -s "$port_file" ]] || die "the receiver did not start"
    receiver_port="$(cat "$port_file")"
}
stop_processes() {
    local pid
    for pid in "${receivers[@]}" ${host_pid:-}; do kill "$pid" 2>/dev/null || true; done
}
at_exit+=(stop_processes)

# pipeline NAME SOURCE TABLE KIND: a [[pipeline]] table; KIND none|mask|pass|hook|spin|hog|down|busy.
pipeline() {
    local name=$1 source=$2 table=$3 kind=$4
    printf '[[pipeline]]\nname = "%s"\nsource = "%s"\ntable = "%s"\n' "$name" "$source" "$table"
    case $kind in
        none) printf 'output = "/dev/null"\n' ;;
        mask) printf 'output = "/dev/null"\nmodules = ["%s"]\n' "$release/mask_pii.wasm" ;;
        pass) printf 'output = "/dev/null"\nmodules = ["%s"]\n' "$release/passthrough.wasm" ;;
        spin) printf 'output = "/dev/null"\nmodules = ["%s"]\ndeadline = "1s"\n' "$release/guest_loop_forever.wasm" ;;
        hog) printf 'output = "/dev/null"\nmodules = ["%s"]\nmemory_limit = "16MiB"\n' "$release/guest_allocate_unbounded.wasm" ;;
        hook | down | busy)
            local port=${hook_port:-}
            [[ $kind == down ]] && port=$down_port
            [[ $kind == busy ]] && port=$busy_port
            printf 'modules = [{ path = "%s", config = { url = "http://127.0.0.1:%s/hook" } }]\n' \
                "$release/webhook.wasm" "$port"
            printf 'allow_hosts = ["http://127.0.0.1:%s"]\nmax_retries = 3\n' "$port"
            ;;
    esac
    printf '\n'
}

header() {
    printf 'state = "%s"\nmax_batches_in_flight = %s\nstop_timeout = "10s"\nmax_source_connections = %s\n\n' \
        "$state_url" "$MAX_IN_FLIGHT" "$MAX_SOURCE"
    printf '[defaults]\nsettle = "0s"\npoll = "1s"\nbatch_size = %s\ncache_dir = "%s"\n\n' "$BATCH_SIZE" "$cache"
}

# Prints "TOTAL_ROWS DONE_PIPELINES MAX_LAG" for pipelines whose names match $1 (a regex),
# DONE meaning rows_synced >= $2.
progress() {
    "$host" status --state "$state_url" --json 2>/dev/null | python3 -c '
import json, re, sys
pattern, want = re.compile(sys.argv[1]), int(sys.argv[2])
mine = [p for p in json.load(sys.stdin) if pattern.fullmatch(p["pipeline"])]
lags = [p["lag_seconds"] for p in mine if p["lag_seconds"] is not None]
print(sum(p["rows_synced"] for p in mine), sum(p["rows_synced"] >= want for p in mine),
      round(max(lags), 2) if lags else "-")' "$1" "$2"
}

# wait_for PATTERN ROWS_EACH COUNT: until COUNT pipelines matching PATTERN have ROWS_EACH rows;
# prints the last progress line.
wait_for() {
    local line
    while true; do
        line="$(progress "$1" "$2")"
        [[ "$(cut -d' ' -f2 <<<"$line")" -ge "$3" ]] && break
        kill -0 "$host_pid" 2>/dev/null || die "the host exited: $(tail -5 "$tmp/host.log")"
        sleep 0.25
    done
    echo "$line"
}

start_host() {
    rm -f "$tmp/state.db"*
    "$host" run --config "$tmp/tidemark.toml" 2>"$tmp/host.log" &
    host_pid=$!
    started=$EPOCHREALTIME
}

# SIGTERM, then waits; sets host_rc.
stop_host() {
    kill -TERM "$host_pid"
    host_rc=0
    wait "$host_pid" || host_rc=$?
    host_pid=
}

# The PostgreSQL pipelines of one server share one pool; the unreachable one of the fault
# mode has a pool of its own.
free=$(psql_q -At -c "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity")
needed=$MAX_SOURCE
[[ $needed -le $free ]] || die "the PostgreSQL pipelines need up to $needed connections and the server has $free free (max_connections): lower TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS or raise max_connections"
psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" -c "CREATE SCHEMA $SCHEMA" >/dev/null
schema_created=1

if [[ $mode == many ]]; then
    total=$(((PG_PIPELINES + SQLITE_PIPELINES)))
    note "seeding $PG_PIPELINES PostgreSQL tables and $SQLITE_PIPELINES SQLite files, $ROWS rows each"
    [[ $PG_PIPELINES -gt 0 ]] && psql_q <<<"$(pg_tables_sql 1 "$PG_PIPELINES" "$ROWS" 3)"
    for j in $(seq 1 "$SQLITE_PIPELINES"); do sqlite_users_seed "$tmp/s$j.db" "$ROWS"; done
    start_receiver 200
    hook_port=$receiver_port
    kinds=(none mask pass hook)
    {
        header
        for i in $(seq 1 "$PG_PIPELINES"); do
            pipeline "$(printf 'pg%03d' "$i")" "$URL" "$(printf '%s.t%03d' "$SCHEMA" "$i")" "${kinds[i % 4]}"
        done
        for j in $(seq 1 "$SQLITE_PIPELINES"); do
            pipeline "$(printf 'lite%03d' "$j")" "sqlite://$tmp/s$j.db" users "${kinds[j % 4]}"
        done
    } >"$tmp/tidemark.toml"
    note "running $total pipelines in one host (max_batches_in_flight $MAX_IN_FLIGHT, batch_size $BATCH_SIZE)"
    start_host
    line="$(wait_for '.*' "$ROWS" "$total")"
    drain=$(calc "$EPOCHREALTIME - $started")
    rows_total=$(cut -d' ' -f1 <<<"$line")
    # The host's own sockets to the server: pg_stat_activity also lists other users' sessions.
    connections="$(ss -tnpH state established "( dport = :$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlsplit(sys.argv[1]).port or 5432)' "$URL") )" | grep -c "pid=$host_pid," || true)"

    note "one new row in every table"
    psql_q -c "DO \$\$ DECLARE i int; BEGIN FOR i IN 1..$PG_PIPELINES LOOP
        EXECUTE format('INSERT INTO $SCHEMA.t%s VALUES ($ROWS + 1, ''new@example.com'', ''new'', now())',
        lpad(i::text, 3, '0')); END LOOP; END \$\$" >/dev/null
    for j in $(seq 1 "$SQLITE_PIPELINES"); do
        sqlite3 "$tmp/s$j.db" "INSERT INTO users VALUES ($ROWS + 1, 'new@example.com', 'new', strftime('%Y-%m-%d %H:%M:%f', 'now'))"
    done
    ticked=$EPOCHREALTIME
    line="$(wait_for '.*' "$((ROWS + 1))" "$total")"
    tick=$(calc "$EPOCHREALTIME - $ticked")
    max_lag=$(cut -d' ' -f3 <<<"$line")
    rss_kib=$(awk '/VmHWM/ {print $2}' "/proc/$host_pid/status")
    threads=$(awk '/Threads/ {print $2}' "/proc/$host_pid/status")
    received=$(curl -s "http://127.0.0.1:$hook_port/count" 2>/dev/null || python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$hook_port/count').read().decode().strip())")
    errors=$(grep -c ' ERROR ' "$tmp/host.log" || true)
    stop_host

    echo
    echo "many-pipelines: $total pipelines ($PG_PIPELINES PostgreSQL, $SQLITE_PIPELINES SQLite; none/mask_pii/passthrough/webhook in turn), $ROWS rows each, batch_size $BATCH_SIZE, max_batches_in_flight $MAX_IN_FLIGHT, $(nproc) cores"
    echo "  drain:   $rows_total rows in ${drain}s from the host's start = $(calc "$rows_total / $drain") rows/s"
    echo "  tick:    one new row in each table, all $total delivered after ${tick}s (poll 1s); max lag_seconds then: $max_lag"
    echo "  host:    peak RSS $(calc "$rss_kib / 1024") MiB, $threads threads, $connections PostgreSQL connections while idle"
    echo "  webhook: $received rows received; ERROR lines in the log: $errors; exit after SIGTERM: $host_rc"
else
    note "seeding the healthy tenant ($ROWS rows) and the bad tenants' tables"
    psql_q <<<"$(pg_tables_sql 1 1 "$ROWS" 3)"
    psql_q <<<"$(pg_tables_sql 2 11 100 3)"
    start_receiver 429
    busy_port=$receiver_port
    down_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    healthy() { pipeline healthy "$URL" "$SCHEMA.t001" pass; }
    run_healthy() {
        start_host
        wait_for healthy "$ROWS" 1 >/dev/null
        local took
        took=$(calc "$EPOCHREALTIME - $started")
        stop_host
        echo "$took"
    }
    { header; healthy; } >"$tmp/tidemark.toml"
    note "the healthy tenant alone"
    alone=$(run_healthy alone)
    {
        header
        healthy
        kinds=(spin spin spin hog hog hog down down busy busy)
        for k in $(seq 0 9); do
            pipeline "bad$k-${kinds[k]}" "$URL" "$(printf '%s.t%03d' "$SCHEMA" $((k + 2)))" "${kinds[k]}"
        done
        pipeline bad-unreachable "postgres://postgres@127.0.0.1:1/test" users none
        pipeline bad-no-table "$URL" "$SCHEMA.missing" none
    } >"$tmp/tidemark.toml"
    note "the healthy tenant next to 12 bad ones"
    crowded=$(run_healthy crowded)
    echo
    echo "fault isolation: a healthy PostgreSQL tenant (passthrough, $ROWS rows, batch_size $BATCH_SIZE), $(nproc) cores"
    echo "  alone:                      ${alone}s = $(calc "$ROWS / $alone") rows/s"
    echo "  next to 12 bad tenants:     ${crowded}s = $(calc "$ROWS / $crowded") rows/s (ratio $(calc "$alone / $crowded"))"
    echo "  (3 spinning to a 1s deadline, 3 out of memory, 2 webhooks to a closed port, 2 to a 429 receiver, an unreachable source, a missing table)"
fi
