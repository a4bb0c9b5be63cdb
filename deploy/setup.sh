#!/usr/bin/env bash
# Create .venv/ at the repository root and install cleftscore with its pinned
# dependencies. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.cleftscore-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade "pip" "setuptools<81" wheel
  # torch and torchvision first, pinned together (the CUDA build is the one this
  # site's mirror serves for Python 3.11 on x86-64; it runs on CPU-only machines).
  .venv/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
