#!/usr/bin/env bash
# Benchmark of Tidemark's sync core against PostgreSQL.
#
# For each row count N it seeds tidemark_bench.users with N rows, then compares:
#   - a raw `COPY (SELECT … ORDER BY updated_at, id) TO STDOUT` through psql, the
#     baseline: about as fast as any client can read the same rows in the same order;
#   - one full sync by `host run --once` into /dev/null, with its wall time and peak RSS;
#   - with TIDEMARK_BENCH_MODULE set, the same sync through that WebAssembly processor
#     (`--module PATH`), its compile cache warmed beforehand by `host check`, so compile time
#     is not counted: wall time, rows/s, ratio to the run without a module, peak RSS;
#   - with TIDEMARK_BENCH_DETECT_DELETES=1, the cost of keeping the key inventory of
#     --detect-deletes (issue 14): runs without and with `--detect-deletes 1h`, back to back,
#     three times, and the ratio of their times, the one check at the end of the run with the flag
#     left out (its own time, as `host status` reports it); target at most 1.15.
#
# Usage: bench/sync-postgres.sh [ROWS...]        (default: 1000000)
#   e.g. bench/sync-postgres.sh 100000 1000000   to show that peak RSS stays flat.
#
# Environment:
#   TIDEMARK_BENCH_POSTGRES_URL  database to use (default postgres://postgres@127.0.0.1:5432/test);
#                                the script creates and finally drops schema tidemark_bench there.
#   TIDEMARK_BENCH_SCHEMA        that schema's name instead, so that two runs can share a server.
#   TIDEMARK_BENCH_BATCH_SIZE    --batch-size passed to the host (default 1000).
#   TIDEMARK_BENCH_MODULE        a processor component to time as well, e.g.
#                                target/wasm32-wasip2/release/passthrough.wasm (build it with
#                                bash scripts/build-guests); unset: no module run.
#   TIDEMARK_BENCH_DETECT_DELETES  1: time the inventory of --detect-deletes as well.
#   CARGO_TARGET_DIR             honoured when locating the release binary.
#
# Exits non-zero when a step fails (build, seeding, COPY, a host run, or the host
# reporting a row count other than N). Missing a performance target is reported as
# MISSED but does not change the exit status.
set -euo pipefail

URL="${TIDEMARK_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
BATCH_SIZE="${TIDEMARK_BENCH_BATCH_SIZE:-1000}"
MODULE="${TIDEMARK_BENCH_MODULE:-}"
DETECT_DELETES="${TIDEMARK_BENCH_DETECT_DELETES:-}"
SCHEMA="${TIDEMARK_BENCH_SCHEMA:-tidemark_bench}"
TABLE="$SCHEMA.users"

# Targets (printed next to the results).
TARGET_RATIO=0.70     # host rows/s divided by COPY rows/s, at least (issue 13)
TARGET_RSS_MIB=64     # host peak RSS, below
FLAT_SLACK_MIB=8      # "flat": largest-N RSS at most smallest-N RSS + max(8 MiB, 25 %)
FLAT_SLACK_PCT=25
TARGET_MODULE_RATIO=0.70   # host+module rows/s divided by host rows/s, at least
TARGET_MODULE_COPY_RATIO=0.60   # host+passthrough rows/s divided by COPY rows/s, at least

