#!/usr/bin/env bash
# UCF101 (UCF-101/<Class>/*.avi, ucfTrainTestlist/); add --fold 2|3 for the other splits.
# Usage: pipelines/ucf101.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" ucf101 --root "$1" "${@:2}"
