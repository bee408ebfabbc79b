"""Pair and study aggregates in the JSON shapes of docs/FORMATS.md. Light: pandas only, no models,
so the report stage can import it without torch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from dreamsolo.metrics import METRICS, NOT_PRETRAINED_WARNING

if TYPE_CHECKING:
    from dreamsolo.metrics.evaluators import Evaluators

Summary = dict[str, Any]
"""{"mean": float | None, "std": float | None, "n": int}; None (JSON null) when n == 0."""

SET_METRICS = ("div", "pres")
"""Metrics that are not per-sample columns: DIV per prompt, PRES per class-prompt sample."""


def _finite(values: Iterable[Any]) -> list[float]:
    """Numbers only: NaN and None (a metric that did not apply) are skipped, not counted."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def summarise(values: Iterable[Any]) -> Summary:
    """Mean, sample standard deviation (ddof=1; 0 for a single value) and count, NaN ignored."""
    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def _metric_block(df: pd.DataFrame) -> dict[str, Summary]:
    return {m: summarise(df[m]) for m in METRICS if m in df.columns}


def _values(x: Any) -> list[Any]:
    """Per-prompt DIV / per-sample PRES values from a DataFrame (its `div` column), Series or list."""
    if isinstance(x, pd.DataFrame):
        return x["div"].tolist()
    return list(x)


def pair_summary(df: pd.DataFrame, div: Any, pres: Any, pair: str, category: str,
                 ev: Evaluators, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """reports/pairs/<pair>.json: `metrics` over all samples, per `kind`, DIV over prompts, PRES over
    class-prompt samples; `warning` only when an evaluator was randomly initialised.

    `base` (from `floor_summary`) is the base model's score on the same prompts and seeds; with it come
    `delta` (fine-tuned mean minus base mean per metric: what fine-tuning bought)."""
    out: dict[str, Any] = {"pair": pair, "category": category, "evaluators_pretrained": bool(ev.pretrained)}
    if not ev.pretrained:
        out["warning"] = ev.warning or NOT_PRETRAINED_WARNING
    out.update(_scores(df, div, pres))
    if base is not None:
        out["base"] = dict(base)
        out["delta"] = deltas(out, base)
    return out


def _scores(df: pd.DataFrame, div: Any, pres: Any) -> dict[str, Any]:
    return {"n_samples": len(df), "metrics": _metric_block(df),
            "by_kind": {str(kind): _metric_block(group) for kind, group in df.groupby("kind", sort=False)},
            "div": summarise(_values(div)), "pres": summarise(_values(pres))}


def floor_summary(df: pd.DataFrame, div: Any, pres: Any, model: str) -> dict[str, Any]:
    """The `base` block of a pair JSON: the same shape as the pair's own scores (n_samples, metrics,
    by_kind, div, pres), for the base model's samples; `model` names the weights (models/base/<preset>)."""
    return {"model": model, **_scores(df, div, pres)}


def _mean(block: Mapping[str, Any], metric: str) -> float | None:
    stat = block.get(metric) if metric in SET_METRICS else (block.get("metrics") or {}).get(metric)
    return stat.get("mean") if isinstance(stat, Mapping) else None


def deltas(tuned: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, float | None]:
    """Per metric, the fine-tuned mean minus the base mean; None where either is missing."""
    out: dict[str, float | None] = {}
    for m in (*METRICS, *SET_METRICS):
        a, b = _mean(tuned, m), _mean(base, m)
        out[m] = None if a is None or b is None else a - b
    return out


def _across_pairs(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Summary]:
    """Each metric's pair means summarised across pairs: mean of means, std across pairs, n pairs."""
    out = {}
    for m in (*METRICS, *SET_METRICS):
        block = [p.get(m) if m in SET_METRICS else p.get("metrics", {}).get(m) for p in pairs]
        out[m] = summarise(b["mean"] for b in block if b)
    return out


def study_summary(pair_dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """reports/metrics.json: overall and per-category across-pair summaries of every metric.

    Every pair weighs the same (a mean of pair means), so a pair with more samples does not dominate;
    the spread is between pairs, the study's unit of replication. When the pairs carry the floor,
    `base` summarises the base model the same way and `delta` the per-pair differences (fine-tuned
    minus base: its mean is the mean gain, its std how much the gain varies between pairs)."""
    if not pair_dicts:
        raise ValueError("no pair summaries to aggregate")
    pretrained = all(p.get("evaluators_pretrained", False) for p in pair_dicts)
    out: dict[str, Any] = {"evaluators_pretrained": pretrained}
    if not pretrained:
        out["warning"] = NOT_PRETRAINED_WARNING
    out["n_pairs"] = len(pair_dicts)
    out["pairs"] = [p["pair"] for p in pair_dicts]
    categories = list(dict.fromkeys(p["category"] for p in pair_dicts))

    def split(fn) -> dict[str, Any]:
        return {"overall": fn(pair_dicts),
                "by_category": {c: fn([p for p in pair_dicts if p["category"] == c]) for c in categories}}

    out.update(split(_across_pairs))
    if any(isinstance(p.get("base"), Mapping) for p in pair_dicts):
        out["base"] = split(lambda ps: _across_pairs([p["base"] for p in ps if isinstance(p.get("base"), Mapping)]))
        out["delta"] = split(_across_deltas)
    return out


def _across_deltas(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Summary]:
    """Each metric's per-pair gain (fine-tuned minus base) summarised across the pairs that have a floor."""
    with_base = [deltas(p, p["base"]) for p in pairs if isinstance(p.get("base"), Mapping)]
    return {m: summarise(d[m] for d in with_base) for m in (*METRICS, *SET_METRICS)}
