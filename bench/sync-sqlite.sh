#!/usr/bin/env bash
# Benchmark of Tidemark's sync core against SQLite, the embedded default.
#
# For each row count N it writes a fresh SQLite file with a `users` table of N rows (the
# columns and ties of bench/sync-postgres.sh, updated_at as ISO 8601 text with microseconds),
# then compares, back to back:
#   - `sqlite3 -json DB "SELECT … ORDER BY updated_at, id"` into /dev/null, the baseline: the
#     SQLite shell's own JSON export of the same rows in the same order;
#   - one full sync by `host run --once --output /dev/null`, its wall time and peak RSS.
#
# Usage: bench/sync-sqlite.sh [ROWS...]        (default: 1000000)
#
# Environment:
#   TIDEMARK_BENCH_BATCH_SIZE    --batch-size passed to the host (default 1000).
#   CARGO_TARGET_DIR             honoured when locating the release binary.
#
# Exits non-zero when a step fails; missing the target is reported as MISSED only.
set -euo pipefail

BATCH_SIZE="${TIDEMARK_BENCH_BATCH_SIZE:-1000}"
TABLE=users
TARGET_RATIO=0.60     # host rows/s divided by sqlite3 -json rows/s, at least (issue 13)

BENCH_NAME=sync-sqlite
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_sizes "${BASH_SOURCE[0]}" "$@"
prepare_bench tidemark-bench-sqlite sqlite3 cargo python3 /usr/bin/time
db="$tmp/bench.db"
SOURCE_URL="sqlite://$db"

seed() {
    local n=$1
    note "writing $db with $n rows"
    rm -f "$db"
    sqlite3 "$db" <<SQL || die "seeding $db failed"
CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    email      TEXT NOT NULL,
    name       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    score      REAL NOT NULL,
    updated_at TEXT NOT NULL
);
WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < $n),
     t(g, us) AS (SELECT g, $(tied_step_sql g) * 37 FROM s)
INSERT INTO users
SELECT g, 'user' || g || '@example.com', 'User ' || g,
       CASE g % 4 WHEN 0 THEN 'pro' WHEN 1 THEN 'team' WHEN 2 THEN 'enterprise' ELSE 'free' END,
       ((g * 7919) % 100000) / 100.0,
       strftime('%Y-%m-%dT%H:%M:%S', 1704067200 + us / 1000000, 'unixepoch')
         || printf('.%06dZ', us % 1000000)
FROM t;
CREATE INDEX users_updated_at_id ON users (updated_at, id);
ANALYZE;
SQL
}

time_export() {
    local t0 t1
    t0="$(now)"
    sqlite3 -json "$db" "SELECT id, email, name, plan, score, updated_at FROM users ORDER BY updated_at, id" \
        >/dev/null || die "sqlite3 -json failed"
    t1="$(now)"
    calc "$t1 - $t0"
}

results=()
for n in "${sizes[@]}"; do
    seed "$n"
    note "warming the page cache with one untimed export"
    time_export >/dev/null
    note "timing sqlite3 -json"
    export_s="$(time_export)"
    note "timing host run --once ($n rows, batch size $BATCH_SIZE)"
    time_host "$tmp/run-$n" "bench-$n" "$n"
    results+=("$n $export_s $run_s $run_rss_kib")
    record_result sqlite "$n" "$export_s" "$run_s" "$run_rss_kib"
    note "N=$n: sqlite3 -json ${export_s}s, host ${run_s}s, peak RSS ${run_rss_kib} KiB"
done

report_export "Tidemark sync vs \`sqlite3 -json\` on SQLite $(sqlite3 --version | cut -d' ' -f1) (batch size $BATCH_SIZE)" \
    "$TARGET_RATIO" "${results[@]}"
