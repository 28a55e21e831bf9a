#!/usr/bin/env bash
# Several workers (`host run --config tidemark.toml --state postgres://…`) sharing one file's
# pipelines through a PostgreSQL state store, on this machine.
#
# PG_PIPELINES PostgreSQL tables (schema tidemark_workers, t0001…) and SQLITE_PIPELINES SQLite
# files, ROWS rows each, one pipeline per table into /dev/null; WORKERS workers; the state
# store in a database of its own (tidemark_workers_state, created and dropped). Reports:
#   - drain: from the first worker's start until every pipeline delivered its ROWS rows
#     (`host status --json` polled every 0.25 s): seconds and rows/s;
#   - change latency: one new row in every table, then for each pipeline the time until its
#     rows_synced counts it; p50, p99 and max;
#   - peak RSS of each worker (VmHWM), source connections (application_name tidemark) and
#     state-store connections to PostgreSQL;
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
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
PG_PIPELINES="${TIDEMARK_BENCH_PG_PIPELINES:-600}"
SQLITE_PIPELINES="${TIDEMARK_BENCH_SQLITE_PIPELINES:-400}"
WORKERS="${TIDEMARK_BENCH_WORKERS:-4}"
LEASE_TTL="${TIDEMARK_BENCH_LEASE_TTL:-5s}"
MAX_SOURCE="${TIDEMARK_BENCH_MAX_SOURCE_CONNECTIONS:-4}"
POLL="${TIDEMARK_BENCH_POLL:-1s}"
SCHEMA=tidemark_workers
STATE_DB=tidemark_workers_state

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
BENCH_NAME=workers
# shellcheck source=bench/common.sh
source "$repo/bench/common.sh"

case "${1:-}" in -h | --help)
    print_usage "${BASH_SOURCE[0]}"
    exit 0
    ;;
esac
ROWS="${1:-200}"
for n in "$ROWS" "$PG_PIPELINES" "$SQLITE_PIPELINES" "$WORKERS" "$MAX_SOURCE"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "'$n' is not a number (usage: $0 [ROWS])"
done
require_tools psql python3 sqlite3 cargo
require_postgres "$@"
make_tmp tidemark-workers
build_host

calc() { python3 -c "print(round($1, 3))"; }
state_url="${URL%/*}/$STATE_DB"
worker_pids=()

stop_all() {
    local rc=$? pid
    for pid in "${worker_pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql_q -c "DROP DATABASE IF EXISTS $STATE_DB WITH (FORCE)" >/dev/null 2>&1 || true
    (exit "$rc")
    bench_cleanup
}
trap stop_all EXIT

pg_tables_sql() {
    cat <<SQL
SET client_min_messages = warning;
DO \$\$
DECLARE i int;
BEGIN
  FOR i IN 1..$PG_PIPELINES LOOP
    EXECUTE format('CREATE TABLE $SCHEMA.t%s (id bigint PRIMARY KEY, email text NOT NULL,
        name text NOT NULL, updated_at timestamptz NOT NULL)', lpad(i::text, 4, '0'));
    EXECUTE format('CREATE INDEX ON $SCHEMA.t%s (updated_at, id)', lpad(i::text, 4, '0'));
    EXECUTE format('INSERT INTO $SCHEMA.t%s SELECT g, ''user'' || g || ''@example.com'',
        ''user '' || g, now() - interval ''1 hour'' + g * interval ''1 ms''
        FROM generate_series(1, $ROWS) g', lpad(i::text, 4, '0'));
  END LOOP;
END \$\$;
SQL
}

sqlite_seed() {
    sqlite3 "$1" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX users_cursor ON users (updated_at, id);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $ROWS)
INSERT INTO users SELECT n, 'user' || n || '@example.com', 'user ' || n,
    strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 hour', '+' || n || ' seconds') FROM g;
SQL
}

# One new row (id $1) in every table.
insert_everywhere() {
    local id=$1
    psql_q -c "DO \$\$ DECLARE i int; BEGIN FOR i IN 1..$PG_PIPELINES LOOP
        EXECUTE format('INSERT INTO $SCHEMA.t%s VALUES ($id, ''new@example.com'', ''new'', now())',
        lpad(i::text, 4, '0')); END LOOP; END \$\$" >/dev/null
    for j in $(seq 1 "$SQLITE_PIPELINES"); do
        sqlite3 "$tmp/s$j.db" "INSERT INTO users VALUES ($id, 'new@example.com', 'new', strftime('%Y-%m-%d %H:%M:%f', 'now'))"
    done
}

