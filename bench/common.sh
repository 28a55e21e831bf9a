# shellcheck shell=bash
# Shared by the bench/ scripts. A script sets BENCH_NAME (and URL and SCHEMA when it uses
# PostgreSQL), then sources this file, which sets repo and moves to the repository root:
#
#   BENCH_NAME=name
#   # shellcheck source=bench/common.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#   bench_count "${BASH_SOURCE[0]}" ROWS 1000 "$@"      # -h/--help, or count=ROWS
#   prepare_bench tidemark-name --postgres psql cargo  # tools, server, temp dir, host
#
# Gives: die, note, psql_q, require_tools, require_postgres, bench_help, bench_count,
# prepare_bench, make_tmp (a temp dir that is removed, with the schema, on exit, after the
# commands in at_exit), build_host (sets target_dir and host), time_host (one timed
# `host run --once` with its peak RSS), record_result (for bench/throughput.sh), and the
# tables of several benchmarks.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

die() {
    echo "$BENCH_NAME: error: $*" >&2
    exit 1
}

note() {
    echo "==> $*" >&2
}

psql_q() {
    # Quiet psql that stops at the first error and ignores ~/.psqlrc.
    psql "$URL" -X -q -v ON_ERROR_STOP=1 "$@"
}

# Stops with what psql said and how to fix it when the database does not answer.
require_postgres() {
    local psql_err
    if ! psql_err="$(psql_q -At -c 'SELECT 1' 2>&1 >/dev/null)"; then
        cat >&2 <<MSG
$BENCH_NAME: error: cannot connect to PostgreSQL at $URL
  psql said: ${psql_err:-<nothing>}
  Is the server running?   pg_isready -h 127.0.0.1 -p 5432
  Start it (Debian):       pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start
  Database missing?        createdb -h 127.0.0.1 -U postgres test
  Another server?          TIDEMARK_BENCH_POSTGRES_URL=postgres://user@host:port/db $0 $*
MSG
        exit 1
    fi
}

