#!/usr/bin/env bash
# Benchmark of Tidemark's sync core against MariaDB (or MySQL).
#
# For each row count N it fills tidemark_bench.users with N rows (the columns and ties of
# bench/sync-postgres.sh, updated_at a TIMESTAMP(6)), then compares, back to back:
#   - `mysql --quick` of `SELECT … FROM users FORCE INDEX (users_updated_at_id)
#     ORDER BY updated_at, id` into /dev/null, the baseline: the client streaming the same
#     rows in the same keyset order (without the hint MariaDB picks a scan and a sort);
#   - one full sync by `host run --once --output /dev/null --settle 1s`, its wall time and
#     peak RSS (1 s is the least settle lag the host takes on MariaDB).
#
# Usage: bench/sync-mariadb.sh [ROWS...]        (default: 1000000)
#
# Environment:
#   TIDEMARK_BENCH_MYSQL_URL     server to use (default mysql://root@127.0.0.1:3306/tidemark_bench);
#                                the script creates and finally drops that database.
#   TIDEMARK_BENCH_BATCH_SIZE    --batch-size passed to the host (default 1000).
#   CARGO_TARGET_DIR             honoured when locating the release binary.
#
# Exits non-zero when a step fails; missing the target is reported as MISSED only.
set -euo pipefail

URL="${TIDEMARK_BENCH_MYSQL_URL:-mysql://root@127.0.0.1:3306/tidemark_bench}"
BATCH_SIZE="${TIDEMARK_BENCH_BATCH_SIZE:-1000}"
TARGET_RATIO=0.80     # host rows/s divided by mysql --quick rows/s, at least (issue 13)
SETTLE=1s

BENCH_NAME=sync-mariadb
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

parse_sizes "${BASH_SOURCE[0]}" "$@"
require_tools mysql cargo python3 /usr/bin/time

# mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE into the client's flags.
read -r db_user db_pass db_host db_port DATABASE < <(python3 - "$URL" <<'PY'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
print(urllib.parse.unquote(u.username or "root"), urllib.parse.unquote(u.password or "") or "-",
      u.hostname or "127.0.0.1", u.port or 3306, u.path.lstrip("/") or "tidemark_bench")
PY
)
[[ "$DATABASE" =~ ^[A-Za-z0-9_]+$ ]] || die "database name '$DATABASE' in $URL: use letters, digits and _"
mysql_args=(--user="$db_user" --host="$db_host" --port="$db_port" --protocol=TCP)
[[ "$db_pass" == "-" ]] || mysql_args+=(--password="$db_pass")
my() { mysql "${mysql_args[@]}" "$@"; }
TABLE="$DATABASE.users"

if ! my_err="$(my -e 'SELECT 1' 2>&1 >/dev/null)"; then
    die "cannot connect to MariaDB at $db_host:$db_port as $db_user: $my_err
  Start it (Debian): service mariadb start; or pass TIDEMARK_BENCH_MYSQL_URL=mysql://USER@HOST:PORT/DB"
fi

# The database goes with the temp dir: common.sh's cleanup drops SCHEMA through psql, so
# this script drops its own on exit.
drop_database() { my -e "DROP DATABASE IF EXISTS $DATABASE" >/dev/null 2>&1 || true; }
at_exit+=(drop_database)
prepare_bench tidemark-bench-mariadb

seed() {
    local n=$1
    note "seeding $TABLE with $n rows"
    my <<SQL || die "seeding $TABLE failed (see the mysql error above)"
DROP DATABASE IF EXISTS $DATABASE;
CREATE DATABASE $DATABASE;
USE $DATABASE;
CREATE TABLE $TABLE (
    id         BIGINT PRIMARY KEY,
    email      VARCHAR(255) NOT NULL,
    name       VARCHAR(255) NOT NULL,
    plan       VARCHAR(32) NOT NULL,
    score      DOUBLE NOT NULL,
    updated_at TIMESTAMP(6) NOT NULL
);
SET time_zone = '+00:00';
INSERT INTO $TABLE
SELECT seq, CONCAT('user', seq, '@example.com'), CONCAT('User ', seq),
       ELT(1 + seq % 4, 'free', 'pro', 'team', 'enterprise'),
       ((seq * 7919) % 100000) / 100.0,
       TIMESTAMP '2024-01-01 00:00:00' + INTERVAL $(tied_step_sql seq) * 37 MICROSECOND
FROM seq_1_to_$n;
CREATE INDEX users_updated_at_id ON $TABLE (updated_at, id);
ANALYZE TABLE $TABLE;
SQL
}

time_export() {
    local t0 t1
    t0="$(now)"
    my --quick --batch -e "SELECT id, email, name, plan, score, updated_at FROM $TABLE \
        FORCE INDEX (users_updated_at_id) ORDER BY updated_at, id" >/dev/null ||
        die "mysql --quick failed"
    t1="$(now)"
    calc "$t1 - $t0"
}

results=()
for n in "${sizes[@]}"; do
    seed "$n" >/dev/null
    note "warming the buffer pool with one untimed export"
    time_export >/dev/null
    note "timing mysql --quick"
    export_s="$(time_export)"
    note "timing host run --once ($n rows, batch size $BATCH_SIZE)"
    time_host "$tmp/run-$n" "bench-$n" "$n"
    results+=("$n $export_s $run_s $run_rss_kib")
    record_result mariadb "$n" "$export_s" "$run_s" "$run_rss_kib"
    note "N=$n: mysql --quick ${export_s}s, host ${run_s}s, peak RSS ${run_rss_kib} KiB"
done

report_export "Tidemark sync vs \`mysql --quick\` on $(my -N -e 'SELECT VERSION()') (batch size $BATCH_SIZE)" \
    "$TARGET_RATIO" "${results[@]}"
