#!/usr/bin/env bash
# CMU-MOSI (Processed/unaligned_50.pkl); add --aligned for aligned_50.pkl.
# Usage: pipelines/mosi.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" mosi --root "$1" "${@:2}"
