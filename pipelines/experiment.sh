#!/usr/bin/env bash
# The paper's protocol for one dataset: extract -> train (3 seeds) -> eval -> ablate -> noise.
# Usage: pipelines/experiment.sh TASK [extract options...]
#   e.g. pipelines/experiment.sh cremad --root /data/CREMA-D
# Environment: WORKDIR (default data), CONFIG (a TOML file, optional), SEEDS (default 1,2,3).
# Every stage is cached: rerunning after an interruption continues where it stopped.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
TASK="$1"; shift
WORKDIR="${WORKDIR:-data}"
SEEDS="${SEEDS:-1,2,3}"
common=(--workdir "$WORKDIR")
[ -n "${CONFIG:-}" ] && common+=(--config "$CONFIG")
clcr extract --dataset "$TASK" "${common[@]}" "$@"
clcr train --task "$TASK" --seeds "$SEEDS" "${common[@]}"
clcr eval --task "$TASK" --seeds "$SEEDS" "${common[@]}"
clcr ablate --task "$TASK" --seeds "$SEEDS" --budget-sweep 0.2,0.4,0.68,0.8,1.0 \
  --baseline late-fusion --baseline early-fusion --baseline misa "${common[@]}"
clcr noise --task "$TASK" --models clcr,late-fusion,early-fusion,misa "${common[@]}"
