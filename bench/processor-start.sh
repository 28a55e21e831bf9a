#!/usr/bin/env bash
# Benchmark of a warm start with a WebAssembly processor: how long `host run --once` takes,
# as a whole process, to deliver one row through `passthrough.wasm` when the module is
# already in the compile cache.
#
# It builds the release host and the example processors, creates tidemark_bench_start.users
# with 1 row in PostgreSQL, warms the compile cache with `host check`, then runs
#   host run --once --settle 0s --batch-size 1 --module passthrough.wasm --cache-dir CACHE \
#            --state sqlite://<fresh dir>/state.db --output /dev/null
# RUNS times (a fresh state each time, so each run delivers that row) and prints the min,
# median and max wall time in ms; then the same without --module, for comparison. The whole
# process (start-up, connecting to PostgreSQL, creating the state database, one batch,
# checkpoint, exit) is an upper bound of "start to first batch"; the target is a median
# under 100 ms. For information it also prints, from the debug log of an untimed run, when
# the module was loaded and when the first batch had gone through it.
#
# Usage: bench/processor-start.sh [RUNS]          (default: 10)
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL  database to use (default postgres://postgres@127.0.0.1:5432/test);
#                                the script creates and finally drops schema tidemark_bench_start.
#   CARGO_TARGET_DIR             honoured when locating the host binary and the module.
#
# Exits non-zero when a step fails (build, database, host check, a host run, or a run that
# did not deliver the row, or did not load the module from the cache). Missing the target is
# reported as MISSED but does not change the exit status.
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
SCHEMA=tidemark_bench_start
TABLE="$SCHEMA.users"
TARGET_MS=100   # median wall time of a warm start with the module, below

BENCH_NAME=processor-start
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- arguments -------------------------------------------------------------------------
bench_count "${BASH_SOURCE[0]}" RUNS 10 "$@"
RUNS=$count

# --- database, temp dir, build ---------------------------------------------------------
prepare_bench tidemark-bench-start --postgres psql cargo python3
build_guests
module="$target_dir/wasm32-wasip2/release/passthrough.wasm"
[[ -f "$module" ]] || die "built module not found at $module"
note "host binary: $host"
note "module: $module"

# --- the table -------------------------------------------------------------------------
note "creating $TABLE with 1 row"
schema_created=1
psql_q <<SQL || die "creating $TABLE failed (see the psql error above)"
$(users_table_sql)
INSERT INTO $TABLE VALUES (1, 'user1@example.com', 'User 1', 'pro', 1.5, '2024-01-01 00:00:00.000001+00');
CREATE INDEX users_updated_at_id ON $TABLE (updated_at, id);
ANALYZE $TABLE;
SQL

# --- the compile cache -----------------------------------------------------------------
cache_dir="$tmp/cache"
warm_cache "$module" "$cache_dir"

# --- timing ----------------------------------------------------------------------------
elapsed_us=0
run_t0=""   # EPOCHREALTIME at the start of the last run

# run_once LABEL DIR [EXTRA ARGS...]: one host run with a fresh state in DIR, timed into
# elapsed_us; then checks (untimed) that it delivered the row.
run_once() {
    local label=$1 dir=$2
    shift 2
    rm -rf "$dir"
    mkdir -p "$dir"
    local state="sqlite://$dir/state.db" t0 t1 rc=0
    t0=$EPOCHREALTIME
    run_t0=$t0
    "$host" run --source "$URL" --table "$TABLE" --once --settle 0s --batch-size 1 \
        --state "$state" --output /dev/null --pipeline start "$@" \
        >"$dir/host.out" 2>"$dir/host.err" || rc=$?
    t1=$EPOCHREALTIME
    if [[ $rc -ne 0 ]]; then
        echo "processor-start: error: host run ($label) exited with status $rc; its last output:" >&2
        tail -n 30 "$dir/host.out" "$dir/host.err" >&2 || true
        exit 1
    fi
    # EPOCHREALTIME (read without forking a process) less its decimal separator: microseconds.
    elapsed_us=$((10#${t1//[^0-9]/} - 10#${t0//[^0-9]/}))
    local status_json synced
    status_json="$("$host" status --state "$state" --json 2>"$dir/status.err")" || {
        cat "$dir/status.err" >&2
        die "host status failed"
    }
    synced="$(python3 -c '
import json, sys
data = json.loads(sys.stdin.read())
if isinstance(data, dict):
    data = data.get("pipelines", [data])
rows = [p for p in data if isinstance(p, dict) and p.get("pipeline", p.get("name")) == "start"]
if len(rows) != 1 or "rows_synced" not in rows[0]:
    sys.exit("unexpected status JSON: " + json.dumps(data)[:500])
print(rows[0]["rows_synced"])
' <<<"$status_json")" || die "could not read rows_synced from host status --json: $status_json"
    [[ "$synced" == 1 ]] || die "host run ($label) synced $synced rows, expected 1 (status: $status_json)"
}

# One untimed run of each kind first (binary and libraries in the page cache), the module's
# with debug logs to check that it really loads from the compile cache.
note "untimed warm-up runs"
TIDEMARK_LOG=debug run_once "module, warm-up" "$tmp/warmup-module" --module "$module" --cache-dir "$cache_dir"
grep -q 'from the cache' "$tmp/warmup-module/host.err" ||
    die "host run did not load the module from the compile cache; its log: $(tail -n 20 "$tmp/warmup-module/host.err")"
# Where in that run the module was loaded and the first batch went through it, from the log
# timestamps (debug logging slows the run down a little; for information only).
inside="$(python3 - "$run_t0" "$tmp/warmup-module/host.err" "$(basename "$module" .wasm)" <<'PY' || true
import datetime, sys

t0, log, name = float(sys.argv[1]), sys.argv[2], sys.argv[3]

def at(marker):
    for line in open(log, encoding="utf-8", errors="replace"):
        if marker in line:
            try:
                stamp = datetime.datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
            except ValueError:
                return None
            return (stamp.replace(tzinfo=datetime.timezone.utc).timestamp() - t0) * 1e3
    return None

loaded, batch = at(f"loaded {name} "), at(f" through {name} in ")
if loaded is not None and batch is not None:
    print(f"module loaded from the cache at +{loaded:.1f} ms, first batch through it done at +{batch:.1f} ms")
PY
)"
run_once "no module, warm-up" "$tmp/warmup-plain"

module_times=()
plain_times=()
for i in $(seq 1 "$RUNS"); do
    # Alternate the two kinds, so that both see the same machine.
    run_once "module, run $i" "$tmp/module-$i" --module "$module" --cache-dir "$cache_dir"
    module_times+=("$elapsed_us")
    run_once "no module, run $i" "$tmp/plain-$i"
    plain_times+=("$elapsed_us")
    note "run $i/$RUNS: with module $((module_times[-1] / 1000)) ms, without $((plain_times[-1] / 1000)) ms"
done

# --- report ----------------------------------------------------------------------------
python3 - "$TARGET_MS" "$RUNS" "$module" "$(nproc 2>/dev/null || echo '?')" \
    "${module_times[*]}" "${plain_times[*]}" "$inside" <<'PY'
import statistics
import sys

target_ms = float(sys.argv[1])
runs, module, cpus = sys.argv[2:5]
module_ms = [int(t) / 1000.0 for t in sys.argv[5].split()]
plain_ms = [int(t) / 1000.0 for t in sys.argv[6].split()]
inside = sys.argv[7]

print()
print(f"Warm start to first batch, whole `host run --once` process: {runs} runs, 1 row, {cpus} CPUs")
print(f"module: {module} (in the compile cache)")
header = f"{'':<24}  {'min ms':>8}  {'median ms':>9}  {'max ms':>8}"
print(header)
print("-" * len(header))
for label, times in (("with --module", module_ms), ("without --module", plain_ms)):
    print(f"{label:<24}  {min(times):>8.1f}  {statistics.median(times):>9.1f}  {max(times):>8.1f}")
median = statistics.median(module_ms)
print(f"{'module overhead':<24}  {'':>8}  {median - statistics.median(plain_ms):>9.1f}")
if inside:
    print(f"inside one run (TIDEMARK_LOG=debug, untimed warm-up): {inside}")
print()
print(f"target: warm start with the module reaches its first batch in < {target_ms:.0f} ms (median; whole process, an upper bound)")
print(f"  {'warm start < ' + format(target_ms, '.0f') + ' ms:':<22} {'OK' if median < target_ms else 'MISSED'} (median {median:.1f} ms)")
PY
