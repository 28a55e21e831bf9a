#!/usr/bin/env bash
# Several workers (`host run --config tidemark.toml --state postgres://…`) sharing one file's
# pipelines through a PostgreSQL state store, on this machine.
#
# PG_PIPELINES PostgreSQL tables (schema tidemark_workers, t0001…) and SQLITE_PIPELINES SQLite
# files, ROWS rows each, one pipeline per table into /dev/null; WORKERS workers; the state
# store in a database of its own (tidemark_workers_state, created and dropped). Reports:
#   - drain: from the first worker's start until every pipeline delivered its ROWS rows
#     (the state store's rows_synced polled every 0.1 s): seconds and rows/s;
#   - change latency: one new row in every table, then for each pipeline the time from that
#     row's commit until its rows_synced counts it; p50, p99 and max;
#   - peak RSS of each worker (VmHWM); the most source connections (application_name
#     tidemark) and state-store connections to PostgreSQL, sampled every 0.5 s throughout;
#   - failover: kill -9 one worker, one more row in every table, time until every pipeline
#     that worker held has delivered it (lease_ttl plus a round, plus the catch-up).
#
# Usage: bench/workers.sh [ROWS]          (default 200)
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL       default postgres://postgres@127.0.0.1:5432/test
#   TIDEMARK_BENCH_PG_PIPELINES       default 600
#   TIDEMARK_BENCH_SQLITE_PIPELINES   default 400
#   TIDEMARK_BENCH_WORKERS            default 4
#   TIDEMARK_BENCH_LEASE_TTL          default 5s
#   TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS  per worker, default 4
#   TIDEMARK_BENCH_POLL               default 1s
#   TIDEMARK_BENCH_TIMEOUT            seconds to wait for each step, default 900
#   TIDEMARK_BENCH_KEEP_LOGS          a directory to copy the workers' logs and timings to
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_PIPELINES="${TIDEMARK_BENCH_PG_PIPELINES:-600}"
SQLITE_PIPELINES="${TIDEMARK_BENCH_SQLITE_PIPELINES:-400}"
WORKERS="${TIDEMARK_BENCH_WORKERS:-4}"
LEASE_TTL="${TIDEMARK_BENCH_LEASE_TTL:-5s}"
MAX_SOURCE="${TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS:-4}"
POLL="${TIDEMARK_BENCH_POLL:-1s}"
TIMEOUT="${TIDEMARK_BENCH_TIMEOUT:-900}"
SCHEMA=tidemark_workers
STATE_DB=tidemark_workers_state

BENCH_NAME=workers
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_count "${BASH_SOURCE[0]}" ROWS 200 "$@"
ROWS=$count
for n in "$PG_PIPELINES" "$SQLITE_PIPELINES"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' pipelines is not a number"
done
require_positive TIDEMARK_BENCH_WORKERS "$WORKERS"
require_positive TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS "$MAX_SOURCE"
require_positive TIDEMARK_BENCH_TIMEOUT "$TIMEOUT"
prepare_bench tidemark-workers --postgres psql python3 sqlite3 cargo ss
state_url="${URL%/*}/$STATE_DB"
worker_pids=()
sampler=

stop_workers() {
    local pid
    for pid in "${worker_pids[@]}" $sampler; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql_q -c "DROP DATABASE IF EXISTS $STATE_DB WITH (FORCE)" >/dev/null 2>&1 || true
}
at_exit+=(stop_workers)

# The state store's rows_synced per pipeline, read with psql (quicker than `host status` on a
# thousand pipelines, and the same column).
synced_sql="SELECT pipeline, rows_synced FROM tidemark.pipelines"

# insert_everywhere ID OUT: one new row (id ID) in every table; writes "PIPELINE EPOCH" to OUT,
# the moment each row was committed, so that a change's latency is its own, not the time it
# waited behind the other tables' inserts.
insert_everywhere() {
    local id=$1 out=$2
    psql_q -c "DO \$\$ DECLARE i int; BEGIN FOR i IN 1..$PG_PIPELINES LOOP
        EXECUTE format('INSERT INTO $SCHEMA.t%s VALUES ($id, ''new@example.com'', ''new'', now())',
        lpad(i::text, 4, '0')); END LOOP; END \$\$" >/dev/null
    python3 - "$id" "$PG_PIPELINES" "$SQLITE_PIPELINES" "$tmp" >"$out" <<'PY'
import sqlite3, sys, time
row_id, pg, lite, tmp = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
committed = time.time()
for i in range(1, pg + 1):
    print(f"pg{i:04d} {committed:.3f}")
for j in range(1, lite + 1):
    db = sqlite3.connect(f"{tmp}/s{j}.db", timeout=30)
    with db:
        db.execute("INSERT INTO users VALUES (?, 'new@example.com', 'new', strftime('%Y-%m-%d %H:%M:%f', 'now'))", (row_id,))
    db.close()
    print(f"lite{j:04d} {time.time():.3f}")
PY
}

