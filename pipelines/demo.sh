#!/usr/bin/env bash
# The README's first command: install, then run the whole pipeline on the built-in
# generated dataset `synth` (extract -> train -> eval). A few minutes on 2 CPU cores;
# a second run reuses every cached stage and takes seconds.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
WORKDIR="${WORKDIR:-data}"
CONFIG="${CONFIG:-pipelines/demo.toml}"
clcr extract --dataset synth --workdir "$WORKDIR" --config "$CONFIG"
clcr train --task synth --workdir "$WORKDIR" --config "$CONFIG"
clcr eval --task synth --workdir "$WORKDIR" --config "$CONFIG"
clcr status --workdir "$WORKDIR"
