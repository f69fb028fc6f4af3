#!/usr/bin/env bash
# The README's test command: install (if needed) and run the test suite and the linter.
# Extra arguments go to pytest, e.g. ./pipelines/test.sh -m "not slow".
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
ruff check clcr_cli tests bench
python -m pytest -q "$@"
