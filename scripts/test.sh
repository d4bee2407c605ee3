#!/usr/bin/env bash
# Set up a venv with the test extra and run the whole suite in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet -e '.[test]'
exec .venv/bin/python -m pytest -n auto "$@"
