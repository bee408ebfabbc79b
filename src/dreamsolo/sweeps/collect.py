"""A sweep's results, read from its DVC experiments: one row per (point, pair).

The source is DVC, not MLflow: each experiment is a git commit holding the exact params.yaml and the
pair JSONs that `evaluate` wrote (the same files `dvc exp show` and `dvc metrics diff` read), and a
point whose stages all came from the run cache has them too, while it logged no MLflow run.
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dreamsolo.params import load_yaml_text
from dreamsolo.sweeps.spec import Sweep, get_key


@dataclass(frozen=True)
class Metric:
    name: str
    path: tuple[str, ...]  # where in the pair JSON: ("by_kind", kind, metric) or ("pres",)
    label: str
    lower_is_better: bool
    evaluator: str  # the metric name in the pair JSON's random_metrics


# The subject-fidelity axis and the prompt-fidelity / drift axes of the trade-off (DESIGN.md's metrics).
METRICS = (
    Metric("lpips_instance", ("by_kind", "instance", "lpips_instance"),
           "LPIPS of the <S> prompt's samples to the instance photo", True, "lpips_instance"),
    Metric("class_drift", ("by_kind", "class_instance", "lpips_base"),
           "class drift: LPIPS of the class prompt's samples to the base model's (same seed)", True, "lpips_base"),
    Metric("scene_kept", ("by_kind", "scene", "lpips_scene"),
           "LPIPS of the <V> scene prompt's samples to the scene photo (Stage I kept)", True, "lpips_scene"),
    Metric("composed_instance", ("by_kind", "composed", "lpips_instance"),
           "LPIPS of the composed prompt's samples to the instance photo", True, "lpips_instance"),
    Metric("dino", ("by_kind", "instance", "dino"), "DINO of the <S> prompt's samples to the instance", False, "dino"),
    Metric("clip_t", ("metrics", "clip_t"), "CLIP-T over all prompts", False, "clip_t"),
    Metric("pres", ("pres",), "PRES (DINO of class samples to the instance; lower = prior kept)", True, "pres"),
)
BY_NAME = {m.name: m for m in METRICS}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


def _experiments(root: Path) -> list[tuple[str, str, str]]:
    """(baseline commit, name, commit) of every DVC experiment: DVC keeps each as refs/exps/<2>/<38>/<name>."""
    out = _git(root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps")
    found = []
    for line in out.splitlines():
        ref, sha = line.split()
        parts = ref.split("/")  # refs exps <2 chars> <38 chars> <name>
        if len(parts) == 5:
            found.append((parts[2] + parts[3], parts[4], sha))
    return found


def experiment_revs(root: Path) -> dict[str, str]:
    """name -> commit of the experiments of HEAD."""
    head = _git(root, "rev-parse", "HEAD").strip()
    return {name: sha for base, name, sha in _experiments(root) if base == head}


def queued_elsewhere(root: Path, name: str) -> dict[str, int]:
    """Short commit -> how many points of sweep `name` have that commit, not HEAD, as their baseline (a commit
    made while the sweep ran moves HEAD away from its points)."""
    head = _git(root, "rev-parse", "HEAD").strip()
    bases = [base[:7] for base, point, _ in _experiments(root) if point.startswith(f"{name}-") and base != head]
    return {base: bases.count(base) for base in dict.fromkeys(bases)}


def _show(root: Path, rev: str, path: str) -> str:
    return _git(root, "show", f"{rev}:{path}")


def _stat(data: dict, path: tuple[str, ...]) -> dict[str, Any]:
    node: Any = data
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {"mean": None, "std": None, "n": 0}


def _rows_of(root: Path, rev: str, sweep: Sweep, point: str, label: str) -> list[dict[str, Any]]:
    params = load_yaml_text(_show(root, rev, "params.yaml"))
    settings = {k: get_key(params, k)[1] for k in sweep.keys}
    rows = []
    for pair in sweep.pairs:
        data = json.loads(_show(root, rev, f"reports/pairs/{pair}.json"))
        row: dict[str, Any] = {"point": point, "label": label, "rev": rev[:7], "pair": pair,
                               "category": data["category"], **settings}
        random = set(data.get("random_metrics") or [])
        for m in METRICS:
            s = _stat(data, m.path)
            row[m.name], row[f"{m.name}_std"], row[f"{m.name}_n"] = s["mean"], s["std"], s["n"]
            row[f"{m.name}_random"] = m.evaluator in random
        rows.append(row)
    return rows


# Per seed (the mean over the prompts of the kind): the findings page's bootstrap over pairs and seeds
# (metrics.claims) needs the seeds, which results.csv's means and stds do not keep.
SAMPLE_OUTCOMES = {"lpips_instance": ("instance", "lpips_instance"), "class_drift": ("class_instance", "lpips_base"),
                   "scene_kept": ("scene", "lpips_scene"), "composed_instance": ("composed", "lpips_instance")}


def _samples_of(root: Path, rev: str, sweep: Sweep, point: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for pair in sweep.pairs:
        data = json.loads(_show(root, rev, f"reports/pairs/{pair}.json"))
        df = pd.read_csv(io.StringIO(_show(root, rev, f"reports/pairs/{pair}.csv")))
        per_seed = {name: df[df["kind"] == kind].groupby("seed")[col].mean()
                    for name, (kind, col) in SAMPLE_OUTCOMES.items() if col in df.columns}
        random = ",".join(data.get("random_metrics") or [])
        for seed in sorted(set().union(*(s.index for s in per_seed.values()))):
            rows.append({"point": point, "pair": pair, "category": data["category"], "seed": int(seed), **settings,
                         **{k: float(v.get(seed, float("nan"))) for k, v in per_seed.items()},
                         "random_metrics": random})
    return rows


def baseline_stale(root: Path, sweep: Sweep) -> str | None:
    """Why the reports committed at HEAD do not stand for HEAD's params and code, or None. The baseline row
    reads them; they are HEAD's own only if the files the stages read are HEAD's (sweeps.yaml and the sweep
    reports are read by none) and DVC finds the swept pairs' stages up to date."""
    changed = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no").splitlines()
               if line[3:] != "sweeps.yaml" and not line[3:].startswith("reports/sweeps/")]
    if changed:
        more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
        return f"the work tree differs from HEAD ({changed[0]}{more})"
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        targets = [f"{root.resolve() / 'dvc.yaml'}:{t}" for t in sweep.targets]  # DVC reads a bare name from the cwd
        stale = sorted(repo.status(targets=targets, with_deps=True))
    if stale:
        return f"dvc status: {len(stale)} stage(s) changed since HEAD's results ({', '.join(stale[:3])})"
    return None


def collect_samples(root: Path, sweep: Sweep, baseline: bool = True) -> pd.DataFrame:
    """One row per (point, pair, seed) of every finished point and the baseline: samples.csv."""
    revs = experiment_revs(root)
    rows = []
    base = [("baseline", "HEAD")] if baseline else []
    for point, rev in [*base, *((p.name, revs[p.name]) for p in sweep.points if p.name in revs)]:
        params = load_yaml_text(_show(root, rev, "params.yaml"))
        rows += _samples_of(root, rev, sweep, point, {k: get_key(params, k)[1] for k in sweep.keys})
    return pd.DataFrame(rows)


def collect(root: Path, sweep: Sweep, baseline: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """(rows of every finished point, names of points without an experiment yet). The baseline (the
    commit's own params and results) comes first as point `baseline`, for reference, unless left out."""
    revs = experiment_revs(root)
    rows = _rows_of(root, "HEAD", sweep, "baseline", "params.yaml as committed") if baseline else []
    missing = []
    for p in sweep.points:
        if p.name in revs:
            rows += _rows_of(root, revs[p.name], sweep, p.name, p.label)
        else:
            missing.append(p.name)
    return pd.DataFrame(rows), missing