# Sets tmp to a fresh directory; on exit removes it, and drops SCHEMA once schema_created=1.
make_tmp() {
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")"
    schema_created=0
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# Commands run on exit before the temp dir goes (stop a process, drop a database), in order.
at_exit=()

bench_cleanup() {
    local rc=$? hook
    for hook in "${at_exit[@]}"; do
        $hook || true
    done
    if [[ ${schema_created:-0} -eq 1 ]]; then
        psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 ||
            echo "$BENCH_NAME: warning: could not drop schema $SCHEMA" >&2
    fi
    rm -rf "$tmp"
    exit "$rc"
}

# Builds the release host; sets target_dir (honouring CARGO_TARGET_DIR) and host.
# TIDEMARK_BENCH_HOST=PATH times that binary instead (e.g. a build from before a change).
build_host() {
    if [[ -n "${TIDEMARK_BENCH_HOST:-}" ]]; then
        host="$TIDEMARK_BENCH_HOST"
        [[ -x "$host" ]] || die "TIDEMARK_BENCH_HOST: no executable at $host"
        target_dir="${CARGO_TARGET_DIR:-$repo/target}"
        note "host binary (TIDEMARK_BENCH_HOST): $host"
        return
    fi
    note "building the host (release)"
    cargo build --release -p tidemark-host --bin host >&2 || die "cargo build --release failed"
    target_dir="$(cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null)" ||
        target_dir="${CARGO_TARGET_DIR:-$repo/target}"
    host="$target_dir/release/host"
    [[ -x "$host" ]] || die "built host binary not found at $host"
}

# The benchmark table, (re)created empty in SCHEMA: the columns the issue names.
users_table_sql() {
    cat <<SQL
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS $SCHEMA CASCADE;
CREATE SCHEMA $SCHEMA;
CREATE TABLE $TABLE (
    id         bigint PRIMARY KEY,
    email      text NOT NULL,
    name       text NOT NULL,
    plan       text NOT NULL,
    score      double precision NOT NULL,
    updated_at timestamptz NOT NULL
);
SQL
}

# require_tools TOOL...: each must be on PATH (/usr/bin/time: GNU time, for peak RSS); bash 5
# is needed for EPOCHREALTIME.
require_tools() {
    local tool
    for tool in "$@"; do
        if [[ $tool == /usr/bin/time ]]; then
            [[ -x $tool ]] || die "/usr/bin/time (GNU time) is needed for peak RSS: apt-get install time"
            continue
        fi
        command -v "$tool" >/dev/null || die "'$tool' is not on PATH"
    done
    [[ -n "${EPOCHREALTIME:-}" ]] || die "bash 5 or later is needed (EPOCHREALTIME)"
}

# bench_count SCRIPT WHAT DEFAULT [ARG...]: a benchmark's one optional argument. -h or --help
# prints SCRIPT's usage and exits; otherwise sets count to ARG (DEFAULT without one), and
# stops on a second argument or one that is not a positive integer.
bench_count() {
    local script=$1 what=$2 default=$3
    shift 3
    bench_help "$script" "$@"
    [[ $# -le 1 ]] || die "too many arguments (usage: $script [$what])"
    count="${1:-$default}"
    require_positive "$what" "$count"
}

# bench_help SCRIPT [ARG...]: prints SCRIPT's usage and exits when ARG is -h or --help.
bench_help() {
    case "${2:-}" in
        -h | --help)
            print_usage "$1"
            exit 0
            ;;
    esac
}

# require_positive NAME VALUE: stops unless VALUE is a positive integer.
require_positive() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 '$2' is not a positive integer"
}

# prepare_bench TMP_NAME [--postgres] TOOL...: what each benchmark does before it measures:
# the tools on PATH, PostgreSQL at URL answering (--postgres), a fresh temp dir (make_tmp
# TMP_NAME) and the release host (build_host).
prepare_bench() {
    local name=$1 postgres=0
    shift
    if [[ "${1:-}" == --postgres ]]; then
        postgres=1
        shift
    fi
    require_tools "$@"
    [[ $postgres -eq 0 ]] || require_postgres
    make_tmp "$name"
    build_host
}

# build_guests: the example processors and test guests, as scripts/test builds them.
build_guests() {
    note "building the processors (bash scripts/build-guests)"
    bash scripts/build-guests >&2 || die "bash scripts/build-guests failed"
}

# print_usage SCRIPT: the comment block at the top of SCRIPT, which is its usage.
print_usage() {
    sed -n '2,/^set -euo/p' "$1" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# warm_cache MODULE DIR: compiles MODULE into the compile cache DIR, then checks that a second
# load comes from it, as the timed runs will (same engine settings: no fuel, default memory).
warm_cache() {
    local module="$1" dir="$2"
    note "warming the compile cache: host check --module $module --cache-dir $dir"
    for _ in 1 2; do
        "$host" check --module "$module" --cache-dir "$dir" >"$tmp/check.out" 2>&1 || {
            cat "$tmp/check.out" >&2
            die "host check --module $module failed"
        }
    done
    grep -q 'loaded from the compile cache' "$tmp/check.out" ||
        die "the compile cache in $dir is not used by host check: $(cat "$tmp/check.out")"
}

now() { date +%s.%N; }

# Float arithmetic via python3 (bash has none).
calc() { python3 -c "print(round($1, 3))"; }

# tied_step_sql G: the step (of 37 µs from 2024-01-01) of row G's updated_at, in SQL that
# PostgreSQL, MariaDB and SQLite all read: every 10th row repeats its predecessor's step, and
# rows ≡ 1, 2 (mod 1000) take that same one too (four rows tied), so that a sync has to break
# ties on id.
tied_step_sql() {
    local g=$1
    echo "(CASE WHEN $g % 1000 IN (1, 2) AND $g > 2 THEN $g - ($g % 1000) - 1 WHEN $g % 10 = 0 THEN $g - 1 ELSE $g END)"
}

run_s=""
run_rss_kib=""
# time_host's user and system CPU seconds are noted on standard error beside the wall time.

# time_host RUN_DIR PIPELINE N [ARGS...]: times one `host run --once` of SOURCE_URL (default
# URL) and TABLE, extra arguments appended, with a fresh state in RUN_DIR and --settle SETTLE
# (default 0s); checks that it synced N rows; sets run_s (wall seconds) and run_rss_kib
# (peak RSS, from GNU time).
time_host() {
    local run_dir=$1 pipeline=$2 n=$3
    shift 3
    rm -rf "$run_dir"
    mkdir -p "$run_dir"
    local state="sqlite://$run_dir/state.db"

    local t0 t1 rc=0
    t0="$(now)"
    /usr/bin/time -f '%U %S %M' -o "$run_dir/rss" \
        "$host" run --source "${SOURCE_URL:-$URL}" --table "$TABLE" --batch-size "$BATCH_SIZE" \
        --settle "${SETTLE:-0s}" --once --output /dev/null --state "$state" --pipeline "$pipeline" "$@" \
        >"$run_dir/host.out" 2>"$run_dir/host.err" || rc=$?
    t1="$(now)"
    if [[ $rc -ne 0 ]]; then
        echo "$BENCH_NAME: error: host run${1:+ $*} exited with status $rc; its last output:" >&2
        tail -n 30 "$run_dir/host.out" "$run_dir/host.err" >&2 || true
        exit 1
    fi
    run_s="$(calc "$t1 - $t0")"
    local user_s sys_s
    read -r user_s sys_s run_rss_kib < <(tail -n 1 "$run_dir/rss")
    [[ "$run_rss_kib" =~ ^[0-9]+$ ]] || die "could not read peak RSS from /usr/bin/time: $(cat "$run_dir/rss")"
    # CPU time is steadier than wall time on a shared machine: shown beside it.
    note "host: ${run_s}s wall, ${user_s}s user + ${sys_s}s system CPU"

    note "checking that the host delivered $n rows"
    local status_json synced
    status_json="$("$host" status --state "$state" --json 2>"$run_dir/status.err")" || {
        cat "$run_dir/status.err" >&2
        die "host status failed"
    }
    synced="$(PIPELINE="$pipeline" python3 -c '
import json, os, sys
data = json.loads(sys.stdin.read())
if isinstance(data, dict):
    data = data.get("pipelines", [data])
want = os.environ["PIPELINE"]
rows = [p for p in data if isinstance(p, dict) and p.get("pipeline", p.get("name")) == want]
if not rows:
    rows = [p for p in data if isinstance(p, dict)]
if len(rows) != 1 or "rows_synced" not in rows[0]:
    sys.exit("unexpected status JSON: " + json.dumps(data)[:500])
print(rows[0]["rows_synced"])
' <<<"$status_json")" || die "could not read rows_synced from host status --json: $status_json"
    [[ "$synced" == "$n" ]] ||
        die "host reports rows_synced=$synced for pipeline $pipeline, expected $n (status: $status_json)"
}

# record_result WORD...: one line for bench/throughput.sh's table, appended to the file
# TIDEMARK_BENCH_RESULTS names (nothing when it is unset).
record_result() {
    if [[ -n "${TIDEMARK_BENCH_RESULTS:-}" ]]; then
        echo "$*" >>"$TIDEMARK_BENCH_RESULTS"
    fi
}

# parse_sizes SCRIPT [ROWS...]: sets sizes to the row counts given (default 1000000), or
# prints SCRIPT's usage for -h/--help; stops on anything that is not a positive integer.
parse_sizes() {
    local script=$1 n
    shift
    sizes=("$@")
    [[ ${#sizes[@]} -gt 0 ]] || sizes=(1000000)
    for n in "${sizes[@]}"; do
        case "$n" in
            -h | --help)
                print_usage "$script"
                exit 0
                ;;
        esac
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "row count '$n' is not a positive integer (usage: $script [ROWS...])"
    done
}

# report_export TITLE TARGET "N EXPORT_S HOST_S RSS_KIB"...: the table of host against a
# database's own export, with the verdicts on the ratio and peak RSS.
report_export() {
    python3 - "$@" <<'PY'
import sys

title, target = sys.argv[1], float(sys.argv[2])
print()
print(title)
print(f"{'rows':>10}  {'export s':>8}  {'host s':>8}  {'host/export':>11}  {'peak RSS MiB':>12}")
worst, peak = None, 0.0
for line in sys.argv[3:]:
    n, export_s, host_s, rss = line.split()
    ratio = float(export_s) / float(host_s)
    rss = int(rss) / 1024
    worst = ratio if worst is None else min(worst, ratio)
    peak = max(peak, rss)
    print(f"{int(n):>10}  {float(export_s):>8.3f}  {float(host_s):>8.3f}  {ratio:>11.2f}  {rss:>12.1f}")
print()
print(f"  ratio >= {target:.2f}: {'OK' if worst >= target else 'MISSED'} (lowest {worst:.2f})")
print(f"  peak RSS < 64 MiB: {'OK' if peak < 64 else 'MISSED'} (highest {peak:.1f} MiB)")
PY
}

# pg_tables_sql FIRST LAST ROWS WIDTH: tables SCHEMA.tN for N from FIRST to LAST (N padded to
# WIDTH digits), each of ROWS users stamped over the last hour, with the cursor's index.
pg_tables_sql() {
    local first=$1 last=$2 rows=$3 width=$4
    cat <<SQL
SET client_min_messages = warning;
DO \$\$
DECLARE i int;
BEGIN
  FOR i IN $first..$last LOOP
    EXECUTE format('CREATE TABLE $SCHEMA.t%s (id bigint PRIMARY KEY, email text NOT NULL,
        name text NOT NULL, updated_at timestamptz NOT NULL)', lpad(i::text, $width, '0'));
    EXECUTE format('CREATE INDEX ON $SCHEMA.t%s (updated_at, id)', lpad(i::text, $width, '0'));
    EXECUTE format('INSERT INTO $SCHEMA.t%s SELECT g, ''user'' || g || ''@example.com'',
        ''user '' || g, now() - interval ''1 hour'' + g * interval ''1 ms''
        FROM generate_series(1, $rows) g', lpad(i::text, $width, '0'));
  END LOOP;
END \$\$;
SQL
}

# sqlite_users_seed FILE ROWS: an SQLite file (WAL) with a users table of ROWS users stamped
# over the last hour, with the cursor's index.
sqlite_users_seed() {
    local file=$1 rows=$2
    sqlite3 "$file" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX users_cursor ON users (updated_at, id);
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $rows)
INSERT INTO users SELECT n, 'user' || n || '@example.com', 'user ' || n,
    strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 hour', '+' || n || ' seconds') FROM g;
SQL
}
