#!/bin/sh
# Builds {{crate}}.wasm: installs the pinned componentize-py into .venv the first time (or uses
# one already on PATH), then componentizes app.py against the {{world}} world of wit/.
set -eu
cd "$(dirname "$0")"
if command -v componentize-py >/dev/null 2>&1; then
    tool=componentize-py
else
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    fi
    tool=.venv/bin/componentize-py
fi
"$tool" -d wit -w {{world}} componentize app -o {{crate}}.wasm
echo "built {{crate}}.wasm"
