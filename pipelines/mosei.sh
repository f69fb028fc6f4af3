#!/usr/bin/env bash
# CMU-MOSEI (Processed/unaligned_50.pkl); add --aligned for aligned_50.pkl.
# Usage: pipelines/mosei.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" mosei --root "$1" "${@:2}"
