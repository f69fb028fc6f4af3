#!/usr/bin/env bash
# Real data through the manifest path: Free Spoken Digit Dataset recordings (CC BY-SA 4.0)
# paired by label with scikit-learn's handwritten digit images, as an audio-visual digits task.
# Usage: pipelines/fsdd.sh [/path/to/fsdd]   (default: ../shared/data/fsdd)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
FSDD="${1:-$ROOT/../shared/data/fsdd}"
WORKDIR="${WORKDIR:-data}"
PER_DIGIT="${PER_DIGIT:-60}"
manifest=$(python -c "
from pathlib import Path
from clcr_cli.datasets.fsdd_digits import write_fsdd_digits_manifest
print(write_fsdd_digits_manifest(Path('$FSDD'), Path('$WORKDIR/raw/fsdd-digits'), per_digit=$PER_DIGIT, seed=0))
")
clcr extract --dataset fsdd-digits --manifest "$manifest" --workdir "$WORKDIR" --max-seconds 1.0
# a manifest task: the short-budget recipe of `clcr train --help` (AdamW, 10 epochs, d 64)
clcr train --task fsdd-digits --workdir "$WORKDIR" --epochs "${EPOCHS:-10}"
clcr eval --task fsdd-digits --workdir "$WORKDIR" --epochs "${EPOCHS:-10}"
