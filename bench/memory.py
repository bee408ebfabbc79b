"""Peak RSS of a whole training stage process on the tiny config (target: <= 1.40 GB, the reference).

Runs `python stages/train_scene.py --pair P` (what DVC runs, all steps, save and MLflow included)
in a throwaway study root and reads the child's ru_maxrss with wait4. Median [min-max] of --runs.
--phases: one more run under bench/_probe.py: resident set after each import / phase, so the
  peak can be attributed (torch, MLflow + SQLAlchemy/pandas, diffusers + torch._dynamo, model, training).
--floors: peak RSS of processes that only import (torch; + diffusers' UNet; + the pipeline and mlflow).

    python bench/memory.py --runs 3 --phases --floors
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _study import PY, REPO, make_study, run_timed  # noqa: E402

TARGET_GB = 1.40
FLOORS = {"python + import torch": "import torch",
          "+ diffusers UNet2DConditionModel": "import torch; from diffusers import UNet2DConditionModel",
          "+ StableDiffusionPipeline + mlflow": "import torch, mlflow; from diffusers import StableDiffusionPipeline"}


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} [{min(xs):.3f}-{max(xs):.3f}]"


def stage(pair: str) -> list[str]:
    return [PY, "stages/train_scene.py", "--pair", pair]


def floor(code: str) -> float:
    out = subprocess.run([PY, "-c", code + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF)"
                          ".ru_maxrss)"], capture_output=True, text=True, check=True).stdout.split()[-1]
    return int(out) / 2**20


def phases(root: Path, pair: str) -> list[dict]:
    out = root / "probe-memory.json"
    extra = {"DREAMSOLO_PROBE_OUT": str(out), "DREAMSOLO_PROBE_T0": repr(time.time())}
    res = run_timed([PY, str(REPO / "bench/_probe.py"), "stages/train_scene.py", "--pair", pair], root, None, extra)
    data = json.loads(out.read_text())
    print(f"\nresident set after each phase (MiB); process peak {res['peak_rss_gb'] * 1024:.0f} MiB")
    for e in data["events"]:
        if e["end"] - e["start"] >= 0.02 or e["name"] == "FIRST_WORK":
            print(f"  {e['name']:<46}{e['end'] - data['t0']:7.2f} s  {e['rss_mib']:7.0f} MiB")
    return data["events"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pair", default="cat_grass")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--phases", action="store_true")
    p.add_argument("--floors", action="store_true", help="peak RSS of processes that only import")
    p.add_argument("--keep", type=Path, help="use/keep this study root instead of a temp one")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    la = os.getloadavg()
    print(f"load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}; target peak RSS <= {TARGET_GB} GB (GiB-based)")
    root = a.keep or Path(tempfile.mkdtemp(prefix="dreamsolo-memory-"))
    result: dict = {"loadavg_start": la, "target_gb": TARGET_GB}
    try:
        if not (root / "params.yaml").is_file():
            make_study(root, a.pair)
        if not (root / "mlflow.db").exists():
            run_timed(stage(a.pair), root, None)  # the SQLite store, as after a first stage
        print(f"\n{'train_scene process':<28}{'peak RSS GB':>28}{'wall s':>26}")
        got = [run_timed(stage(a.pair), root, None) for _ in range(a.runs)]
        rss, wall = [g["peak_rss_gb"] for g in got], [g["total_s"] for g in got]
        result["baseline"] = {"peak_rss_gb": rss, "total_s": wall}
        print(f"{'baseline':<28}{fmt(rss):>28}{fmt(wall):>26}")
        if a.floors:
            print("\nfloors (peak RSS GB of a process that only imports)")
            for name, code in FLOORS.items():
                result[name] = floor(code)
                print(f"  {name:<44}{result[name]:.3f}")
        if a.phases:
            result["phases"] = phases(root, a.pair)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    print(f"load average at end {result['loadavg_end'][0]:.2f}")
    if a.json:
        a.json.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
