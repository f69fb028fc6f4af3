#!/usr/bin/env bash
# AVE (AVE/*.mp4, Annotations.txt, trainSet/valSet/testSet.txt).
# Usage: pipelines/ave.sh /path/to/dataset [more extract options]
set -euo pipefail
exec "$(dirname "$0")/experiment.sh" ave --root "$1" "${@:2}"
