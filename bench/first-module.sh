#!/usr/bin/env bash
# Wall time from `host new` to a first `host run --once` delivering transformed rows, as a new
# user does it (issue 17's closing note): `host new NAME --lang LANG`, the build command the
# project's README gives, then `host run --once` on the sample table the project holds
# (`app.db`), whose output must hold the template's transformed rows (`email_domain` added,
# the `free` row left out).
#
#   bench/first-module.sh rust|python|js warm|cold
#
# warm: the toolchains' caches are filled first by an untimed project of the same language
#       (Rust: a shared CARGO_TARGET_DIR under the bench directory; Python: a pip cache;
#       JavaScript: an npm cache), then a second, new project is timed. Its component is new
#       code, so the host compiles it once either way (the compile cache starts empty).
# cold: nothing cached: an empty CARGO_TARGET_DIR and CARGO_HOME (crates are downloaded),
#       an empty PIP_CACHE_DIR and no PIP_FIND_LINKS (build.sh then downloads componentize-py
#       from PyPI into the project's .venv), an empty npm cache (npm_config_cache), an empty
#       host compile cache. Needs the package registries.
#
# Prints one line: `LANG MODE total=S new=S build=S run=S rows=N`. Uses the release host of
# ${CARGO_TARGET_DIR:-target} (built if missing). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

lang=${1:?usage: bench/first-module.sh rust|python|js warm|cold}
mode=${2:?usage: bench/first-module.sh rust|python|js warm|cold}
target="${CARGO_TARGET_DIR:-target}"
host="$(cd "$target" && pwd)/release/host"
[[ -x "$host" ]] || cargo build --release -p tidemark-host
work="$(mktemp -d "${TMPDIR:-/tmp}/first-module.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Python build.sh uses a componentize-py already on PATH: keep the user's PATH free of one.
if command -v componentize-py >/dev/null; then
    echo "first-module: componentize-py is on PATH; remove it so build.sh installs its own" >&2
    exit 1
fi

export CARGO_TARGET_DIR="$work/cargo-target"
# cold: crates and wheels are downloaded too (empty caches, no local wheel folder); the
# toolchain stays rustup's.
if [[ "$mode" == cold ]]; then
    export CARGO_HOME="$work/cargo-home"
    unset PIP_FIND_LINKS
fi
export PIP_CACHE_DIR="$work/pip-cache"
export npm_config_cache="$work/npm-cache"
cache="$work/host-cache"

build_command() {
    case "$lang" in
        rust) echo "cargo build --release --quiet" ;;
        python) echo "sh build.sh" ;;
        js) echo "npm install --no-audit --no-fund --loglevel=error && npm run build --silent" ;;
        *) echo "first-module: unknown language $lang" >&2; exit 1 ;;
    esac
}

wasm_of() {
    local name=$1
    case "$lang" in
        rust) echo "$CARGO_TARGET_DIR/wasm32-wasip2/release/$name.wasm" ;;
        *) echo "$work/$name/$name.wasm" ;;
    esac
}

# One project from `host new` to delivered rows; sets t_new, t_build, t_run, rows.
project() {
    local name=$1
    local start=$EPOCHREALTIME
    (cd "$work" && "$host" new "$name" --lang "$lang" >/dev/null)
    local built=$EPOCHREALTIME
    (cd "$work/$name" && sh -c "$(build_command)" >"$work/$name.build.log" 2>&1) || {
        cat "$work/$name.build.log" >&2
        exit 1
    }
    local ran=$EPOCHREALTIME
    "$host" run --source "sqlite://$work/$name/app.db" --table users --once \
        --module "$(wasm_of "$name")" --cache-dir "$cache" \
        --state "sqlite://$work/$name.state.db" --output "$work/$name.jsonl" 2>"$work/$name.run.log" || {
        cat "$work/$name.run.log" >&2
        exit 1
    }
    local done=$EPOCHREALTIME
    rows=$(grep -c '"email_domain"' "$work/$name.jsonl" || true)
    if [[ "$rows" != 2 ]] || grep -q '"plan":"free"' "$work/$name.jsonl"; then
        echo "first-module: $name delivered other rows than the template's:" >&2
        cat "$work/$name.jsonl" >&2
        exit 1
    fi
    t_new=$(echo "$built - $start" | bc)
    t_build=$(echo "$ran - $built" | bc)
    t_run=$(echo "$done - $ran" | bc)
}

if [[ "$mode" == warm ]]; then
    project warmup
    rm -rf "$cache"
fi
project first
printf '%s %s total=%.1f new=%.2f build=%.1f run=%.1f rows=%s\n' "$lang" "$mode" \
    "$(echo "$t_new + $t_build + $t_run" | bc)" "$t_new" "$t_build" "$t_run" "$rows"
