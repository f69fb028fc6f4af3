#!/usr/bin/env bash
# The paper's protocol for one dataset: extract -> train (3 seeds) -> eval -> ablate -> noise
# (the noise sweeps on the models of the first seed).
# Usage: pipelines/experiment.sh TASK [extract options...]
#   e.g. pipelines/experiment.sh cremad --root /data/CREMA-D
# Every stage is cached: rerunning after an interruption continues where it stopped.
# The recipe of TASK (clcr_cli/configs/TASK.toml, `clcr config --task TASK`) sets
# everything else; nothing needs to be given beyond the dataset's options.
#
# Environment (all optional):
#   WORKDIR  workspace folder (default: data)
#   CONFIG   a TOML file with a table per stage, on top of the recipe
#   SEEDS    training seeds (default: 1,2,3)
#   EPOCHS   training epochs of every stage (default: the recipe's, 100); e.g. EPOCHS=1
#            for a quick check that the whole protocol runs
#   STAGES   the stages run, in this order (default: extract,train,eval,ablate,noise);
#            e.g. STAGES=extract,train,eval skips the long ablation and noise sweeps
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
TASK="$1"; shift
WORKDIR="${WORKDIR:-data}"
SEEDS="${SEEDS:-1,2,3}"
STAGES="${STAGES:-extract,train,eval,ablate,noise}"
common=(--workdir "$WORKDIR")
[ -n "${CONFIG:-}" ] && common+=(--config "$CONFIG")
train=()
[ -n "${EPOCHS:-}" ] && train+=(--epochs "$EPOCHS")
for stage in ${STAGES//,/ }; do
  case "$stage" in
    extract|train|eval|ablate|noise) ;;
    *) echo "STAGES: unknown stage '$stage' (known: extract,train,eval,ablate,noise)" >&2; exit 2 ;;
  esac
done
runs() { [[ ",$STAGES," == *",$1,"* ]]; }
if runs extract; then clcr extract --dataset "$TASK" "${common[@]}" "$@"; fi
if runs train; then clcr train --task "$TASK" --seeds "$SEEDS" "${train[@]}" "${common[@]}"; fi
if runs eval; then clcr eval --task "$TASK" --seeds "$SEEDS" "${train[@]}" "${common[@]}"; fi
if runs ablate; then
  clcr ablate --task "$TASK" --seeds "$SEEDS" --budget-sweep 0.2,0.4,0.68,0.8,1.0 \
    --baseline late-fusion --baseline early-fusion --baseline misa "${train[@]}" "${common[@]}"
fi
if runs noise; then
  # the sweeps use the runs of the first seed, trained above by train and ablate (clcr
  # noise takes one run per model: without --seed it would train new ones at seed 0)
  clcr noise --task "$TASK" --models clcr,late-fusion,early-fusion,misa --seed "${SEEDS%%,*}" \
    "${train[@]}" "${common[@]}"
fi