# Polls `host status --json` until every pipeline of the file (or of the list in file $3) has
# rows_synced >= $1; writes "PIPELINE SECONDS" (since $2, an EPOCHREALTIME) for each to stdout.
wait_rows() {
    local want=$1 since=$2 only=${3:-}
    python3 - "$host" "$state_url" "$want" "$since" "$only" "$total" <<'PY'
import json, subprocess, sys, time
host, state, want, since, only, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])
names = set(open(only).read().split()) if only else None
done = {}
while True:
    out = subprocess.run([host, "status", "--state", state, "--json"], capture_output=True, text=True)
    now = time.time()
    if out.returncode == 0:
        for p in json.loads(out.stdout):
            if names is not None and p["pipeline"] not in names:
                continue
            if p["rows_synced"] >= want and p["pipeline"] not in done:
                done[p["pipeline"]] = now - since
    if len(done) >= (len(names) if names is not None else total):
        break
    time.sleep(0.25)
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

psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" -c "CREATE SCHEMA $SCHEMA" >/dev/null
schema_created=1
psql_q -c "DROP DATABASE IF EXISTS $STATE_DB WITH (FORCE)" -c "CREATE DATABASE $STATE_DB" >/dev/null
total=$((PG_PIPELINES + SQLITE_PIPELINES))
note "seeding $PG_PIPELINES PostgreSQL tables and $SQLITE_PIPELINES SQLite files, $ROWS rows each"
[[ $PG_PIPELINES -gt 0 ]] && psql_q <<<"$(pg_tables_sql)"
for j in $(seq 1 "$SQLITE_PIPELINES"); do sqlite_seed "$tmp/s$j.db"; done
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

note "starting $WORKERS workers over $total pipelines"
started=$EPOCHREALTIME
for w in $(seq 1 "$WORKERS"); do
    "$host" run --config "$tmp/tidemark.toml" --state "$state_url" 2>"$tmp/worker$w.log" &
    worker_pids+=($!)
done
wait_rows "$ROWS" "$started" >"$tmp/drain.txt"
drain=$(calc "$EPOCHREALTIME - $started")
sleep 2
source_connections=$(psql_q -At -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tidemark'")
state_connections=$(psql_q -At -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$STATE_DB'")

note "one new row in every table"
ticked=$EPOCHREALTIME
insert_everywhere $((ROWS + 1))
wait_rows $((ROWS + 1)) "$ticked" >"$tmp/tick.txt"
latency=$(percentiles <"$tmp/tick.txt")
rss=""
for pid in "${worker_pids[@]}"; do
    rss+="$(calc "$(awk '/VmHWM/ {print $2}' "/proc/$pid/status") / 1024") "
done
shares=$("$host" status --state "$state_url" --json | python3 -c '
import collections, json, sys
owners = collections.Counter((p.get("lease") or {}).get("owner") for p in json.load(sys.stdin))
print(" ".join(str(n) for _, n in sorted(owners.items(), key=lambda kv: str(kv[0]))))')

victim=${worker_pids[0]}
"$host" status --state "$state_url" --json | python3 -c '
import json, sys
pid = sys.argv[1]
for p in json.load(sys.stdin):
    owner = (p.get("lease") or {}).get("owner") or ""
    if f"-{pid}-" in owner:
        print(p["pipeline"])' "$victim" >"$tmp/orphans.txt"
orphans=$(wc -l <"$tmp/orphans.txt")
note "kill -9 worker $victim ($orphans pipelines), one more row in every table"
kill -9 "$victim"
killed=$EPOCHREALTIME
insert_everywhere $((ROWS + 2))
wait_rows $((ROWS + 2)) "$killed" "$tmp/orphans.txt" >"$tmp/failover.txt"
failover=$(calc "$EPOCHREALTIME - $killed")
errors=$(cat "$tmp"/worker*.log | grep -c ' ERROR ' || true)
fenced=$(cat "$tmp"/worker*.log | grep -c 'another worker took the pipeline over' || true)

echo
echo "workers: $total pipelines ($PG_PIPELINES PostgreSQL, $SQLITE_PIPELINES SQLite), $ROWS rows each, $WORKERS workers, lease_ttl $LEASE_TTL, poll $POLL, max_source_connections $MAX_SOURCE, $(nproc) cores"
echo "  drain:    $((total * ROWS)) rows in ${drain}s from the first worker's start = $(calc "$total * $ROWS / $drain") rows/s"
echo "  shares:   $shares pipelines per worker"
echo "  change:   one new row in every table: $latency"
echo "  memory:   peak RSS per worker (MiB): $rss"
echo "  postgres: $source_connections source connections, $state_connections state-store connections"
echo "  kill -9:  $orphans pipelines of the killed worker delivered again after ${failover}s (lease_ttl $LEASE_TTL)"
echo "  logs:     $errors ERROR lines, $fenced fenced checkpoints"
