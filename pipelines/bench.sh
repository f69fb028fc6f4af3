#!/usr/bin/env bash
# The benchmarks (bench/README.md): install (if needed), then `python -m bench`.
# Arguments go to it, e.g. ./pipelines/bench.sh --size medium --only text,training
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
python -m bench "$@"
