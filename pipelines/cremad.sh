#!/usr/bin/env bash
# CREMA-D (AudioWAV/, VideoFlash/); add --split-file DIR/train.csv for the OGM-GE split.
# Usage: pipelines/cremad.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" cremad --root "$1" "${@:2}"
