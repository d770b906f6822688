#!/usr/bin/env bash
# Install everything into .venv (see setup.sh), then run the linter and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
