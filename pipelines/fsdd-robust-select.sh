#!/usr/bin/env bash
# FSDD-robust: choose CLCR's reading by leave-one-speaker-out validation, never reading test.
# For every speaker that is not the test speaker, a fold (clcr_cli.datasets.manifest.group_fold)
# holds that speaker out as valid and trains on the other four; each reading is trained on
# every fold and seed (20 epochs, checkpoint chosen on the fold's valid speaker) and scored
# on the fold's valid split. The table printed at the end is the mean over folds and seeds,
# and each reading's paired difference to the default (same fold, same seed; 95 % t-interval):
# a reading replaces the default where that interval lies above 0 (docs/fsdd-robust.md,
# "Choosing the default"). The test speaker's rows stay in every fold as test and are never
# evaluated.
# Usage: pipelines/fsdd-robust-select.sh [/path/to/fsdd]   (default: ../shared/data/fsdd)
# Environment: WORKDIR (data), SEEDS (0), EPOCHS (20), TEST_SPEAKER (george), JOBS (runs at
# once, 1; give each OMP_NUM_THREADS=1 and one core).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
FSDD="${1:-$ROOT/../shared/data/fsdd}"
export WORKDIR="${WORKDIR:-data}" EPOCHS="${EPOCHS:-20}"
SELECT="$WORKDIR/select/fsdd-robust"
# reading name, then its --set options (the first is the default of clcr train)
READINGS=(
  "default|"
  "paper|--set lambda_aux=0"
  "evidence|--set evidence=both"
  "masks|--set spec_time_mask=0.1 --set spec_freq_mask=0.1"
  "evidence-masks|--set evidence=both --set spec_time_mask=0.1 --set spec_freq_mask=0.1"
)
folds=$(FSDD="$FSDD" python -c "
import os
from pathlib import Path
from clcr_cli.datasets.fsdd_robust import write_fsdd_robust_manifest
from clcr_cli.datasets.manifest import group_fold, read_rows
manifest = write_fsdd_robust_manifest(Path(os.environ['FSDD']), Path(os.environ['WORKDIR'], 'raw', 'fsdd-robust'),
                                      seed=0, test_speaker=os.environ.get('TEST_SPEAKER') or None)
groups = sorted({row['group'] for _, row in read_rows(manifest)[1] if row['split'] != 'test'})
for group in groups:
    print(group, group_fold(manifest, group))
")
jobs=()
while read -r speaker fold; do
  clcr extract --dataset fsdd-robust --manifest "$fold" --workdir "$SELECT/$speaker" --max-seconds 1.0
  for reading in "${READINGS[@]}"; do
    options=${reading#*|}  # no trailing blank: xargs -L would join the next line to it
    for seed in ${SEEDS:-0}; do jobs+=("$speaker ${reading%%|*} $seed${options:+ $options}"); done
  done
done <<< "$folds"

one_run() {  # speaker, reading, seed, --set options: train on the fold, score its valid split
  set -eo pipefail
  local speaker=$1 reading=$2 seed=$3; shift 3
  local out="$SELECT/valid-$speaker-$reading-$seed.json" run
  [[ -s "$out" ]] && return
  run=$(clcr train --task fsdd-robust --workdir "$SELECT/$speaker" --epochs "$EPOCHS" --seed "$seed" "$@" | tail -1)
  clcr eval --run "$run" --split valid --json > "$out.tmp" && mv "$out.tmp" "$out"
}
export -f one_run
export SELECT
printf '%s\n' "${jobs[@]}" | xargs -P "${JOBS:-1}" -L 1 bash -c 'one_run "$@"' _

SELECT="$SELECT" python - <<'EOF'
import json
import os
from collections import defaultdict
from pathlib import Path

from clcr_cli.metrics import paired_difference

scores = defaultdict(dict)  # reading -> (speaker, seed) -> valid acc
for path in sorted(Path(os.environ["SELECT"]).glob("valid-*.json")):
    run = json.loads(path.read_text())["runs"][0]
    speaker = Path(run["train"]).parts[-3]
    reading = path.stem.split("-", 2)[2].rsplit("-", 1)[0]
    scores[reading][speaker, run["seed"]] = run["metrics"]["acc"]
default = scores["default"]
print("| reading | mean valid acc over folds and seeds | minus default (paired, 95 % CI) | per fold (seed mean) |")
print("|---|---:|---|---|")
for reading, by in sorted(scores.items(), key=lambda kv: -sum(kv[1].values()) / len(kv[1])):
    pairs = sorted(set(by) & set(default))
    mean, low, high = paired_difference([by[p] for p in pairs], [default[p] for p in pairs])
    folds = sorted({speaker for speaker, _ in by})
    per_fold = {f: sum(v for (s, _), v in by.items() if s == f) / sum(s == f for s, _ in by) for f in folds}
    print(f"| {reading} | {sum(by.values()) / len(by):.3f} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | "
          + ", ".join(f"{f} {a:.3f}" for f, a in per_fold.items()) + " |")
EOF
