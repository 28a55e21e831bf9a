#!/usr/bin/env bash
# Benchmark of hard-delete checks (--detect-deletes, issue 14) on PostgreSQL.
#
# Seeds tidemark_bench.users with N rows (default 1,000,000), syncs them once with
# `--detect-deletes 0s` (the inventory is kept from the first batch on), then runs one
# `host run --once --detect-deletes 0s` after each of:
#   - nothing deleted,
#   - 10 rows deleted at random,
#   - 10 % of the rows deleted at random,
# and prints, for each check: its time (as the host measured it), the ranges read key by key,
# the keys read one by one, the deletes delivered, and the wall time of the whole run.
# A check also reads one digest per range: 2^bits ranges of about 1,024 keys.
#
# Usage: bench/deletes-postgres.sh [ROWS]       (default: 1000000)
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL  database to use (default postgres://postgres@127.0.0.1:5432/test);
#                                the script creates and finally drops schema tidemark_bench_deletes.
#   TIDEMARK_BENCH_SCHEMA        that schema's name instead, so that two runs can share a server.
#   TIDEMARK_BENCH_BATCH_SIZE    --batch-size (default 1000).
#   CARGO_TARGET_DIR             honoured when locating the release binary.
#
# Exits non-zero when a step fails or a check delivers another number of deletes than were
# made.
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
BATCH_SIZE="${TIDEMARK_BENCH_BATCH_SIZE:-1000}"
SCHEMA="${TIDEMARK_BENCH_SCHEMA:-tidemark_bench_deletes}"
TABLE="$SCHEMA.users"

BENCH_NAME=deletes-postgres
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_count "${BASH_SOURCE[0]}" ROWS 1000000 "$@"
N=$count
prepare_bench tidemark-bench-deletes --postgres psql cargo python3

state="sqlite://$tmp/state.db"
pipeline=bench-deletes

seed() {
    schema_created=1
    note "seeding $TABLE with $N rows"
    psql_q <<SQL || die "seeding $TABLE failed (see the psql error above)"
$(users_table_sql)
INSERT INTO $TABLE (id, email, name, plan, score, updated_at)
SELECT g, 'user' || g || '@example.com', 'User ' || g,
       (ARRAY['free', 'pro', 'team', 'enterprise'])[1 + g % 4],
       ((g * 7919::bigint) % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 microseconds'
FROM generate_series(1::bigint, $N) AS g;
CREATE INDEX users_updated_at_id ON $TABLE (updated_at, id);
ANALYZE $TABLE;
SQL
}

run_s=""
# run LABEL: one `host run --once --detect-deletes 0s`; sets run_s (wall seconds).
run() {
    local t0 t1
    t0="$EPOCHREALTIME"
    "$host" run --source "$URL" --table "$TABLE" --batch-size "$BATCH_SIZE" --settle 0s \
        --once --output "$tmp/out.jsonl" --state "$state" --pipeline "$pipeline" \
        --detect-deletes 0s >"$tmp/$1.out" 2>"$tmp/$1.err" || {
        tail -n 30 "$tmp/$1.err" >&2
        die "host run ($1) failed"
    }
    t1="$EPOCHREALTIME"
    run_s="$(python3 -c "print(round($t1 - $t0, 3))")"
}

# check_figures: "seconds ranges keys deletes" of the pipeline, from host status --json.
check_figures() {
    "$host" status --state "$state" --json | python3 -c '
import json, sys
p = json.load(sys.stdin)[0]
print(p["last_delete_check_seconds"], p["last_delete_check_ranges"], p["last_delete_check_keys"],
      p["deletes_detected"])'
}

seed
note "full sync of $N rows with --detect-deletes 0s (inventory kept from the first batch)"
run initial
initial_s=$run_s
results=()
total_deleted=0
for scenario in none 10 10%; do
    case "$scenario" in
        none) count=0 ;;
        10) count=10 ;;
        10%) count=$((N / 10)) ;;
    esac
    if [[ $count -gt 0 ]]; then
        note "deleting $count rows at random"
        psql_q -c "DELETE FROM $TABLE WHERE id IN (SELECT id FROM $TABLE ORDER BY random() LIMIT $count)" >/dev/null
    fi
    note "one check after $scenario deleted"
    run "check-$scenario"
    read -r seconds ranges keys detected <<<"$(check_figures)"
    found=$((detected - total_deleted))
    total_deleted=$detected
    [[ $found -eq $count ]] || die "the check after '$scenario' delivered $found deletes, expected $count"
    results+=("$scenario $count $seconds $ranges $keys $run_s")
done

pg_version="$(psql_q -At -c 'SHOW server_version' 2>/dev/null || echo '?')"
python3 - "$N" "$BATCH_SIZE" "$pg_version" "$(nproc 2>/dev/null || echo '?')" "$initial_s" "${results[@]}" <<'PY'
import sys
n, batch, pg, cpus, initial = sys.argv[1:6]
n = int(n)
ranges_total = 1
while ranges_total * 1024 < n:
    ranges_total *= 2
print()
print(f"Delete checks on PostgreSQL {pg} ({cpus} CPUs), {n:,} rows, batch size {batch}")
print(f"first full sync with the inventory: {float(initial):.2f} s (includes the first check)")
print(f"each check reads {ranges_total:,} range digests, then the differing ranges key by key")
header = f"{'deleted':>10}  {'rows':>8}  {'check s':>8}  {'ranges read':>11}  {'keys read':>10}  {'run s':>7}"
print(header)
print("-" * len(header))
for line in sys.argv[6:]:
    scenario, count, seconds, ranges, keys, run_s = line.split()
    print(f"{scenario:>10}  {int(count):>8,}  {float(seconds):>8.3f}  {int(ranges):>11,}  {int(keys):>10,}  {float(run_s):>7.2f}")
PY
