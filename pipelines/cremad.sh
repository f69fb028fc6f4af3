#!/usr/bin/env bash
# CREMA-D (AudioWAV/*.wav, VideoFlash/*.flv), docs/datasets.md.
# Usage: pipelines/cremad.sh /path/to/dataset [more extract options]
#   e.g. pipelines/cremad.sh /data/CREMA-D
# Runs pipelines/experiment.sh cremad: extract -> train (seeds 1,2,3) -> eval -> ablate -> noise,
# with the recipe of clcr_cli/configs/cremad.toml (`clcr config --task cremad`); no other option
# is needed.
# Default split: by actor (test: actors 1010, 1020, ..., 1090). OGM-GE's clip-level lists:
# add --split-file DIR/train.csv (test.csv beside it; a val.csv there, as Diagnosing &
# Re-learning ships with my_train.csv, is the valid split).
# Environment (optional, see experiment.sh): WORKDIR (default data), CONFIG, SEEDS
# (default 1,2,3), EPOCHS (default: the recipe's, 100), STAGES (default
# extract,train,eval,ablate,noise). A quick check that it all runs:
#   WORKDIR=/tmp/w EPOCHS=1 SEEDS=1 STAGES=extract,train,eval pipelines/cremad.sh /data/CREMA-D
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '3,4p' "$0" >&2
  exit 2
fi
exec "$(dirname "$0")/experiment.sh" cremad --root "$1" "${@:2}"
