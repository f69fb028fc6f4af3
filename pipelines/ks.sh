#!/usr/bin/env bash
# Kinetics-Sounds (the clips + OGM-GE's my_train.txt / my_test.txt), docs/datasets.md.
# Usage: pipelines/ks.sh /path/to/dataset [more extract options]
#   e.g. pipelines/ks.sh /data/kinetics-sounds
# Runs pipelines/experiment.sh ks: extract -> train (seeds 1,2,3) -> eval -> ablate -> noise,
# with the recipe of clcr_cli/configs/ks.toml (`clcr config --task ks`); no other option
# is needed.
# The lists may live elsewhere: add --split-file DIR/my_train.txt (my_test.txt beside it).
# Environment (optional, see experiment.sh): WORKDIR (default data), CONFIG, SEEDS
# (default 1,2,3), EPOCHS (default: the recipe's, 100), STAGES (default
# extract,train,eval,ablate,noise). A quick check that it all runs:
#   WORKDIR=/tmp/w EPOCHS=1 SEEDS=1 STAGES=extract,train,eval pipelines/ks.sh /data/kinetics-sounds
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '3,4p' "$0" >&2
  exit 2
fi
exec "$(dirname "$0")/experiment.sh" ks --root "$1" "${@:2}"
