#!/usr/bin/env bash
# Wall time of the whole default study from clean (`dvc repro`, 8 pairs, tiny), split per stage.
# Usage: bench/study.sh [runs=3]   (run from the study root; it deletes the pipeline's outputs first)
set -euo pipefail
runs=${1:-3}
cd "$(dirname "$0")/.."
for i in $(seq "$runs"); do
  rm -rf data/prepared data/priors data/samples data/samples_base models/base models/.checkpoints \
    reports/pairs reports/pairs_base reports/train reports/compare
  find models -mindepth 1 -maxdepth 1 -type d ! -name base -exec rm -rf {} +
  echo "== run $i"
  # --no-run-cache: rebuild for real instead of restoring earlier results from DVC's run cache
  dvc repro --force --no-run-cache 2>&1 | python bench/stage_times.py
done
