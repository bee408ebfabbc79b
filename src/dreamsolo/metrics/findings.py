"""The verdict rules of the findings page (issue 28): each claim of the seed study as an effect whose sign is
the claim, a 95 % bootstrap interval over pairs and seeds, and a verdict from that interval. numpy and
pandas only (the report stage imports it); the page itself is report/findings.py.

A *unit* is one pair: its category and an array whose first axis is the sample seed (seed i of every prompt,
point and model shares its initial noise, so rows with the same seed are paired). The bootstrap draws the
pairs with replacement (within each category, so every resample keeps the study's mix of categories), then
each drawn pair's seeds with replacement, and recomputes the statistic: its interval covers both the
pair-to-pair and the seed-to-seed spread, which is what a claim about the method (not about these eight
photos) needs.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

RESAMPLES = 2000
LEVEL = 0.95
MIN_LPIPS = 0.01
"""The smallest effect that counts, in LPIPS (differences and sensitivities): below it a change is not one a
reader would act on. An interval wholly under it rules the claimed effect out."""
MIN_R = 0.3
"""The smallest correlation that counts (claim 7): a weak-to-moderate association."""

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive at this sample size"
NOT_RUN, NOT_MEANINGFUL = "not run", "not meaningful (random evaluator)"
RULES = (
    (SUPPORTED, "the 95 % interval of the effect (signed so that > 0 is what the claim says) lies wholly above 0"),
    (NOT_SUPPORTED, "the interval lies wholly below the smallest effect that counts (δ: LPIPS 0.01, "
                    "correlation 0.3): an effect of that size in the claimed direction is ruled out, "
                    "an effect the other way included"),
    (INCONCLUSIVE, "otherwise: the interval holds 0 and reaches δ or beyond"),
    ("several parts", "supported when every part is, not supported when any part is, else inconclusive"),
    (NOT_RUN, "the study holds no data for the test yet; the page names the command that makes it"),
    (NOT_MEANINGFUL, "a part rests on a randomly initialised evaluator; no verdict"),
)
CODE = {SUPPORTED: 1.0, INCONCLUSIVE: 0.0, NOT_SUPPORTED: -1.0}
"""A verdict as an MLflow metric (the verdict's words go on the run as a tag)."""

Unit = tuple[str, np.ndarray]
"""(category, array with one row per seed)."""
Statistic = Callable[[Sequence[Unit]], float]


@dataclass(frozen=True)
class Estimate:
    value: float  # the statistic on the data as measured
    lo: float
    hi: float
    n_pairs: int
    n_seeds: int  # per pair (the smallest, if they differ)

    def as_dict(self) -> dict:
        """JSON-safe: an undefined bound (see bootstrap) is null."""
        ci = [x if np.isfinite(x) else None for x in (self.lo, self.hi)]
        return {"value": self.value if np.isfinite(self.value) else None, "ci": ci, "n_pairs": self.n_pairs,
                "n_seeds": self.n_seeds}


def seed_of(*parts: str) -> int:
    """A fixed seed per test: the same data always gives the same interval."""
    return zlib.crc32("/".join(parts).encode())


def resample(units: Sequence[Unit], rng: np.random.Generator, stratify: bool = True) -> list[Unit]:
    """One bootstrap draw: pairs with replacement (within category when `stratify`), then seeds."""
    if stratify:
        groups: dict[str, list[Unit]] = {}
        for u in units:
            groups.setdefault(u[0], []).append(u)
        picked = [g[i] for g in groups.values() for i in rng.integers(0, len(g), len(g))]
    else:
        picked = [units[i] for i in rng.integers(0, len(units), len(units))]
    return [(cat, arr[rng.integers(0, len(arr), len(arr))]) for cat, arr in picked]


def bootstrap_many(units: Sequence[Unit], stat: Callable[[Sequence[Unit]], Sequence[float]], seed: int,
                   stratify: bool = True, resamples: int = RESAMPLES, level: float = LEVEL) -> list[Estimate]:
    """A vector statistic and each entry's percentile interval from one set of resamples (the numbers of one
    claim move together); resamples where an entry is undefined (nan) are left out of its interval."""
    if not units:
        raise ValueError("bootstrap of no pairs")
    rng = np.random.default_rng(seed)
    value = np.asarray(stat(units), dtype=float)
    boot = np.array([stat(resample(units, rng, stratify)) for _ in range(resamples)], dtype=float)
    boot = boot.reshape(resamples, -1)
    tail = (1 - level) / 2 * 100
    n_pairs, n_seeds = len(units), min(len(a) for _, a in units)
    out = []
    for v, col in zip(value, boot.T):
        col = col[np.isfinite(col)]
        if len(col) < resamples / 2:  # e.g. a correlation over resamples that drew one pair only
            out.append(Estimate(float(v), float("-inf"), float("inf"), n_pairs, n_seeds))
            continue
        lo, hi = np.percentile(col, [tail, 100 - tail])
        out.append(Estimate(float(v), float(lo), float(hi), n_pairs, n_seeds))
    return out


def bootstrap(units: Sequence[Unit], stat: Statistic, seed: int, stratify: bool = True,
              resamples: int = RESAMPLES, level: float = LEVEL) -> Estimate:
    """The statistic and its percentile interval (bootstrap_many of one number)."""
    return bootstrap_many(units, lambda us: [stat(us)], seed, stratify, resamples, level)[0]


def verdict(est: Estimate, smallest: float) -> str:
    """RULES, for one part: `est` signed so that > 0 is the claim."""
    if est.lo > 0:
        return SUPPORTED
    if est.hi < smallest:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """A claim of several parts (RULES' "several parts"); a random or missing part decides first."""
    for first in (NOT_RUN, NOT_MEANINGFUL, NOT_SUPPORTED, INCONCLUSIVE):
        if first in verdicts:
            return first
    return SUPPORTED


# --- statistics -----------------------------------------------------------------------------------------

def mean_effect(units: Sequence[Unit]) -> float:
    """Mean over pairs of each pair's mean over seeds (each pair weighs the same, as in the study table)."""
    return float(np.mean([a.mean() for _, a in units]))


def point_means(units: Sequence[Unit], categories: Sequence[str] | None = None) -> np.ndarray:
    """(points, outcomes): mean over the pairs of `categories` (all when None) of each pair's seed mean.
    Units here are (seeds, points, outcomes) arrays of one sweep's points."""
    arrs = [a.mean(axis=0) for c, a in units if categories is None or c in categories]
    return np.mean(arrs, axis=0) if arrs else np.full(units[0][1].shape[1:], np.nan)


def spread(means: np.ndarray, groups: Sequence[np.ndarray]) -> np.ndarray:
    """Sensitivity: per outcome, the largest minus the smallest mean over the groups of points that share
    one value of the keys (each group's points averaged: the keys' main effect over the other swept keys)."""
    by_value = np.stack([means[g].mean(axis=0) for g in groups])
    return by_value.max(axis=0) - by_value.min(axis=0)


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; nan when either side does not vary."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


# --- units from the study's per-sample tables -----------------------------------------------------------

def by_seed(df: pd.DataFrame, kind: str, column: str) -> pd.DataFrame:
    """pair x seed table of `column`, averaged over the prompts of `kind` (paired by seed)."""
    rows = df[df["kind"] == kind]
    if rows.empty or column not in rows.columns:
        raise ValueError(f"no {column!r} of prompt kind {kind!r} in the per-sample table")
    return rows.groupby(["pair", "seed"])[column].mean().unstack("seed")


def paired_units(a: pd.DataFrame, b: pd.DataFrame, categories: dict[str, str], sign: float = 1.0) -> list[Unit]:
    """Per pair: sign * (a - b) per seed. a and b are by_seed() tables; they must hold the same pairs and
    seeds (a difference of unpaired samples would not remove the seed's spread)."""
    if set(a.index) != set(b.index) or list(a.columns) != list(b.columns):
        raise ValueError("the two sample sets are not paired: different pairs or seeds")
    d = sign * (a - b.loc[a.index])
    if d.isna().any().any():
        raise ValueError("the two sample sets are not paired: a seed is missing for some pair")
    return [(categories[p], d.loc[p].to_numpy(dtype=float)) for p in d.index]


def stacked_units(tables: Sequence[pd.DataFrame], categories: dict[str, str]) -> list[Unit]:
    """Per pair: the by_seed() tables side by side, (seeds, len(tables)); the same pairs and seeds in each."""
    first = tables[0]
    for t in tables[1:]:
        if set(t.index) != set(first.index) or list(t.columns) != list(first.columns):
            raise ValueError("the sample sets are not paired: different pairs or seeds")
    return [(categories[p], np.stack([t.loc[p].to_numpy(dtype=float) for t in tables], axis=1)) for p in first.index]


def sweep_units(samples: pd.DataFrame, points: Sequence[str], outcomes: Sequence[str]) -> list[Unit]:
    """Per pair of a sweep's samples.csv: (seeds, points, outcomes). Every point must hold every pair's
    seeds: a point with fewer would make the spread compare different samples."""
    out = []
    for pair, g in samples.groupby("pair", sort=False):
        cube = []
        for point in points:
            rows = g[g["point"] == point].set_index("seed").sort_index()
            if rows.empty:
                raise ValueError(f"point {point} has no samples of pair {pair}")
            cube.append(rows[list(outcomes)].to_numpy(dtype=float))
        if len({c.shape for c in cube}) != 1:
            raise ValueError(f"pair {pair}: the sweep's points have different seeds")
        out.append((str(g["category"].iloc[0]), np.stack(cube, axis=1)))
    return out
