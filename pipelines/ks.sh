#!/usr/bin/env bash
# Kinetics-Sounds (clips + my_train.txt/my_test.txt).
# Usage: pipelines/ks.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" ks --root "$1" "${@:2}"
