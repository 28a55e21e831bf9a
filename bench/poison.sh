#!/usr/bin/env bash
# Poison isolation (issue 12's "Measure"): how many module calls the host needs to find 1 and
# 5 bad rows in one batch of 1,000, and how long the split takes with `mask_pii` after the
# failing transform (every part that passes goes on through mask_pii to the output).
#
# For each bad-row count and each way of failing (`fatal`: guest_reject_rows answers fatal
# for a batch holding a listed row, the `?` of a contract 0.2 transform; `trap`:
# guest_poison_row panics on it), it runs `host run --once` over a SQLite table of 1,000
# users in one batch (`--batch-size 1000 --max-retries 0`), checks that exactly the bad rows
# were parked, and reads the calls and the time from the host's log line
# (`… (N calls in T)`). Prints one line per run and the medians.
#
# Usage: bench/poison.sh
#
# Environment:
#   RUNS              runs per configuration (default 3)
#   CARGO_TARGET_DIR  honoured when locating the host binary and the modules.
#
# Builds the release host and the guests (scripts/build-guests) first.
set -euo pipefail

BENCH_NAME=poison
# shellcheck source=bench/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bench_help "${BASH_SOURCE[0]}" "$@"
[[ $# -eq 0 ]] || die "no arguments expected (usage: $0)"
RUNS="${RUNS:-3}"
require_positive RUNS "$RUNS"
prepare_bench tidemark-bench-poison sqlite3 cargo python3
build_guests
modules="$target_dir/wasm32-wasip2/release"
for name in guest_reject_rows guest_poison_row mask_pii; do
    [[ -f "$modules/$name.wasm" ]] || die "no $name.wasm in $modules (bash scripts/build-guests)"
done

note "creating a SQLite table of 1,000 users"
sqlite3 "$tmp/source.db" <<'SQL'
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT NOT NULL,
                    updated_at TEXT NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO users SELECT i, 'user' || i || '@Example.com', 'user ' || i,
                         strftime('%Y-%m-%d %H:%M:%f', '2024-01-01', '+' || i || ' seconds')
FROM n;
SQL
cache="$tmp/cache"
for name in guest_reject_rows guest_poison_row mask_pii; do
    warm_cache "$modules/$name.wasm" "$cache"
done

# measure HOW BAD_IDS: one run; prints `calls seconds`.
measure() {
    local how=$1 bad=$2 run="$tmp/run"
    rm -rf "$run"
    mkdir -p "$run"
    local failing
    case "$how" in
        fatal) failing=(--module "$modules/guest_reject_rows.wasm" --set "fatal_on=$bad") ;;
        trap) failing=(--module "$modules/guest_poison_row.wasm" --set "poison=$bad" --set how=trap) ;;
    esac
    "$host" run --source "sqlite://$tmp/source.db" --table users --batch-size 1000 --once \
        --settle 0s --max-retries 0 --state "sqlite://$run/state.db" --pipeline poison \
        --cache-dir "$cache" --output /dev/null "${failing[@]}" --module "$modules/mask_pii.wasm" \
        >"$run/host.out" 2>"$run/host.err" || {
        tail -n 30 "$run/host.err" >&2
        die "host run ($how, bad rows $bad) failed"
    }
    local want parked
    want=$(tr ',' '\n' <<<"$bad" | wc -l)
    parked=$(grep -c 'parked row id=' "$run/host.err" || true)
    [[ "$parked" == "$want" ]] || die "$how: $parked rows parked, expected $want: $(tail -n 5 "$run/host.err")"
    python3 - "$run/host.err" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
found = re.findall(r"\((\d+) calls in ([\d.]+)(ns|µs|us|ms|s)\)", text)
if len(found) != 1:
    sys.exit(f"expected one split log line, found {len(found)}")
calls, value, unit = found[0]
scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]
print(calls, round(float(value) * scale, 4))
PY
}

note "load: $(uptime)"
results=()
for how in fatal trap; do
    for bad in 613 "4,251,252,701,1000"; do
        times=()
        calls=""
        for ((i = 1; i <= RUNS; i++)); do
            read -r calls seconds < <(measure "$how" "$bad")
            echo "$how bad=$bad run $i: $calls calls, ${seconds}s" >&2
            times+=("$seconds")
        done
        median=$(printf '%s\n' "${times[@]}" | sort -g | sed -n "$(((RUNS + 1) / 2))p")
        k=$(tr ',' '\n' <<<"$bad" | wc -l)
        results+=("$how $k $calls $median ${times[*]}")
    done
done

echo
printf '%-6s %8s %6s %12s   %s\n' failing "bad rows" calls "median ms" "all runs (s)"
for line in "${results[@]}"; do
    read -r how k calls median all <<<"$line"
    printf '%-6s %8s %6s %12s   %s\n' "$how" "$k" "$calls" "$(calc "$median * 1000")" "$all"
done
