#!/usr/bin/env bash
# Install the project into .venv (tools/install.sh) and run every package's tests.
# pytest's own exit status is kept: 5 ("no tests ran") fails like any other error. The tests run on every core
# (pytest-xdist, -n auto); -n 0 runs them in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export MPLBACKEND=Agg
exec .venv/bin/python -m pytest -n auto "$@"
