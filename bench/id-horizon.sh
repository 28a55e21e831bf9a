#!/usr/bin/env bash
# What the integer-cursor horizon costs in latency: a host polls a table by `--cursor id` every
# 200 ms while a fast writer inserts a row every 10 ms (autocommit), alone or next to three slow
# writers that each hold an insert open for 0.2-1.5 s. Prints the median and p99 time from a
# fast row's insert to its line in the output, on PostgreSQL and MariaDB.
#
#   bench/id-horizon.sh [SECONDS]        # default 15 s per run
#   TIDEMARK_BENCH_BASELINE_HOST=path/to/older/host bench/id-horizon.sh
#     also runs an older host (one without the horizon) the same way, for comparison.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

BENCH_NAME=id-horizon
URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
MYSQL_URL="${TIDEMARK_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"
SCHEMA="bench_ids_$$"
# shellcheck source=bench/common.sh
source bench/common.sh

seconds="${1:-15}"
require_postgres
command -v mysql >/dev/null || die "mysql client not found (apt-get install mariadb-client)"
mysql_args=(-h 127.0.0.1 -u root -N -B)
mysql "${mysql_args[@]}" -e 'SELECT 1' >/dev/null || die "cannot connect to MariaDB at 127.0.0.1:3306 as root"
make_tmp id-horizon
build_host

# SQL for one writer: `rounds` transactions, each an insert held open for `hold` seconds
# (0: autocommit, then a 10 ms pause).
writer_sql() {
    local db=$1 table=$2 name=$3 seconds=$4 slow=$5
    python3 - "$db" "$table" "$name" "$seconds" "$slow" <<'PY'
import random, sys
db, table, name, seconds, slow = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5] == "1"
sleep = "SELECT pg_sleep({});" if db == "postgres" else "DO SLEEP({});"
rng = random.Random(name)
spent = 0.0
while spent < seconds:
    if slow:
        hold = rng.uniform(0.2, 1.5)
        print(f"BEGIN; INSERT INTO {table} (writer) VALUES ('{name}'); {sleep.format(round(hold, 3))} COMMIT;")
        spent += hold
    else:
        print(f"INSERT INTO {table} (writer) VALUES ('{name}'); {sleep.format(0.01)}")
        spent += 0.012
PY
}

# Runs one scenario: the host with `--cursor id` polling `table`, the writers, then reports.
run() {
    local db=$1 host_bin=$2 slow_writers=$3 label=$4
    local table source out="$tmp/out-$db-$slow_writers-$(basename "$host_bin").jsonl"
    case $db in
    postgres)
        table="$SCHEMA.events"
        psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA; CREATE TABLE $table (id bigserial PRIMARY KEY, writer text NOT NULL, inserted_at timestamptz NOT NULL DEFAULT clock_timestamp())" >/dev/null
        schema_created=1
        source="$URL"
        ;;
    mariadb)
        table="$SCHEMA.events"
        mysql "${mysql_args[@]}" -e "DROP DATABASE IF EXISTS $SCHEMA; CREATE DATABASE $SCHEMA; CREATE TABLE $table (id bigint AUTO_INCREMENT PRIMARY KEY, writer varchar(20) NOT NULL, inserted_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
        source="$MYSQL_URL"
        ;;
    esac
    rm -f "$tmp/state.db" "$out"
    "$host_bin" run --source "$source" --table "$table" --cursor id --poll 200ms --settle 0s \
        --state "sqlite://$tmp/state.db" --output "$out" 2>"$tmp/host.log" &
    local host_pid=$!
    # Stamps each output line with the time it was seen.
    python3 - "$out" "$tmp/seen.tsv" <<'PY' &
import json, os, sys, time
path, seen = sys.argv[1], sys.argv[2]
done = seen + ".stop"
offset = 0
with open(seen, "w") as log:
    while not os.path.exists(done):
        try:
            with open(path) as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = ""
        now = time.time()
        complete = chunk[: chunk.rfind("\n") + 1]
        offset += len(complete.encode())
        for line in complete.splitlines():
            row = json.loads(line)["row"]
            log.write(f"{row['id']}\t{row['writer']}\t{row['inserted_at']}\t{now}\n")
        log.flush()
        time.sleep(0.005)
PY
    local watcher_pid=$!
    local pids=()
    for n in $(seq 1 "$slow_writers"); do
        if [[ $db == postgres ]]; then
            writer_sql "$db" "$table" "slow$n" "$seconds" 1 | psql_q >/dev/null &
        else
            writer_sql "$db" "$table" "slow$n" "$seconds" 1 | mysql "${mysql_args[@]}" >/dev/null &
        fi
        pids+=($!)
    done
    if [[ $db == postgres ]]; then
        writer_sql "$db" "$table" fast "$seconds" 0 | psql_q >/dev/null
    else
        writer_sql "$db" "$table" fast "$seconds" 0 | mysql "${mysql_args[@]}" >/dev/null
    fi
    for pid in "${pids[@]}"; do wait "$pid"; done
    sleep 3
    touch "$tmp/seen.tsv.stop"
    wait "$watcher_pid"
    rm -f "$tmp/seen.tsv.stop"
    kill -TERM "$host_pid"
    wait "$host_pid" || true
    local rows
    if [[ $db == postgres ]]; then
        rows=$(psql_q -At -c "SELECT count(*) FROM $table")
    else
        rows=$(mysql "${mysql_args[@]}" -e "SELECT count(*) FROM $table")
    fi
    python3 - "$tmp/seen.tsv" "$rows" "$label" <<'PY'
import datetime, statistics, sys
path, rows, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lat, ids = [], set()
for line in open(path):
    id_, writer, inserted, seen = line.rstrip("\n").split("\t")
    ids.add(int(id_))
    if writer != "fast":
        continue
    at = datetime.datetime.fromisoformat(inserted.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    lat.append(float(seen) - at.timestamp())
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"{label:<48} fast rows {len(lat):>5}  median {p(0.5):7.0f} ms  p99 {p(0.99):7.0f} ms  "
      f"rows delivered {len(ids)}/{rows}")
PY
    if [[ $db == mariadb ]]; then
        mysql "${mysql_args[@]}" -e "DROP DATABASE IF EXISTS $SCHEMA"
    fi
}

hosts=("$host")
[[ -n "${TIDEMARK_BENCH_BASELINE_HOST:-}" ]] && hosts+=("$TIDEMARK_BENCH_BASELINE_HOST")
for db in postgres mariadb; do
    for bin in "${hosts[@]}"; do
        name=$([[ $bin == "$host" ]] && echo "this host" || echo "baseline host")
        run "$db" "$bin" 0 "$db, $name, fast writer alone"
        run "$db" "$bin" 3 "$db, $name, fast + 3 slow writers"
    done
done
