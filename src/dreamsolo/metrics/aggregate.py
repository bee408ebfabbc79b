"""Pair scores and study aggregates (docs/FORMATS.md); the pair JSON itself is `results.PairResult`.
Light: pandas only, no models, so the report stage can import it without torch."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from dreamsolo.metrics import METRICS, NOT_PRETRAINED_WARNING, random_warning
from dreamsolo.metrics.checks import DRIFT
from dreamsolo.metrics.pair_result import ALL_METRICS, PairResult, Scores, Stat

if TYPE_CHECKING:
    from dreamsolo.metrics.evaluators import Evaluators

Summary = dict[str, Any]
"""{"mean": float | None, "std": float | None, "n": int}; None (JSON null) when n == 0."""

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


def _stat(values: Iterable[Any]) -> Stat:
    return Stat(**summarise(values))


def _metric_block(df: pd.DataFrame) -> dict[str, Stat]:
    """Each metric's summary; the fine-tuned table's DRIFT column too (LPIPS to the base model's
    sample, same seed), so a sweep reads a pair's class drift from its JSON, as DVC shows it."""
    return {m: _stat(df[m]) for m in (*METRICS, DRIFT) if m in df.columns}


def _values(x: Any) -> list[Any]:
    """Per-prompt DIV / per-sample PRES values from a DataFrame (its `div` column), Series or list."""
    if isinstance(x, pd.DataFrame):
        return x["div"].tolist()
    return list(x)


def scores(df: pd.DataFrame, div: Any, pres: Any) -> Scores:
    """One model's scores on a pair: `metrics` over all samples, per `kind`, DIV over prompts, PRES over
    class-prompt samples (the same for the fine-tuned model and for the base model, the floor)."""
    return Scores(n_samples=len(df), metrics=_metric_block(df),
                  by_kind={str(kind): _metric_block(group) for kind, group in df.groupby("kind", sort=False)},
                  div=_stat(_values(div)), pres=_stat(_values(pres)))


def pair_result(tuned: Scores, base: Scores, pair: str, category: str, ev: Evaluators,
                base_model: str) -> PairResult:
    """reports/pairs/<pair>.json: the fine-tuned scores and the floor (`base`: the base model's samples of the
    same prompts and seeds, weights `base_model`); `warning` only when an evaluator was randomly initialised."""
    return PairResult(pair=pair, category=category, evaluators_pretrained=bool(ev.pretrained),
                      warning=ev.warning, tuned=tuned, base=base, base_model=base_model,
                      random_metrics=tuple(ev.random_metrics), evaluators=dict(ev.names))


def _across_pairs(pairs: Sequence[Scores]) -> dict[str, Summary]:
    """Each metric's pair means summarised across pairs: mean of means, std across pairs, n pairs."""
    return {m: summarise(s.mean(m) for s in pairs) for m in ALL_METRICS}


def _across_deltas(pairs: Sequence[PairResult]) -> dict[str, Summary]:
    """Each metric's per-pair gain (fine-tuned minus base) summarised across the pairs."""
    deltas = [p.delta for p in pairs]
    return {m: summarise(d[m] for d in deltas) for m in ALL_METRICS}


def study_summary(results: Sequence[PairResult]) -> dict[str, Any]:
    """The study's across-pair summaries of every metric, overall and per category (reports/metrics.json
    is built from it), for the fine-tuned model, the base model (`base`) and the gain (`delta`).

    Every pair weighs the same (a mean of pair means), so a pair with more samples does not dominate;
    the spread is between pairs, the study's unit of replication. The `delta` mean is the mean gain,
    its std how much the gain varies between pairs."""
    if not results:
        raise ValueError("no pair results to aggregate")
    pretrained = all(r.evaluators_pretrained for r in results)
    out: dict[str, Any] = {"evaluators_pretrained": pretrained}
    random = [m for m in ALL_METRICS if any(m in r.random_metrics for r in results)]
    if not pretrained:
        out["warning"] = random_warning(random) or NOT_PRETRAINED_WARNING
    out["random_metrics"] = random
    out["n_pairs"] = len(results)
    out["pairs"] = [r.pair for r in results]
    categories = list(dict.fromkeys(r.category for r in results))

    def split(fn: Callable[[list[PairResult]], dict[str, Summary]]) -> dict[str, Any]:
        return {"overall": fn(list(results)),
                "by_category": {c: fn([r for r in results if r.category == c]) for c in categories}}

    out.update(split(lambda rs: _across_pairs([r.tuned for r in rs])))
    out["base"] = split(lambda rs: _across_pairs([r.base for r in rs]))
    out["delta"] = split(_across_deltas)
    return out
