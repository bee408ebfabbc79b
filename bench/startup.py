"""Seconds from process start to the first real work of each stage, and where they go.

1. Table: `python stages/<stage>.py --pair P` (exactly what DVC runs) in a throwaway study root,
   cold (DREAMSOLO_WARM=0: a fresh interpreter imports everything) and warm (dreamsolo.warm);
   first real work = the stage's tqdm bar appearing on stderr (training: right before step 1;
   priors/sample: the first image batch). Median [min-max] of --runs, plus total wall and peak RSS.
   The MLflow SQLite store is created by an untimed first run (as in a `dvc repro` after its first
   stage); that first, fresh-store run is reported on its own line.
2. --profile: one run per stage under bench/_probe.py and `python -X importtime`, stopped at the
   first real work: the phase timeline (interpreter, imports, load_study, MLflow, model load, cache)
   and import self-time summed per top-level package.
3. --what-if: isolated costs of the suspects (interpreter, torch, torch._dynamo, diffusers
   pipeline import, transformers CLIP, mlflow import and SQLite store, git, scipy, peft), each in a
   fresh process, median of --runs.

    python bench/startup.py --runs 3 --profile --what-if
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _study import PY, REPO, STAGES, env, item_for, make_study, marker, run_timed, stage_cmd  # noqa: E402

IMPORTTIME = re.compile(rb"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def table(root: Path, stages: list[str], pair: str, runs: int, warm: bool = False) -> dict:
    """Cold: each stage a fresh interpreter (DREAMSOLO_WARM=0). Warm: handed to the warm server
    (dreamsolo.warm), whose start the first row pays; peak RSS is then the client's alone."""
    rows = {}
    db = root / "mlflow.db"
    if db.exists():
        db.unlink()
    extra = {"DREAMSOLO_WARM": "1", "DREAMSOLO_WARM_IDLE": "120"} if warm else {}
    first = stages[0]
    item = item_for(root, first, pair)
    fresh = run_timed(stage_cmd(first, item), root, marker(first, item), extra)
    what = "fresh mlflow.db, starts the server" if warm else "fresh mlflow.db"
    rows[f"{first} ({what})"] = {k: [v] for k, v in fresh.items() if k != "stderr"}
    for stage in stages:
        item = item_for(root, stage, pair)
        got = [run_timed(stage_cmd(stage, item), root, marker(stage, item), extra) for _ in range(runs)]
        rows[stage] = {k: [g[k] for g in got] for k in ("first_work_s", "total_s", "peak_rss_gb")}
    print(f"\n{'warm' if warm else 'cold'}: {'stage':<28}{'to first work s':>24}{'total s':>24}{'peak RSS GB':>24}")
    for name, r in rows.items():
        firsts = [x for x in r["first_work_s"] if x is not None]
        print(f"{name:<34}{fmt(firsts) if firsts else 'n/a':>24}{fmt(r['total_s']):>24}{fmt(r['peak_rss_gb']):>24}")
    return rows


def importtime_by_package(stderr: bytes, top: int = 14) -> tuple[list, dict]:
    """Self time summed per top-level package, and the cumulative time of a few notable modules."""
    self_by: dict[str, int] = defaultdict(int)
    cumulative: dict[str, int] = {}
    for m in IMPORTTIME.finditer(stderr):
        self_us, cum_us, name = int(m.group(1)), int(m.group(2)), m.group(4).decode()
        self_by[name.split(".")[0]] += self_us
        cumulative.setdefault(name, cum_us)
    notable = ("torch", "torch._dynamo", "diffusers", "transformers", "mlflow", "scipy", "peft", "accelerate",
               "sqlalchemy", "alembic", "pandas", "open_clip", "safetensors", "PIL", "yaml", "numpy")
    ranked = sorted(self_by.items(), key=lambda kv: -kv[1])[:top]
    return ranked, {n: cumulative[n] / 1e6 for n in notable if n in cumulative}


