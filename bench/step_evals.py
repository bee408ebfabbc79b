"""The cost of evaluating Stage II while it trains (train.eval_every; issue 14, point 4).

    python bench/step_evals.py [--pair cat_grass] [--every 0,20,10] [--repeats 3]

Copies the study (params, data, models, reports) into a temporary folder and reruns Stage II of one
pair there with each `eval_every` (0 = off), `--repeats` times, in one process; prints the median
wall time of the stage and the extra seconds per evaluation. Run after `dvc repro`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", default="cat_grass")
    ap.add_argument("--every", default="0,20,10")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    from dreamsolo.config import load_study
    from dreamsolo.stages import train
    from studykit import edit_params

    results: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "study"
        work.mkdir()
        for name in ("params.yaml", "data", "models", "reports"):
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, work / name)
        preset = load_study(work).preset_name
        steps = load_study(work).train(a.pair, "train_instance").steps
        for _ in range(a.repeats):  # interleaved, so drift of the box hits every setting alike
            for every in (int(e) for e in a.every.split(",")):
                edit_params(work, {f"presets.{preset}.train_instance.eval_every": every or None})
                t = time.perf_counter()
                train.run(load_study(work), a.pair, "train_instance")
                results.setdefault(every, []).append(time.perf_counter() - t)
    off = statistics.median(results.get(0, [float("nan")]))
    for every, secs in results.items():
        med = statistics.median(secs)
        n_evals = 0 if every == 0 else steps // every + 1 + (steps % every != 0)  # + the start, + the last step
        extra = f", {(med - off) / n_evals:.2f} s per evaluation ({n_evals} evaluations)" if n_evals else ""
        print(f"eval_every={every or 'off'}: median {med:.1f} s over {len(secs)} runs "
              f"({', '.join(f'{s:.1f}' for s in secs)}){extra}")


if __name__ == "__main__":
    main()
