#!/usr/bin/env bash
# Set up what the benchmark's peers need, ahead of a run: the venv with the
# bench extra (redis-py, py-lmdb, matplotlib, rich) and Debian's redis-server.
# `inmem bench` installs whatever is still missing by itself at run time; this
# script only does it up front, so that the first run's timings start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e '.[bench]'
.venv/bin/python -m pip install --quiet rich || echo "rich not installed: the table prints as plain text"
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q redis-server >/dev/null
  else
    echo "redis-server is not installed and apt-get cannot be used here: the Redis peer will be reported skipped" >&2
  fi
fi
echo "ready: .venv/bin/python -m bench --quick"