# wait_rows WANT SINCE [ONLY]: polls the state store until each pipeline (of the file, or of the
# list in file ONLY) has rows_synced >= WANT; writes "PIPELINE SECONDS" for each, the seconds
# from SINCE (an epoch, or a file of "PIPELINE EPOCH" lines) to the poll that first saw it.
# Gives up after TIMEOUT seconds, naming the pipelines still behind.
wait_rows() {
    local want=$1 since=$2 only=${3:-}
    python3 - "$state_url" "$want" "$since" "$only" "$total" "$TIMEOUT" "$synced_sql" <<'PY'
import os, subprocess, sys, time
state, want, since, only, total, timeout, sql = sys.argv[1:8]
want, total, timeout = int(want), int(total), float(timeout)
if os.path.isfile(since):
    starts = {name: float(at) for name, at in (line.split() for line in open(since) if line.strip())}
else:
    starts = None
    since = float(since)
names = set(open(only).read().split()) if only else None
expected = len(names) if names is not None else total
done, began, seen = {}, time.time(), {}
while len(done) < expected:
    out = subprocess.run(["psql", state, "-X", "-At", "-F", " ", "-c", sql], capture_output=True, text=True)
    now = time.time()
    for line in out.stdout.split("\n") if out.returncode == 0 else []:
        if not line.strip():
            continue
        name, rows = line.split()
        seen[name] = int(rows)
        if names is not None and name not in names:
            continue
        if int(rows) >= want and name not in done:
            done[name] = now - (starts[name] if starts is not None else since)
    if now - began > timeout:
        behind = sorted(n for n in (names or seen) if n not in done)
        sys.exit(f"after {timeout:.0f}s, {len(behind)} pipelines still below {want} rows: "
                 + ", ".join(f"{n} ({seen.get(n, 0)})" for n in behind[:20]))
    time.sleep(0.1)
for name, seconds in sorted(done.items()):
    print(name, round(seconds, 3))
PY
}

percentiles() {
    python3 -c '
import sys
values = sorted(float(line.split()[1]) for line in sys.stdin if line.strip())
pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]
print(f"p50 {pick(0.5):.2f}s, p99 {pick(0.99):.2f}s, max {values[-1]:.2f}s over {len(values)} pipelines")'
}

# Samples, every half second until stopped, the connections each worker (the process ids in
# file $1) holds to PostgreSQL: its sockets (ss) matched to pg_stat_activity's client ports,
# split into source connections and state-store ones. One line a sample: "PID SOURCE STATE"
# for each worker, then "all N" for every client backend of the server (other users' too).
sample_connections() {
    exec python3 - "$1" "$URL" "$STATE_DB" <<'PY'
import re, subprocess, sys, time, urllib.parse
pids_file, url, state_db = sys.argv[1:4]
port = urllib.parse.urlsplit(url).port or 5432
while True:
    try:
        pids = set(open(pids_file).read().split())
    except OSError:
        pids = set()
    sockets = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                             capture_output=True, text=True).stdout
    owner = {}
    for line in sockets.splitlines():
        fields = line.split()
        found = re.search(r"pid=(\d+)", line)
        if len(fields) >= 4 and found and found.group(1) in pids:
            owner[fields[2].rsplit(":", 1)[1]] = found.group(1)
    backends = subprocess.run(["psql", url, "-X", "-At", "-F", " ", "-c",
                               "SELECT client_port, datname FROM pg_stat_activity WHERE backend_type = 'client backend'"],
                              capture_output=True, text=True).stdout.split("\n")
    counts = {pid: [0, 0] for pid in pids}
    for line in backends:
        fields = line.split()
        if len(fields) == 2 and fields[0] in owner:
            counts[owner[fields[0]]][1 if fields[1] == state_db else 0] += 1
    line = " ".join(f"{pid} {s} {t}" for pid, (s, t) in sorted(counts.items()))
    print(f"{line} all {sum(1 for b in backends if b.strip())}", flush=True)
    time.sleep(0.5)
PY
}

# peak_connections FILE: from sample_connections' lines, "SOURCE STATE PER_WORKER ALL": the most
# source and state-store connections of all workers at once, the most of any one worker
# (source+state), and the most client backends on the server.
peak_connections() {
    python3 - "$1" <<'PY'
import sys
source = state = per_worker = everyone = 0
for line in open(sys.argv[1]):
    fields = line.split()
    if "all" not in fields:
        continue
    at = fields.index("all")
    workers = [fields[i:i + 3] for i in range(0, at, 3)]
    source = max(source, sum(int(w[1]) for w in workers))
    state = max(state, sum(int(w[2]) for w in workers))
    per_worker = max([per_worker] + [int(w[1]) + int(w[2]) for w in workers])
    everyone = max(everyone, int(fields[at + 1]))
print(source, state, per_worker, everyone)
PY
}

# The pipelines each worker holds (by the process id in its name), from `host status --json`.
owners() {
    "$host" status --state "$state_url" --json 2>/dev/null | python3 -c '
import json, sys
for p in json.load(sys.stdin):
    owner = (p.get("lease") or {}).get("owner") or "-"
    print(p["pipeline"], owner)'
}

psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" -c "CREATE SCHEMA $SCHEMA" >/dev/null
schema_created=1
psql_q -c "DROP DATABASE IF EXISTS $STATE_DB WITH (FORCE)" -c "CREATE DATABASE $STATE_DB" >/dev/null
total=$((PG_PIPELINES + SQLITE_PIPELINES))
note "seeding $PG_PIPELINES PostgreSQL tables and $SQLITE_PIPELINES SQLite files, $ROWS rows each"
[[ $PG_PIPELINES -gt 0 ]] && psql_q <<<"$(pg_tables_sql 1 "$PG_PIPELINES" "$ROWS" 4)"
for j in $(seq 1 "$SQLITE_PIPELINES"); do sqlite_users_seed "$tmp/s$j.db" "$ROWS"; done
{
    printf 'lease_ttl = "%s"\nmax_source_connections = %s\nstop_timeout = "10s"\n\n' "$LEASE_TTL" "$MAX_SOURCE"
    printf '[defaults]\nsettle = "0s"\npoll = "%s"\nbatch_size = 500\noutput = "/dev/null"\n\n' "$POLL"
    for i in $(seq 1 "$PG_PIPELINES"); do
        printf '[[pipeline]]\nname = "pg%04d"\nsource = "%s"\ntable = "%s.t%04d"\n\n' "$i" "$URL" "$SCHEMA" "$i"
    done
    for j in $(seq 1 "$SQLITE_PIPELINES"); do
        printf '[[pipeline]]\nname = "lite%04d"\nsource = "sqlite://%s/s%d.db"\ntable = "users"\n\n' "$j" "$tmp" "$j"
    done
} >"$tmp/tidemark.toml"

: >"$tmp/pids"
sample_connections "$tmp/pids" >"$tmp/connections.txt" &
sampler=$!
note "starting $WORKERS workers over $total pipelines"
started=$EPOCHREALTIME
for w in $(seq 1 "$WORKERS"); do
    "$host" run --config "$tmp/tidemark.toml" --state "$state_url" 2>"$tmp/worker$w.log" &
    worker_pids+=($!)
done
echo "${worker_pids[@]}" >"$tmp/pids"
wait_rows "$ROWS" "$started" >"$tmp/drain.txt"
drain=$(calc "$EPOCHREALTIME - $started")
drain_spread=$(percentiles <"$tmp/drain.txt")
sleep 2

note "one new row in every table"
insert_everywhere $((ROWS + 1)) "$tmp/tick-at.txt"
wait_rows $((ROWS + 1)) "$tmp/tick-at.txt" >"$tmp/tick.txt"
latency=$(percentiles <"$tmp/tick.txt")
rss=""
for pid in "${worker_pids[@]}"; do
    rss+="$(calc "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024") "
done
owners >"$tmp/owners.txt"
shares=$(awk '{print $2}' "$tmp/owners.txt" | sort | uniq -c | awk '{printf "%s ", $1}')
read -r source_peak state_peak worker_peak all_peak < <(peak_connections "$tmp/connections.txt")

victim=${worker_pids[0]}
awk -v pid="$victim" 'index($2, "-" pid "-") {print $1}' "$tmp/owners.txt" >"$tmp/orphans.txt"
orphans=$(wc -l <"$tmp/orphans.txt")
note "kill -9 worker $victim ($orphans pipelines), one more row in every table"
kill -9 "$victim"
killed=$EPOCHREALTIME
insert_everywhere $((ROWS + 2)) "$tmp/failover-at.txt"
wait_rows $((ROWS + 2)) "$killed" "$tmp/orphans.txt" >"$tmp/failover.txt"
failover=$(calc "$EPOCHREALTIME - $killed")
kill "$sampler" 2>/dev/null || true
errors=$(cat "$tmp"/worker*.log | grep -c ' ERROR ' || true)
fenced=$(cat "$tmp"/worker*.log | grep -c 'another worker took the pipeline over' || true)
[[ -z "${TIDEMARK_BENCH_KEEP_LOGS:-}" ]] || cp "$tmp"/worker*.log "$tmp"/*.txt "$TIDEMARK_BENCH_KEEP_LOGS"/

echo
echo "workers: $total pipelines ($PG_PIPELINES PostgreSQL, $SQLITE_PIPELINES SQLite), $ROWS rows each, $WORKERS workers, lease_ttl $LEASE_TTL, poll $POLL, max_source_connections $MAX_SOURCE, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "  drain:    $((total * ROWS)) rows in ${drain}s from the first worker's start = $(calc "$total * $ROWS / $drain") rows/s (each pipeline done after: $drain_spread)"
echo "  shares:   $shares pipelines per worker"
echo "  change:   one new row in every table, from its commit to its pipeline's checkpoint: $latency"
echo "  memory:   peak RSS per worker (MiB): $rss"
echo "  postgres: at most $source_peak source and $state_peak state-store connections of the workers at once, $worker_peak of one worker ($all_peak client connections on the server in all, other users' too)"
echo "  kill -9:  the $orphans pipelines of the killed worker all delivered the next row ${failover}s after the kill (lease_ttl $LEASE_TTL; each: $(percentiles <"$tmp/failover.txt"))"
echo "  logs:     $errors ERROR lines, $fenced fenced checkpoints"
