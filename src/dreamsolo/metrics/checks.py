"""The method's claims, checked on one pair's per-sample scores, seed by seed (issue 13).

Every prompt is sampled with the same seeds (image i of every prompt uses seed + i), by the fine-tuned
model and by the base model, so two sample sets can be compared *paired*: the difference of a metric
between set A and set B is taken per seed, then averaged; its spread is the std of those per-seed
differences (ddof=1). A claim holds when the mean difference is below zero (A closer than B), or above
zero for a metric where higher is closer (CLIP-T: image-text agreement).
Light on purpose (pandas only): the report stage imports it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

DRIFT = "lpips_base"
"""Per-sample column of the fine-tuned table: LPIPS to the base model's sample of the same prompt and
seed (how far fine-tuning moved that image; 0 = unchanged). On the class prompt it measures prior drift."""
DRIFT_CLAIM = "class prompt's samples: LPIPS to the base model's (same seed); lower = prior kept"


@dataclass(frozen=True)
class Check:
    name: str
    claim: str
    metric: str  # a per-sample column
    a: tuple[str, str]  # (prompt kind, "tuned" | "base"): the side that should be closer
    b: tuple[str, str]
    higher: bool = False  # higher = closer (CLIP-T); else lower = closer (LPIPS)


CHECKS = (
    Check("binding", "<S> prompt closer to the instance photo than the class prompt (same model)",
          "lpips_instance", ("instance", "tuned"), ("class_instance", "tuned")),
    Check("binding_vs_base", "<S> prompt closer to the instance photo than the base model's",
          "lpips_instance", ("instance", "tuned"), ("instance", "base")),
    Check("scene_kept", "after Stage II, the <V> prompt still closer to the scene photo than the base model's",
          "lpips_scene", ("scene", "tuned"), ("scene", "base")),
    Check("composed_instance", "composed prompt closer to the instance photo than the base model's",
          "lpips_instance", ("composed", "tuned"), ("composed", "base")),
    Check("composed_scene", "composed prompt closer to the scene photo than the base model's",
          "lpips_scene", ("composed", "tuned"), ("composed", "base")),
    Check("composed_text", "composed prompt's samples agree with its text (CLIP-T) at least as well as the base model's",
          "clip_t", ("composed", "tuned"), ("composed", "base"), higher=True),
)
NAMES = tuple(c.name for c in CHECKS) + ("class_drift",)


def _by_seed(df: pd.DataFrame, kind: str, metric: str, where: str) -> pd.Series:
    """Mean of `metric` per seed over the prompts of `kind` (composed and recontext have one prompt per
    pair; the mean keeps any prompt set paired by seed)."""
    rows = df[df["kind"] == kind]
    if rows.empty:
        raise ValueError(f"{where}: no samples of prompt kind {kind!r} (the method checks need them)")
    if metric not in rows.columns:
        raise ValueError(f"{where}: no column {metric!r}")
    return rows.groupby("seed")[metric].mean()


def _summary(diff: pd.Series) -> dict:
    n = int(diff.count())
    std = float(diff.std(ddof=1)) if n > 1 else None
    return {"mean": float(diff.mean()), "std": std, "n": n}


def pair_checks(tuned: pd.DataFrame, base: pd.DataFrame, where: str = "pair") -> dict[str, dict]:
    """name -> {claim, metric, a, b (means over seeds), delta {mean, std, n} (a - b per seed), holds}.
    `class_drift` (no direction in one run: it is compared across prior weights) is the mean LPIPS of the
    class prompt's samples to the base model's, with its spread over seeds."""
    sets = {"tuned": tuned, "base": base}
    out: dict[str, dict] = {}
    for c in CHECKS:
        a = _by_seed(sets[c.a[1]], c.a[0], c.metric, where)
        b = _by_seed(sets[c.b[1]], c.b[0], c.metric, where)
        if set(a.index) != set(b.index):
            raise ValueError(f"{where}: {c.name}: the two sample sets have different seeds")
        delta = _summary(a - b.loc[a.index])
        out[c.name] = {"claim": c.claim, "metric": c.metric, "a": f"{c.a[0]} ({c.a[1]})",
                       "b": f"{c.b[0]} ({c.b[1]})", "a_mean": float(a.mean()), "b_mean": float(b.mean()),
                       "delta": delta, "holds": delta["mean"] > 0 if c.higher else delta["mean"] < 0}
    drift = _by_seed(tuned, "class_instance", DRIFT, where)
    out["class_drift"] = {"claim": DRIFT_CLAIM, "metric": DRIFT, **_summary(drift)}
    return out


def study_checks(per_pair: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per check, over pairs: how many pairs it holds for, and the mean and spread of the pair deltas."""
    out: dict[str, dict] = {}
    for c in CHECKS:
        deltas = pd.Series([p[c.name]["delta"]["mean"] for p in per_pair.values()], dtype=float)
        out[c.name] = {"claim": c.claim, "holds": sum(p[c.name]["holds"] for p in per_pair.values()),
                       "pairs": len(per_pair), "delta": _summary(deltas)}
    drift = pd.Series([p["class_drift"]["mean"] for p in per_pair.values()], dtype=float)
    out["class_drift"] = {"claim": DRIFT_CLAIM, "pairs": len(per_pair), **_summary(drift)}
    return out
