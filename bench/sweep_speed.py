"""Points per hour of `dreamsolo sweep` at -j 1 and -j 2, and DVC's own overhead per experiment
(issue 14, point 7). Not a test: it takes minutes.

    python bench/sweep_speed.py [--pairs cat_grass] [--preset toy] [--points 4]

Builds a copy of the study (the given pairs) in a temporary git repo, `dvc repro`s it, then per job
count runs a fresh sweep of `--points` Stage II learning rates. Per point: the experiment's wall time
(queue to ref, from the sweep command's clock / points), the time its stages ran (the MLflow runs
tagged with the point: start to end), and the difference: DVC's queue, workspace copy, checkout,
lock/commit work and the stage processes' start-up. Writes bench/out/sweep_speed.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def stage_seconds(root: Path, sweep: str) -> dict[str, float]:
    from studykit import mlflow_client

    client, exp_id = mlflow_client(root)
    per_point: dict[str, float] = {}
    for r in client.search_runs([exp_id], f"tags.sweep = '{sweep}'"):
        point = r.data.tags.get("sweep_point", "").split(":")[0]
        if point and r.info.end_time:
            per_point[point] = per_point.get(point, 0.0) + (r.info.end_time - r.info.start_time) / 1000
    return per_point


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default="cat_grass")
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--jobs", default="1,2")
    a = ap.parse_args()
    import tempfile

    from studykit import make_study, run

    pairs = a.pairs.split(",")
    # each job count gets its own learning rates: equal settings would come from the run cache
    lrs = {j: [round(3e-5 * 1.6 ** i * 1.05 ** k, 8) for i in range(a.points)] for k, j in enumerate(a.jobs.split(","))}
    key = f"presets.{a.preset}.train_instance.lr" if a.preset == "toy" else "train_instance.defaults.lr"
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        edits = {"model.preset": a.preset}
        root = make_study(Path(tmp) / "study", pairs, edits)
        if a.preset == "toy":  # the real default's sampling sizes, not the tests' FAST ones
            from studykit import edit_params
            from dreamsolo.params import read_yaml

            real = read_yaml(ROOT / "params.yaml")
            edit_params(root, {"priors": real["priors"], "sample": real["sample"], "prompts": real["prompts"],
                               "train.log_every": real["train"]["log_every"]})
        sweeps = "".join(f"j{j}:\n  pairs: {pairs}\n  grid:\n    {key}: {lrs[j]}\n"
                         for j in a.jobs.split(","))
        (root / "sweeps.yaml").write_text(sweeps)
        (root / ".gitignore").write_text("/mlflow.db\n/mlruns/\n/reports/sweeps/\n")
        run(["git", "init", "-q"], root)
        t = time.perf_counter()
        run(["dvc", "repro"], root, timeout=3600)
        print(f"dvc repro: {time.perf_counter() - t:.0f} s", flush=True)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "study"], root)
        for j in a.jobs.split(","):
            t = time.perf_counter()
            run(["dreamsolo", "sweep", f"j{j}", "-j", j], root, timeout=3600)
            wall = time.perf_counter() - t
            stages = stage_seconds(root, f"j{j}")
            per_point = wall / a.points
            out[f"-j {j}"] = {"points": a.points, "wall_s": round(wall, 1),
                              "points_per_hour": round(3600 * a.points / wall, 1),
                              "stage_s_per_point": round(statistics.median(stages.values()), 1) if stages else None,
                              "overhead_s_per_point": round(per_point * int(j) - statistics.median(stages.values()), 1)
                              if stages else None}
            print(f"-j {j}: {json.dumps(out[f'-j {j}'])}", flush=True)
    (ROOT / "bench/out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/out/sweep_speed.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
