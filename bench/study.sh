#!/usr/bin/env bash
# Wall time of the whole default study from clean (`dvc repro`, 8 pairs, the default preset), split per stage.
# Each run is a fresh `git clone` of this checkout's HEAD in a temporary folder (empty DVC cache and
# run cache, new MLflow store), so nothing here is touched. `-f`: every stage runs, also those a clone
# would skip because the committed reports already match (evaluate, when the samples come out
# bit-identical to the committed dvc.lock).
# Usage: bench/study.sh [runs=3] [KEY=VALUE ...]   KEY=VALUE edits the clone's params.yaml first (YAML
# values), to time a variant: bench/study.sh 1 presets.tiny.sample_steps=null
set -euo pipefail
runs=${1:-3}
shift || true
src=$(cd "$(dirname "$0")/.." && pwd)
for i in $(seq "$runs"); do
  work=$(mktemp -d)
  git clone -q "$src" "$work/study"
  if [ $# -gt 0 ]; then
    # read and written as DVC reads params (YAML 1.2: dreamsolo.params), values parsed the same way
    PYTHONPATH="$work/study/src" python - "$work/study/params.yaml" "$@" <<'PY'
import sys
from ruamel.yaml import YAML
from dreamsolo.params import dump_yaml, read_yaml
path, edits = sys.argv[1], sys.argv[2:]
params = read_yaml(path)
for edit in edits:
    key, _, value = edit.partition("=")
    *parents, last = key.split(".")
    node = params
    for k in parents:
        node = node[k]
    if last not in node:
        sys.exit(f"study.sh: {key}: no such key in params.yaml")
    node[last] = YAML(typ="safe").load(value)
open(path, "w").write(dump_yaml(params))
PY
  fi
  echo "== run $i ($(git -C "$src" rev-parse --short HEAD)${*:+, $*}, load $(cut -d' ' -f1-3 /proc/loadavg))"
  # PYTHONPATH: the clone's own library, not the one installed from this checkout
  (cd "$work/study" && PYTHONPATH="$work/study/src" dvc repro -f 2>&1 | tee "$work/repro.log" \
     | python "$src/bench/stage_times.py") || { echo "dvc repro failed:"; tail -c 3000 "$work/repro.log"; exit 1; }
  rm -rf "$work"
done
