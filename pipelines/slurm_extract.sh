#!/usr/bin/env bash
# Sharded extraction on a SLURM array, on a filesystem every node sees:
#   sbatch --array=0-15 pipelines/slurm_extract.sh cremad /data/CREMA-D
# Each array task extracts every 16th part (its shard) into the same stage folder, under
# a lock of its own; when all are done, join them once (any node):
#   clcr extract --dataset cremad --root /data/CREMA-D --merge
# Without a shared filesystem, run the shards anywhere with the same options and copy each
# machine's <workdir>/extract/<dataset>-<key>/parts/*.h5 into one folder before --merge.
#SBATCH --job-name=clcr-extract
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
set -euo pipefail
source "$(dirname "$0")/env.sh"
TASK="$1"; DATA_ROOT="$2"; shift 2
clcr extract --dataset "$TASK" --root "$DATA_ROOT" --workdir "${WORKDIR:-data}" \
  --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" "$@"
