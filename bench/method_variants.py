"""The method's two regularisers switched off, on every pair: prior preservation (λ = 0) and scene replay
(replay_weight = 0), against the study as `dvc repro` left it (issue 13, point 3).

    python bench/method_variants.py [--pairs cat_grass,cup_brick] [--out bench/out/variants]

Copies the study (params, data, models) into a temporary folder, then per variant reruns Stage II,
its samples and its scores there with the stage functions (the study itself is not touched), and
writes <out>/variants.json and <out>/variants.md: per pair, the class drift (LPIPS of the class
prompt's samples to the base model's, paired by seed) and Stage I kept (scene prompt vs base), each
with its seed-to-seed spread. Run it after `dvc repro`; one thread per process, as the study runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

VARIANTS = {"default": {}, "no prior (λ = 0)": {"prior_weight": 0.0}, "no replay": {"replay_weight": 0.0}}
COPY = ("params.yaml", "data", "models", "reports")


def checks_of(root: Path, pair: str) -> dict:
    import pandas as pd

    from dreamsolo.layout import pair_csv
    from dreamsolo.metrics.checks import pair_checks

    return pair_checks(pd.read_csv(pair_csv(root, pair)), pd.read_csv(pair_csv(root, pair, base=True)), pair)


def run_variant(root: Path, pairs: list[str], overrides: dict) -> dict[str, dict]:
    from dreamsolo.config import load_study
    from dreamsolo.stages import evaluate, sample, train
    from dreamsolo.params import dump_yaml, read_yaml

    params = read_yaml(root / "params.yaml")
    for p in pairs:
        params["pairs"][p]["train_instance"] = {**(params["pairs"][p]["train_instance"] or {}), **overrides}
    (root / "params.yaml").write_text(dump_yaml(params))
    study = load_study(root)
    out = {}
    for p in pairs:
        train.run(study, p, "train_instance")
        sample.run(study, p)
        evaluate.run(study, p)
        out[p] = checks_of(root, p)
    return out


def pm(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}" if d.get("std") is not None else f"{d['mean']:.3f}"


def markdown(results: dict[str, dict[str, dict]]) -> str:
    names = list(results)
    lines = ["| pair | " + " | ".join(f"class drift: {n}" for n in names) + " | "
             + " | ".join(f"scene kept Δ: {n}" for n in names) + " |",
             "| --- |" + " --- |" * (2 * len(names))]
    for p in results[names[0]]:
        drift = [pm(results[n][p]["class_drift"]) for n in names]
        kept = [pm(results[n][p]["scene_kept"]["delta"]) + (" ✓" if results[n][p]["scene_kept"]["holds"] else " ✗")
                for n in names]
        lines.append(f"| {p} | " + " | ".join(drift + kept) + " |")
    return ("\n".join(lines) + "\n\nClass drift: LPIPS of `a photo of a <instance class>` samples to the base "
            "model's of the same seed (lower = prior kept). Scene kept Δ: LPIPS to the scene photo of the `<V>` "
            "scene prompt's samples minus the base model's (< 0 ✓ = still closer). Mean ± std over seeds.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", help="comma-separated pair ids (default: all)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/variants")
    a = ap.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db")
    from dreamsolo.config import load_study

    pairs = a.pairs.split(",") if a.pairs else list(load_study(ROOT).pairs)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "study"
        work.mkdir()
        for name in COPY:
            (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, work / name)
        results["default"] = {p: checks_of(work, p) for p in pairs}
        for name, overrides in list(VARIANTS.items())[1:]:
            results[name] = run_variant(work, pairs, overrides)
            shutil.copy2(ROOT / "params.yaml", work / "params.yaml")  # each variant starts from the study's
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "variants.json").write_text(json.dumps(results, indent=2) + "\n")
    (a.out / "variants.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
