#!/usr/bin/env bash
# Benchmark of processors in other languages: the JavaScript `js_filter` and the Python
# `py_enrich` examples, with the Rust `mask_pii` for comparison. For each it reports:
#
#   - the component's size (.wasm);
#   - an uncached compile: `host check --module M --cache-dir <empty dir>`, wall time of the
#     whole process and the compile time host check reports;
#   - a cached load: `host check` again with that cache, as host check reports it (the median
#     of LOADS runs);
#   - rows/s of `host run --once --batch-size 1000 --output /dev/null` over a PostgreSQL table
#     of ROWS rows through the module, against the same run without a module (the median of
#     RUNS runs each, with the compile cache warm).
#
# The modules run with: js_filter `--set where=score >= 0` (every row kept, each one
# parsed and tested), py_enrich with its defaults (splits `name`), mask_pii with its
# defaults (hashes `email`). It builds the release host and the guests (scripts/build-guests),
# creates tidemark_bench_polyglot.users in PostgreSQL and drops it at the end.
#
# Usage: bench/polyglot.sh [ROWS]          (default: 100000)
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL  database to use (default postgres://postgres@127.0.0.1:5432/test)
#   RUNS                         timed runs per configuration (default 3)
#   LOADS                        cached loads per module (default 5)
#   CARGO_TARGET_DIR             honoured when locating the host binary and the modules.
#
# Exits non-zero when a step fails (build, database, host check, a host run, or a run that
# did not sync every row).
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
SCHEMA=tidemark_bench_polyglot
TABLE="$SCHEMA.users"
RUNS="${RUNS:-3}"
LOADS="${LOADS:-5}"
BATCH_SIZE=1000

BENCH_NAME=polyglot
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_count "${BASH_SOURCE[0]}" ROWS 100000 "$@"
ROWS=$count
require_positive RUNS "$RUNS"
require_positive LOADS "$LOADS"

# --- build -----------------------------------------------------------------------------
prepare_bench tidemark-bench-polyglot --postgres psql cargo python3
build_guests
modules=(js_filter py_enrich mask_pii)
declare -A config=(
    [js_filter]="where=score >= 0"
    [py_enrich]=""
    [mask_pii]=""
)
for name in "${modules[@]}"; do
    [[ -f "$target_dir/wasm32-wasip2/release/$name.wasm" ]] ||
        die "no $name.wasm in $target_dir/wasm32-wasip2/release (bash scripts/build-guests)"
done

# --- the table -------------------------------------------------------------------------
note "creating $TABLE with $ROWS rows"
schema_created=1
psql_q <<SQL || die "creating $TABLE failed (see the psql error above)"
$(users_table_sql)
INSERT INTO $TABLE (id, email, name, plan, score, updated_at)
SELECT g, 'user' || g || '@example.com', 'First' || g || ' Last' || g,
       (ARRAY['free', 'pro', 'team', 'enterprise'])[1 + g % 4],
       ((g * 7919::bigint) % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '37 microseconds'
FROM generate_series(1::bigint, $ROWS) AS g;
CREATE INDEX users_updated_at_id ON $TABLE (updated_at, id);
ANALYZE $TABLE;
SQL

# elapsed_ms CMD...: runs CMD, sets ms to its wall time in milliseconds.
ms=0
elapsed_ms() {
    local t0=$EPOCHREALTIME t1
    "$@"
    t1=$EPOCHREALTIME
    ms=$(((10#${t1//[^0-9]/} - 10#${t0//[^0-9]/}) / 1000))
}

median() {
    printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# --- compile and load ------------------------------------------------------------------
declare -A size_kib compile_wall_ms compile_said load_said
cache_dir="$tmp/cache"
for name in "${modules[@]}"; do
    module="$target_dir/wasm32-wasip2/release/$name.wasm"
    size_kib[$name]=$(($(stat -c %s "$module") / 1024))
    note "$name: uncached compile (host check, empty cache)"
    elapsed_ms "$host" check --module "$module" --cache-dir "$cache_dir" >"$tmp/check.out" 2>&1 ||
        die "host check --module $module failed: $(cat "$tmp/check.out")"
    compile_wall_ms[$name]=$ms
    compile_said[$name]="$(tail -n 1 "$tmp/check.out" | sed -n 's/^compiled (now cached) in //p')"
    [[ -n "${compile_said[$name]}" ]] || die "host check did not compile $name: $(tail -n 1 "$tmp/check.out")"
    loads=()
    for _ in $(seq "$LOADS"); do
        "$host" check --module "$module" --cache-dir "$cache_dir" >"$tmp/check.out" 2>&1 ||
            die "host check --module $module failed: $(cat "$tmp/check.out")"
        said="$(tail -n 1 "$tmp/check.out" | sed -n 's/^loaded from the compile cache in //p')"
        [[ -n "$said" ]] || die "host check did not load $name from the cache: $(tail -n 1 "$tmp/check.out")"
        # In ms, whatever unit host check printed.
        loads+=("$(python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*(ns|µs|us|ms|s)", sys.argv[1].strip())
if not m:
    sys.exit("unreadable load time: " + sys.argv[1])
scale = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
print(f"{float(m.group(1)) * scale:.2f}")' "$said")")
    done
    load_said[$name]="$(median "${loads[@]}")"
done

# --- throughput ------------------------------------------------------------------------
# run_host LABEL [ARGS...]: one `host run --once` with a fresh state; sets ms; checks rows.
run_host() {
    local label=$1
    shift
    local dir="$tmp/run"
    rm -rf "$dir"
    mkdir -p "$dir"
    local rc=0
    elapsed_ms "$host" run --source "$URL" --table "$TABLE" --once --settle 0s \
        --batch-size "$BATCH_SIZE" --state "sqlite://$dir/state.db" --output /dev/null \
        --pipeline bench "$@" >"$dir/host.out" 2>"$dir/host.err" || rc=$?
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$dir/host.err" >&2
        die "host run ($label) exited with status $rc"
    fi
    local synced
    synced="$("$host" status --state "sqlite://$dir/state.db" --json |
        python3 -c 'import json, sys; print([p for p in json.load(sys.stdin) if p["pipeline"] == "bench"][0]["rows_synced"])')" ||
        die "could not read rows_synced after host run ($label)"
    [[ "$synced" == "$ROWS" ]] || die "host run ($label) synced $synced rows, expected $ROWS"
}

declare -A run_ms
runs=()
note "host run --once without a module, $RUNS runs"
for _ in $(seq "$RUNS"); do
    run_host "no module"
    runs+=("$ms")
done
run_ms[none]="$(median "${runs[@]}")"
for name in "${modules[@]}"; do
    module="$target_dir/wasm32-wasip2/release/$name.wasm"
    args=(--module "$module" --cache-dir "$cache_dir")
    [[ -n "${config[$name]}" ]] && args+=(--set "${config[$name]}")
    note "host run --once --module $name.wasm, $RUNS runs"
    runs=()
    for _ in $(seq "$RUNS"); do
        run_host "$name" "${args[@]}"
        runs+=("$ms")
    done
    run_ms[$name]="$(median "${runs[@]}")"
done

# --- report ----------------------------------------------------------------------------
echo
echo "Modules in other languages: $ROWS rows, batch size $BATCH_SIZE, $(nproc) CPUs, medians"
printf '%-12s %10s %14s %12s %12s %12s %8s\n' module "size KiB" "compile wall" "compile" "cached load" "rows/s" "ratio"
printf '%-12s %10s %14s %12s %12s %12d %8s\n' "(none)" "" "" "" "" \
    "$((ROWS * 1000 / run_ms[none]))" "1.00"
for name in "${modules[@]}"; do
    printf '%-12s %10d %13.1fs %12s %10sms %12d %8s\n' "$name" "${size_kib[$name]}" \
        "$(python3 -c "print(${compile_wall_ms[$name]} / 1000)")" "${compile_said[$name]}" \
        "${load_said[$name]}" "$((ROWS * 1000 / run_ms[$name]))" \
        "$(python3 -c "print(f'{${run_ms[none]} / ${run_ms[$name]}:.2f}')")"
done
for name in "${modules[@]}"; do
    record_result module "$name" "$ROWS" "${run_ms[none]}" "${run_ms[$name]}"
done
echo
echo "compile wall: the whole \`host check\` process with an empty cache; compile: what it reports."
echo "cached load: \`host check\` with the cache warm, as it reports it. rows/s: whole \`host run --once\`."
