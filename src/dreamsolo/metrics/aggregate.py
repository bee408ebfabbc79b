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
                 ev: Evaluators) -> dict[str, Any]:
    """reports/pairs/<pair>.json: `metrics` over all samples, per `kind`, DIV over prompts, PRES over
    class-prompt samples; `warning` only when an evaluator was randomly initialised."""
    out: dict[str, Any] = {"pair": pair, "category": category, "evaluators_pretrained": bool(ev.pretrained)}
    if not ev.pretrained:
        out["warning"] = ev.warning or NOT_PRETRAINED_WARNING
    out["n_samples"] = len(df)
    out["metrics"] = _metric_block(df)
    out["by_kind"] = {str(kind): _metric_block(group) for kind, group in df.groupby("kind", sort=False)}
    out["div"] = summarise(_values(div))
    out["pres"] = summarise(_values(pres))
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
    the spread is between pairs, the study's unit of replication."""
    if not pair_dicts:
        raise ValueError("no pair summaries to aggregate")
    pretrained = all(p.get("evaluators_pretrained", False) for p in pair_dicts)
    out: dict[str, Any] = {"evaluators_pretrained": pretrained}
    if not pretrained:
        out["warning"] = NOT_PRETRAINED_WARNING
    out["n_pairs"] = len(pair_dicts)
    out["pairs"] = [p["pair"] for p in pair_dicts]
    out["overall"] = _across_pairs(pair_dicts)
    categories = list(dict.fromkeys(p["category"] for p in pair_dicts))
    out["by_category"] = {c: _across_pairs([p for p in pair_dicts if p["category"] == c]) for c in categories}
    return out
