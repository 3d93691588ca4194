#!/usr/bin/env bash
# Install stenod with pinned dependencies into .venv and run the test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow` for the long benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
.venv/bin/python -m pip install -q -r requirements-gpu.lock  # torch engine, tested on the CPU
.venv/bin/python -m pip install -q --no-deps -e .
export HF_HUB_OFFLINE=1 GGML_NO_BACKTRACE=1
exec .venv/bin/python -m pytest "$@" </dev/null
