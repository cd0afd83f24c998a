# Sourced by the recipes: common settings, and re-running the calling recipe in the background.
#
#   source "$(dirname "$0")/background.sh" LOG_NAME "$@"
#
# Without --foreground, the recipe restarts itself under nohup with its output appended to
# $RUNS/LOG_NAME.log and the caller exits; with it, the caller goes on. Environment: PETSEG_PETS
# (data root, default ../shared/pets), PETSEG_RUNS (default runs; the app's model discovery scans
# it), PETSEG_TRAIN (the petseg-train command), OMP_NUM_THREADS (default 2).
set -euo pipefail

cd "$(dirname "$0")/../.."
DATA=${PETSEG_PETS:-../shared/pets}
RUNS=${PETSEG_RUNS:-runs}
TRAIN=${PETSEG_TRAIN:-.venv/bin/petseg-train}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [[ "${2:-}" != "--foreground" ]]; then
    mkdir -p "$RUNS"
    nohup "$0" --foreground >>"$RUNS/$1.log" 2>&1 &
    echo "running in the background (pid $!); log: $RUNS/$1.log"
    exit 0
fi