def profile(root: Path, stage: str, pair: str) -> dict:
    item = item_for(root, stage, pair)
    out = root / f"probe-{stage}.json"
    t0 = time.time()
    extra = {"DREAMSOLO_PROBE_OUT": str(out), "DREAMSOLO_PROBE_T0": repr(t0), "DREAMSOLO_PROBE_STOP": "1"}
    cmd = [PY, "-X", "importtime", str(REPO / "bench/_probe.py"), f"stages/{stage}.py",
           f"--{STAGES[stage][0]}", item]
    res = run_timed(cmd, root, None, extra)
    data = json.loads(out.read_text())
    ranked, notable = importtime_by_package(res["stderr"])
    base = data["t0"]
    print(f"\n== {stage}: phases (s since spawn; -X importtime and the probe add a little)")
    print(f"  {'interpreter + site':<46}{data['probe_start'] - base:7.2f}")
    for e in data["events"]:
        if e["end"] - e["start"] < 0.02 and e["name"] != "FIRST_WORK":
            continue
        print(f"  {e['name']:<46}{e['start'] - base:7.2f} -> {e['end'] - base:6.2f}  "
              f"({e['end'] - e['start']:5.2f} s, RSS {e['rss_mib']:6.0f} MiB)")
    print("  import self-time by package (s): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in ranked))
    print("  cumulative import (s): " + ", ".join(f"{k} {v:.2f}" for k, v in notable.items()))
    return {"events": data["events"], "probe_start": data["probe_start"] - base, "self_by_package_s":
            {k: v / 1e6 for k, v in ranked}, "cumulative_s": notable, "modules": data["modules"]}


def what_if(root: Path, runs: int) -> dict:
    """Each suspect in a fresh process: seconds inside it (import/work) and the process's whole wall
    time (the difference is interpreter start + teardown, which a stage pays too, after its work)."""
    db = f"sqlite:///{root / 'mlflow.db'}"
    probes = {
        "python -c pass": "pass",
        "import torch": "import torch",
        "import torch, torch._dynamo": "import torch, torch._dynamo",
        "import diffusers.utils.torch_utils": "import diffusers.utils.torch_utils",
        "from diffusers import UNet2DConditionModel": "from diffusers import UNet2DConditionModel",
        "from diffusers import StableDiffusionPipeline": "from diffusers import StableDiffusionPipeline",
        "from transformers import CLIPTextModel": "from transformers import CLIPTextModel, CLIPTokenizer",
        "import peft": "import peft",
        "import scipy.stats": "import scipy.stats",
        "import mlflow": "import mlflow",
        "import dreamsolo.training.loop": "import dreamsolo.training.loop",
        "(mlflow imported) SQLite store + set_experiment": (
            f"mlflow.set_tracking_uri('{db}'); mlflow.set_experiment('dreamsolo')", "import mlflow"),
        "(mlflow imported) + start_run, log_params, end_run": (
            f"mlflow.set_tracking_uri('{db}'); e = mlflow.set_experiment('dreamsolo').experiment_id; "
            "mlflow.start_run(experiment_id=e); mlflow.log_params({'a': 1}); mlflow.end_run()", "import mlflow"),
    }
    res: dict[str, dict[str, list[float]]] = {}
    for name, code in probes.items():
        code, setup = code if isinstance(code, tuple) else (code, "pass")
        prog = f"import time\n{setup}\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
        res[name] = {"inside_s": [], "process_s": []}
        for _ in range(runs):
            t = time.perf_counter()
            out = subprocess.run([PY, "-c", prog], cwd=root, env=env(root), check=True, capture_output=True, text=True)
            res[name]["process_s"].append(time.perf_counter() - t)
            res[name]["inside_s"].append(float(out.stdout.split()[-1]))
    git = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True)
        git.append(time.perf_counter() - t)
    res["git rev-parse HEAD"] = {"inside_s": git, "process_s": git}
    print(f"\n{'what costs what, each in a fresh process':<54}{'inside s':>22}{'process wall s':>24}")
    for name, r in res.items():
        print(f"  {name:<52}{fmt(r['inside_s']):>22}{fmt(r['process_s']):>24}")
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    p.add_argument("--pair", default="cat_grass")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="phase timeline + import breakdown per stage")
    p.add_argument("--what-if", action="store_true", help="isolated costs of the usual suspects")
    p.add_argument("--no-table", action="store_true")
    p.add_argument("--json", type=Path, help="also write everything measured here")
    p.add_argument("--keep", type=Path, help="use/keep this study root instead of a temp one")
    a = p.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    root = a.keep or Path(tempfile.mkdtemp(prefix="dreamsolo-startup-"))
    result: dict = {"loadavg_start": os.getloadavg()}
    try:
        if not (root / "params.yaml").is_file():
            make_study(root, a.pair)
        if not a.no_table:
            result["table"] = table(root, a.stages, a.pair, a.runs)
            result["table_warm"] = table(root, a.stages, a.pair, a.runs, warm=True)
        if a.profile:
            if not (root / "mlflow.db").exists():
                run_timed(stage_cmd("train_scene", a.pair), root, None)
            result["profile"] = {s: profile(root, s, a.pair) for s in a.stages}
        if a.what_if:
            result["what_if"] = what_if(root, a.runs)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()
    print(f"load average at end {result['loadavg_end'][0]:.2f} {result['loadavg_end'][1]:.2f}")
    if a.json:
        a.json.write_text(json.dumps(result, default=str) + "\n")


if __name__ == "__main__":
    main()
