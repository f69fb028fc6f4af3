#!/usr/bin/env bash
# AVE (AVE/*.mp4, Annotations.txt, trainSet.txt / valSet.txt / testSet.txt), docs/datasets.md.
# Usage: pipelines/ave.sh /path/to/dataset [more extract options]
#   e.g. pipelines/ave.sh /data/AVE_Dataset
# Runs pipelines/experiment.sh ave: extract -> train (seeds 1,2,3) -> eval -> ablate -> noise,
# with the recipe of clcr_cli/configs/ave.toml (`clcr config --task ave`); no other option
# is needed.
# Environment (optional, see experiment.sh): WORKDIR (default data), CONFIG, SEEDS
# (default 1,2,3), EPOCHS (default: the recipe's, 100), STAGES (default
# extract,train,eval,ablate,noise). A quick check that it all runs:
#   WORKDIR=/tmp/w EPOCHS=1 SEEDS=1 STAGES=extract,train,eval pipelines/ave.sh /data/AVE_Dataset
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '3,4p' "$0" >&2
  exit 2
fi
exec "$(dirname "$0")/experiment.sh" ave --root "$1" "${@:2}"
