# shellcheck shell=bash
# Shared by the bench/ scripts; source it after setting BENCH_NAME, URL and SCHEMA, from the
# repository root. Gives: die, note, psql_q, require_postgres, make_tmp (a temp dir that is
# removed, with the schema, on exit) and build_host (sets target_dir and host).

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

bench_cleanup() {
    local rc=$?
    if [[ ${schema_created:-0} -eq 1 ]]; then
        psql_q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 ||
            echo "$BENCH_NAME: warning: could not drop schema $SCHEMA" >&2
    fi
    rm -rf "$tmp"
    exit "$rc"
}

# Builds the release host; sets target_dir (honouring CARGO_TARGET_DIR) and host.
build_host() {
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

# require_tools TOOL...: each must be on PATH; bash 5 is needed for EPOCHREALTIME.
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "'$tool' is not on PATH"
    done
    [[ -n "${EPOCHREALTIME:-}" ]] || die "bash 5 or later is needed (EPOCHREALTIME)"
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
