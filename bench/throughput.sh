#!/usr/bin/env bash
# Issue 13's table in one go: Tidemark against each database's own export, and processors
# against no processor, each pair timed back to back on the same data, plus peak RSS.
#
#   PostgreSQL, no module        host / `COPY … TO STDOUT`         (bench/sync-postgres.sh)
#   PostgreSQL, passthrough      host --module passthrough / COPY  (same run)
#   MariaDB, no module           host / `mysql --quick`, keyset order (bench/sync-mariadb.sh)
#   SQLite, no module            host / `sqlite3 -json`, same order  (bench/sync-sqlite.sh)
#   mask_pii, py_enrich, js_filter   host --module M / host, 100k rows (bench/polyglot.sh)
#
# PostgreSQL runs at 100k and ROWS rows, so that peak RSS shows whether it stays flat; the
# other databases at ROWS. Each script can also run alone (see its header).
#
# Usage: bench/throughput.sh [ROWS]            (default: 1000000)
#
# Environment: as the scripts above (TIDEMARK_BENCH_POSTGRES_URL, TIDEMARK_BENCH_MYSQL_URL,
# CARGO_TARGET_DIR); RUNS (default 1) is passed to bench/polyglot.sh; SKIP, a list of
# postgres, mariadb, sqlite, modules, leaves those out.
set -euo pipefail

BENCH_NAME=throughput
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_count "${BASH_SOURCE[0]}" ROWS 1000000 "$@"
ROWS=$count
SKIP="${SKIP:-}"
skipped() { [[ " $SKIP " == *" $1 "* ]]; }

prepare_bench tidemark-bench-throughput cargo python3
export TIDEMARK_BENCH_RESULTS="$tmp/results"
: >"$TIDEMARK_BENCH_RESULTS"
build_guests

if ! skipped postgres; then
    TIDEMARK_BENCH_MODULE="$target_dir/wasm32-wasip2/release/passthrough.wasm" \
        bash bench/sync-postgres.sh 100000 "$ROWS"
fi
skipped mariadb || bash bench/sync-mariadb.sh "$ROWS"
skipped sqlite || bash bench/sync-sqlite.sh "$ROWS"
skipped modules || RUNS="${RUNS:-1}" bash bench/polyglot.sh 100000

python3 - "$ROWS" "$TIDEMARK_BENCH_RESULTS" <<'PY'
import sys

rows_wanted = int(sys.argv[1])
lines = [line.split() for line in open(sys.argv[2]) if line.strip()]
table = []  # (path, tidemark, reference, ratio, target, rss MiB)


def rate(n, seconds):
    return f"{n / seconds / 1000:,.0f}k rows/s"


for kind, *rest in lines:
    if kind in ("postgres", "mariadb", "sqlite"):
        n, export_s, host_s, rss = int(rest[0]), float(rest[1]), float(rest[2]), int(rest[3])
        if n != rows_wanted:
            continue
        name, export, target = {
            "postgres": ("PostgreSQL, no module", "COPY … TO STDOUT", 0.70),
            "mariadb": ("MariaDB, no module", "mysql --quick, keyset order", 0.80),
            "sqlite": ("SQLite, no module", "sqlite3 -json, same order", 0.60),
        }[kind]
        table.append((name, rate(n, host_s), f"{export} {rate(n, export_s)}",
                      export_s / host_s, f">= {target:.2f}", f"{rss / 1024:.1f}", target))
    elif kind == "postgres-module":
        module, n, copy_s, module_s, rss = rest[0], int(rest[1]), float(rest[2]), float(rest[3]), int(rest[4])
        if n != rows_wanted:
            continue
        table.append((f"PostgreSQL through {module}", rate(n, module_s), f"COPY {rate(n, copy_s)}",
                      copy_s / module_s, ">= 0.60", f"{rss / 1024:.1f}", 0.60))
    elif kind == "module":
        module, n, none_ms, module_ms = rest[0], int(rest[1]), float(rest[2]), float(rest[3])
        target = 0.70 if module == "mask_pii" else None
        table.append((f"{module} vs no module, {n // 1000}k rows", rate(n, module_ms / 1000),
                      f"no module {rate(n, none_ms / 1000)}", none_ms / module_ms,
                      f">= {target:.2f}" if target else "report", "", target))

pg = [(int(r[0]), int(r[3]) / 1024) for kind, *r in lines if kind == "postgres"]
print()
print(f"Issue 13: {rows_wanted:,} rows unless said, batch size 1000, release build")
print(f"| path | Tidemark | reference | ratio | target | peak RSS MiB |")
print(f"|---|---|---|---|---|---|")
for name, tidemark, reference, ratio, target_text, rss_text, target in table:
    verdict = "" if target is None else (" OK" if ratio >= target else " MISSED")
    print(f"| {name} | {tidemark} | {reference} | {ratio:.2f} | {target_text}{verdict} | {rss_text} |")
if len(pg) >= 2:
    (small_n, small), (large_n, large) = min(pg), max(pg)
    flat = large <= max(small + 8, small * 1.25) and large <= 64
    print(f"\nPostgreSQL peak RSS without a module: {small:.1f} MiB at {small_n:,} rows, "
          f"{large:.1f} MiB at {large_n:,} rows ({'flat, under 64 MiB' if flat else 'MISSED'})")
PY
