#!/usr/bin/env bash
# FSDD-robust: speaker-independent spoken digits (FSDD, CC BY-SA 4.0) paired with
# scikit-learn's handwritten digits (UCI optdigits, CC BY 4.0), with the audio or the image
# of 60 % of the samples ruined in every split (docs/fsdd-robust.md; the scheme is fixed in
# clcr_cli/datasets/fsdd_robust.py). CLCR against late fusion, early fusion and MISA.
# Usage: pipelines/fsdd-robust.sh [/path/to/fsdd]   (default: ../shared/data/fsdd)
# Environment: WORKDIR (data), SEEDS (0,1,2,3,4), EPOCHS (20), TEST_SPEAKER (default: the
# first speaker by name, george; valid is the next one by name).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
FSDD="${1:-$ROOT/../shared/data/fsdd}"
WORKDIR="${WORKDIR:-data}"
manifest=$(FSDD="$FSDD" WORKDIR="$WORKDIR" python -c "
import os
from pathlib import Path
from clcr_cli.datasets.fsdd_robust import write_fsdd_robust_manifest
print(write_fsdd_robust_manifest(Path(os.environ['FSDD']), Path(os.environ['WORKDIR'], 'raw', 'fsdd-robust'),
                                 seed=0, test_speaker=os.environ.get('TEST_SPEAKER') or None))
")
clcr extract --dataset fsdd-robust --manifest "$manifest" --workdir "$WORKDIR" --max-seconds 1.0
# a manifest task: the short-budget recipe of `clcr train --help` (AdamW, d 64), 20 epochs
clcr ablate --task fsdd-robust --workdir "$WORKDIR" --variant full \
  --baseline late-fusion --baseline early-fusion --baseline misa \
  --seeds "${SEEDS:-0,1,2,3,4}" --epochs "${EPOCHS:-20}"
