"""Paired statistics of an arm against the method: per pair and overall, arm minus method on the same
prompts and seeds, with seeded bootstrap 95 % confidence intervals over samples, and wins / ties / losses
over pairs. pandas and numpy only (the report stage imports it).

Pairing: a sample of the arm and one of the method with the same pair, prompt and seed were drawn from
the same initial noise, so their difference removes most of the seed-to-seed spread. The interval of a
pair resamples its paired differences; the overall interval resamples within every pair at once
(stratified) and averages the pair means, so each pair weighs the same, as in the study table."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dreamsolo.metrics.checks import DRIFT

RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Comparison:
    name: str
    label: str
    kinds: tuple[str, ...]  # sample kinds it is measured on
    column: str  # per-sample column of reports/pairs/<pair>.csv
    lower_is_better: bool

    @property
    def evaluator(self) -> str:
        return "LPIPS" if self.column.startswith("lpips") else "DINO" if self.column.startswith("dino") else "CLIP"


COMPARISONS = (
    Comparison("composed_lpips_scene", "composed → scene, LPIPS ↓", ("composed",), "lpips_scene", True),
    Comparison("composed_lpips_instance", "composed → instance, LPIPS ↓", ("composed",), "lpips_instance", True),
    Comparison("composed_clip_i_scene", "composed → scene, CLIP-I ↑", ("composed",), "clip_i_scene", False),
    Comparison("composed_clip_i", "composed → instance, CLIP-I ↑", ("composed",), "clip_i", False),
    Comparison("composed_dino_scene", "composed → scene, DINO ↑", ("composed",), "dino_scene", False),
    Comparison("composed_dino", "composed → instance, DINO ↑", ("composed",), "dino", False),
    Comparison("composed_clip_t", "composed + recontext, CLIP-T ↑", ("composed", "recontext"), "clip_t", False),
    Comparison("binding", "⟨S⟩ alone → instance, LPIPS ↓", ("instance",), "lpips_instance", True),
    Comparison("scene_kept", "⟨V⟩ alone → scene, LPIPS ↓", ("scene",), "lpips_scene", True),
    Comparison("class_drift", "class prompts → base, LPIPS ↓", ("class_instance", "class_scene"), DRIFT, True),
)
KEY = ["prompt", "seed"]


def _seed(*parts: str, base: int = 0) -> int:
    """A fixed seed per (arm, comparison, pair): the same data always gives the same interval."""
    return base + zlib.crc32("/".join(parts).encode())


def paired_diffs(arm: pd.DataFrame, method: pd.DataFrame, c: Comparison) -> np.ndarray:
    """arm - method per (prompt, seed) of the comparison's kinds; a sample missing on one side is an error."""
    a = arm[arm["kind"].isin(c.kinds)][KEY + [c.column]]
    m = method[method["kind"].isin(c.kinds)][KEY + [c.column]]
    joined = a.merge(m, on=KEY, how="outer", suffixes=("_arm", "_method"), indicator=True)
    unpaired = joined[joined["_merge"] != "both"]
    if len(unpaired):
        row = unpaired.iloc[0]
        raise ValueError(f"{c.name}: sample {row['prompt']!r} seed {row['seed']} is in only one of the two sets")
    return (joined[f"{c.column}_arm"] - joined[f"{c.column}_method"]).to_numpy(dtype=float)


def bootstrap_ci(diffs: np.ndarray, seed: int, resamples: int = RESAMPLES, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs`."""
    if len(diffs) == 0:
        raise ValueError("bootstrap of no samples")
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(resamples, len(diffs)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def stratified_ci(per_pair: list[np.ndarray], seed: int, resamples: int = RESAMPLES,
                  level: float = LEVEL) -> tuple[float, float]:
    """Interval of the mean over pairs of pair means, resampling samples within each pair."""
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    for d in per_pair:
        boot += d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    boot /= len(per_pair)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boot, [tail, 100 - tail])
    return float(lo), float(hi)


def verdict(ci: tuple[float, float], lower_is_better: bool) -> str:
    """win / loss when the whole interval is on one side of zero, else tie."""
    lo, hi = ci
    if hi < 0:
        return "win" if lower_is_better else "loss"
    if lo > 0:
        return "loss" if lower_is_better else "win"
    return "tie"


def compare_arm(arm: str, arm_rows: pd.DataFrame, method_rows: pd.DataFrame, pairs: list[str], seed: int = 0) -> dict:
    """{comparison: {"pairs": {pair: {delta, ci, n, verdict}}, "overall": {delta, ci, wins, ties, losses}}}."""
    out = {}
    for c in COMPARISONS:
        if c.column not in arm_rows.columns or c.column not in method_rows.columns:
            continue
        per_pair, diffs_all = {}, []
        for pair in pairs:
            d = paired_diffs(arm_rows[arm_rows["pair"] == pair], method_rows[method_rows["pair"] == pair], c)
            if len(d) == 0:
                continue
            ci = bootstrap_ci(d, _seed(arm, c.name, pair, base=seed))
            per_pair[pair] = {"delta": float(d.mean()), "ci": list(ci), "n": int(len(d)),
                              "verdict": verdict(ci, c.lower_is_better)}
            diffs_all.append(d)
        if not per_pair:
            continue
        ci = stratified_ci(diffs_all, _seed(arm, c.name, "overall", base=seed))
        counts = {v: sum(p["verdict"] == v for p in per_pair.values()) for v in ("win", "tie", "loss")}
        out[c.name] = {"pairs": per_pair, "overall": {
            "delta": float(np.mean([p["delta"] for p in per_pair.values()])), "ci": list(ci),
            "verdict": verdict(ci, c.lower_is_better), "wins": counts["win"], "ties": counts["tie"],
            "losses": counts["loss"], "n_pairs": len(per_pair)}}
    return out


def arm_values(rows: pd.DataFrame, pairs: list[str]) -> dict[str, float]:
    """Each comparison's mean over pairs of the pair's mean (the absolute numbers beside the differences)."""
    out = {}
    for c in COMPARISONS:
        if c.column not in rows.columns:
            continue
        sel = rows[rows["kind"].isin(c.kinds) & rows["pair"].isin(pairs)]
        means = sel.groupby("pair")[c.column].mean()
        if len(means):
            out[c.name] = float(means.mean())
    return out
