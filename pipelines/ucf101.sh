#!/usr/bin/env bash
# UCF101 (UCF-101/<Class>/*.avi, ucfTrainTestlist/), RGB + optical flow, docs/datasets.md.
# Usage: pipelines/ucf101.sh /path/to/dataset [more extract options]
#   e.g. pipelines/ucf101.sh /data/UCF101
# Runs pipelines/experiment.sh ucf101: extract -> train (seeds 1,2,3) -> eval -> ablate -> noise,
# with the recipe of clcr_cli/configs/ucf101.toml (`clcr config --task ucf101`); no other option
# is needed.
# Official split 1 by default; add --fold 2 or --fold 3 for the others.
# Environment (optional, see experiment.sh): WORKDIR (default data), CONFIG, SEEDS
# (default 1,2,3), EPOCHS (default: the recipe's, 100), STAGES (default
# extract,train,eval,ablate,noise). A quick check that it all runs:
#   WORKDIR=/tmp/w EPOCHS=1 SEEDS=1 STAGES=extract,train,eval pipelines/ucf101.sh /data/UCF101
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '3,4p' "$0" >&2
  exit 2
fi
exec "$(dirname "$0")/experiment.sh" ucf101 --root "$1" "${@:2}"