# A relative module path is taken from the caller's directory, else from the repository.
if [[ -n "$MODULE" && "$MODULE" != /* && -f "$MODULE" ]]; then
    MODULE="$PWD/$MODULE"
fi

BENCH_NAME=sync-postgres
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- arguments -------------------------------------------------------------------------
parse_sizes "${BASH_SOURCE[0]}" "$@"
set -- "${sizes[@]}"
[[ "$BATCH_SIZE" =~ ^[1-9][0-9]*$ ]] || die "TIDEMARK_BENCH_BATCH_SIZE='$BATCH_SIZE' is not a positive integer"
if [[ -n "$MODULE" ]]; then
    [[ "$MODULE" == /* ]] || MODULE="$repo/$MODULE"
    [[ -f "$MODULE" ]] ||
        die "TIDEMARK_BENCH_MODULE: no file at $MODULE (build the example processors with: bash scripts/build-guests)"
fi

# --- tools, database, temp dir, build --------------------------------------------------
prepare_bench tidemark-bench --postgres psql cargo python3 /usr/bin/time
note "host binary: $host"

if [[ -n "$MODULE" ]]; then
    cache_dir="$tmp/cache"
    warm_cache "$MODULE" "$cache_dir"
fi

# --- one size --------------------------------------------------------------------------
seed() {
    local n=$1
    schema_created=1
    note "seeding $TABLE with $n rows"
    # updated_at: 37 µs apart from 2024-01-01 on (so all in the past, with microseconds);
    # every 10th row repeats its predecessor's timestamp, and rows ≡ 1, 2 (mod 1000) take
    # that same one too (four rows tied), so the sync has to break ties on id.
    if ! psql_q <<SQL
$(users_table_sql)
INSERT INTO $TABLE (id, email, name, plan, score, updated_at)
SELECT g,
       'user' || g || '@example.com',
       'User ' || g,
       (ARRAY['free', 'pro', 'team', 'enterprise'])[1 + g % 4],
       ((g * 7919::bigint) % 100000) / 100.0,
       timestamptz '2024-01-01 00:00:00+00'
         + ($(tied_step_sql g) * interval '37 microseconds')
FROM generate_series(1::bigint, $n) AS g;
CREATE INDEX users_updated_at_id ON $TABLE (updated_at, id);
ANALYZE $TABLE;
SQL
    then
        die "seeding $TABLE failed (see the psql error above)"
    fi
    local count
    count="$(psql_q -At -c "SELECT count(*) FROM $TABLE")"
    [[ "$count" == "$n" ]] || die "seeding produced $count rows, expected $n"
}

time_copy() {
    # Prints elapsed seconds of one COPY of all rows in sync order to /dev/null.
    local sql="COPY (SELECT id, email, name, plan, score, updated_at FROM $TABLE ORDER BY updated_at, id) TO STDOUT"
    local t0 t1
    t0="$(now)"
    psql_q -c "$sql" >/dev/null || die "COPY failed"
    t1="$(now)"
    calc "$t1 - $t0"
}

results=()   # "n copy_s host_s rss_kib [module_s module_rss_kib]"

run_size() {
    local n=$1
    seed "$n"

    note "warming the cache with one untimed COPY"
    time_copy >/dev/null
    note "timing COPY"
    local copy_s
    copy_s="$(time_copy)"

    note "timing host run --once ($n rows, batch size $BATCH_SIZE)"
    time_host "$tmp/run-$n" "bench-$n" "$n"
    local host_s=$run_s rss_kib=$run_rss_kib
    local result="$n $copy_s $host_s $rss_kib" module_note=""
    record_result postgres "$n" "$copy_s" "$host_s" "$rss_kib"

    if [[ -n "$MODULE" ]]; then
        note "timing host run --once --module $(basename "$MODULE") ($n rows, batch size $BATCH_SIZE)"
        time_host "$tmp/run-$n-module" "bench-$n-module" "$n" --module "$MODULE" --cache-dir "$cache_dir"
        result+=" $run_s $run_rss_kib"
        record_result postgres-module "$(basename "$MODULE" .wasm)" "$n" "$copy_s" "$run_s" "$run_rss_kib"
        module_note="; host+module ${run_s}s, peak RSS ${run_rss_kib} KiB"
    fi

    results+=("$result")
    note "N=$n: COPY ${copy_s}s, host ${host_s}s, peak RSS ${rss_kib} KiB$module_note"
    if [[ -n "$DETECT_DELETES" ]]; then
        time_inventory "$n"
    fi
}

inventory_results=()   # "n plain_s with_s check_s", one per pair of runs

time_inventory() {
    # Pairs of runs back to back: without, then with --detect-deletes (the inventory kept at
    # every checkpoint, and one check at the end, whose own time is taken out).
    local n=$1 pair plain_s with_s check_s
    for pair in 1 2 3; do
        note "timing host run --once without --detect-deletes ($n rows, pair $pair)"
        time_host "$tmp/run-$n-plain" "bench-$n-plain" "$n"
        plain_s=$run_s
        note "timing host run --once --detect-deletes 1h ($n rows, pair $pair)"
        time_host "$tmp/run-$n-inventory" "bench-$n-inventory" "$n" --detect-deletes 1h
        with_s=$run_s
        check_s="$("$host" status --state "sqlite://$tmp/run-$n-inventory/state.db" --json |
            python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["last_delete_check_seconds"] or 0)')" ||
            die "could not read the check time from host status"
        inventory_results+=("$n $plain_s $with_s $check_s")
        note "N=$n pair $pair: without ${plain_s}s, with ${with_s}s (of which the check ${check_s}s)"
    done
}

for n in "$@"; do
    run_size "$n"
done

# --- report ----------------------------------------------------------------------------
if [[ ${#inventory_results[@]} -gt 0 ]]; then
    python3 - "$BATCH_SIZE" "${inventory_results[@]}" <<'PY'
import sys
batch = int(sys.argv[1])
print()
print("Keeping the key inventory (--detect-deletes), runs back to back")
print("(check s: the one check at the end, which first folds the keys logged by every batch")
print(" into the inventory; ratio: without the check; ratio+check: the whole run)")
header = (f"{'rows':>10}  {'without s':>9}  {'with s':>8}  {'check s':>8}  {'with-check':>10}"
          f"  {'ratio':>6}  {'ratio+check':>11}  {'extra ms/batch':>14}")
print(header)
print("-" * len(header))
ratios = []
for line in sys.argv[2:]:
    n, plain, with_, check = line.split()
    n, plain, with_, check = int(n), float(plain), float(with_), float(check)
    kept = with_ - check
    ratio = kept / plain
    ratios.append(ratio)
    per_batch = (kept - plain) / (n / batch) * 1000
    print(f"{n:>10}  {plain:>9.3f}  {with_:>8.3f}  {check:>8.3f}  {kept:>10.3f}  {ratio:>6.3f}"
          f"  {with_ / plain:>11.3f}  {per_batch:>14.3f}")
median = sorted(ratios)[len(ratios) // 2]
print(f"  target: inventory at most 15 % slower per batch: {'OK' if median <= 1.15 else 'MISSED'}"
      f" (median ratio {median:.3f}, highest {max(ratios):.3f})")
PY
fi

pg_version="$(psql_q -At -c 'SHOW server_version' 2>/dev/null || echo '?')"
python3 - "$TARGET_RATIO" "$TARGET_RSS_MIB" "$FLAT_SLACK_MIB" "$FLAT_SLACK_PCT" \
    "$BATCH_SIZE" "$pg_version" "$(nproc 2>/dev/null || echo '?')" \
    "$TARGET_MODULE_RATIO" "$MODULE" "$TARGET_MODULE_COPY_RATIO" "${results[@]}" <<'PY'
import sys

target_ratio, target_rss, slack_mib, slack_pct = (float(x) for x in sys.argv[1:5])
batch, pg_version, cpus = sys.argv[5:8]
target_module_ratio, module = float(sys.argv[8]), sys.argv[9]
rows = []
modules = []  # (module_s, module_rss_mib), by row, when a module was timed
target_module_copy_ratio = float(sys.argv[10])
for line in sys.argv[11:]:
    n, copy_s, host_s, rss_kib, *module_run = line.split()
    rows.append((int(n), float(copy_s), float(host_s), int(rss_kib) / 1024.0))
    if module_run:
        modules.append((float(module_run[0]), int(module_run[1]) / 1024.0))

def rate(n, s):
    return n / s if s > 0 else float("inf")

print()
print(f"Tidemark sync vs COPY on PostgreSQL {pg_version} ({cpus} CPUs, batch size {batch})")
if modules:
    print(f"module: {module} (compile cache warmed by host check)")
header = f"{'rows':>10}  {'COPY s':>8}  {'COPY rows/s':>12}  {'host s':>8}  {'host rows/s':>12}  {'host/COPY':>9}  {'peak RSS MiB':>12}"
if modules:
    header += f"  {'+module s':>9}  {'+mod rows/s':>12}  {'mod/host':>8}  {'mod/COPY':>8}  {'+mod RSS MiB':>12}"
print(header)
print("-" * len(header))
for i, (n, c, h, rss) in enumerate(rows):
    ratio = rate(n, h) / rate(n, c)
    line = f"{n:>10}  {c:>8.3f}  {rate(n, c):>12,.0f}  {h:>8.3f}  {rate(n, h):>12,.0f}  {ratio:>9.2f}  {rss:>12.1f}"
    if modules:
        m, m_rss = modules[i]
        line += (f"  {m:>9.3f}  {rate(n, m):>12,.0f}  {rate(n, m) / rate(n, h):>8.2f}"
                 f"  {rate(n, m) / rate(n, c):>8.2f}  {m_rss:>12.1f}")
    print(line)
print()
print(f"target: ratio >= {target_ratio:.2f}, peak RSS < {target_rss:.0f} MiB and flat from 100k to 1M"
      + (f"; with the module, ratio to host >= {target_module_ratio:.2f}" if modules else ""))

ratios = [rate(n, h) / rate(n, c) for n, c, h, _ in rows]
worst = min(ratios)


def verdict(label, ok, detail):
    print(f"  {label + ':':<22} {'OK' if ok else 'MISSED'} ({detail})")

verdict(f"ratio >= {target_ratio:.2f}", worst >= target_ratio, f"lowest {worst:.2f}")
peak = max(r[3] for r in rows)
verdict(f"peak RSS < {target_rss:.0f} MiB", peak < target_rss, f"highest {peak:.1f} MiB")
if len({r[0] for r in rows}) < 2:
    print(f"  {'RSS flat:':<22} n/a (run two sizes, e.g. 100000 1000000)")
else:
    small = min(rows, key=lambda r: r[0])
    large = max(rows, key=lambda r: r[0])
    allowed = small[3] + max(slack_mib, small[3] * slack_pct / 100.0)
    ok = large[3] <= allowed
    verdict("RSS flat", ok,
            f"{small[0]:,} rows {small[3]:.1f} MiB -> {large[0]:,} rows {large[3]:.1f} MiB; "
            f"allowed up to {allowed:.1f} MiB")
if modules:
    module_ratios = [rate(n, m) / rate(n, h) for (n, _, h, _), (m, _) in zip(rows, modules)]
    worst_module = min(module_ratios)
    verdict(f"module ratio >= {target_module_ratio:.2f}", worst_module >= target_module_ratio,
            f"lowest {worst_module:.2f}")
    module_copy = min(rate(n, m) / rate(n, c) for (n, c, _, _), (m, _) in zip(rows, modules))
    verdict(f"mod/COPY >= {target_module_copy_ratio:.2f}", module_copy >= target_module_copy_ratio,
            f"lowest {module_copy:.2f}; the target for passthrough")
PY
