"""The typed pair result: what `evaluate` writes to reports/pairs/<pair>.json and the report stage reads back.

`to_json` gives exactly the documented shape and key order (docs/FORMATS.md); `from_json` refuses a file
without the floor (`base`) or with a missing, unknown or mistyped key, with one error naming the file and
the key. Light on purpose (standard library only): the report stage imports it without torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dreamsolo.metrics import METRICS

SET_METRICS = ("div", "pres")
"""Metrics that are not per-sample columns: DIV per prompt, PRES per class-prompt sample."""
ALL_METRICS = (*METRICS, *SET_METRICS)
"""Every metric with a `delta`, in the JSON's order."""

_SCORE_KEYS = ("n_samples", "metrics", "by_kind", "div", "pres")
_PAIR_KEYS = ("pair", "category", "evaluators", "evaluators_pretrained", "random_metrics", "warning", *_SCORE_KEYS, "base",
              "delta")


class PairResultError(ValueError):
    """A pair JSON that is not in the documented shape (a ValueError: the stages show it as one line)."""


@dataclass(frozen=True)
class Stat:
    """One metric's summary: mean, sample std (ddof=1) and count; mean and std are None when n == 0."""

    mean: float | None
    std: float | None
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class Scores:
    """One model's scores on a pair's samples: the fine-tuned model's, or the base model's (the floor)."""

    n_samples: int
    metrics: Mapping[str, Stat]  # per-sample metric -> summary over all samples (only metrics scored)
    by_kind: Mapping[str, Mapping[str, Stat]]  # prompt kind -> metric -> summary
    div: Stat
    pres: Stat

    def stat(self, metric: str) -> Stat | None:
        """DIV / PRES, or a per-sample metric's summary; None for a metric that was not scored."""
        return getattr(self, metric) if metric in SET_METRICS else self.metrics.get(metric)

    def mean(self, metric: str) -> float | None:
        s = self.stat(metric)
        return None if s is None else s.mean

    def to_json(self) -> dict[str, Any]:
        return {"n_samples": self.n_samples, "metrics": _stats_json(self.metrics),
                "by_kind": {k: _stats_json(v) for k, v in self.by_kind.items()},
                "div": self.div.to_json(), "pres": self.pres.to_json()}


@dataclass(frozen=True)
class PairResult:
    """reports/pairs/<pair>.json: the fine-tuned scores, the floor (`base`: the base model on the same
    prompts and seeds, scored by the same evaluators) and `delta` (fine-tuned minus base, derived)."""

    pair: str
    category: str
    evaluators_pretrained: bool
    warning: str | None  # set only when an evaluator was randomly initialised
    tuned: Scores
    base: Scores
    base_model: str  # the base weights, relative to the study root (models/base/<preset>)
    random_metrics: tuple[str, ...] = ()  # metrics whose evaluator was randomly initialised (not meaningful)
    evaluators: dict[str, str] = field(default_factory=dict)  # CLIP / LPIPS / DINO -> "model (weights)"

    @property
    def delta(self) -> dict[str, float | None]:
        """Per metric, the fine-tuned mean minus the base mean; None where either is missing."""
        out: dict[str, float | None] = {}
        for m in ALL_METRICS:
            a, b = self.tuned.mean(m), self.base.mean(m)
            out[m] = None if a is None or b is None else a - b
        return out

    def to_json(self) -> dict[str, Any]:
        names = {"evaluators": dict(self.evaluators)} if self.evaluators else {}  # absent in older files
        out: dict[str, Any] = {"pair": self.pair, "category": self.category, **names,
                               "evaluators_pretrained": self.evaluators_pretrained,
                               "random_metrics": list(self.random_metrics)}
        if self.warning is not None:
            out["warning"] = self.warning
        out.update(self.tuned.to_json())
        out["base"] = {"model": self.base_model, **self.base.to_json()}
        out["delta"] = self.delta
        return out

    @classmethod
    def from_json(cls, data: Any, where: str | Path = "pair JSON") -> PairResult:
        """Read a pair JSON (as parsed by json.load); `where` (the file) starts every error message."""
        r = _Reader(str(where))
        if isinstance(data, Mapping) and "base" not in data:  # the likeliest stale file: say what it lacks
            raise r.fail("no 'base' block: the floor (the base model's scores on the same prompts and seeds) "
                         "is missing; rerun the pair's evaluate stage")
        r.keys(data, "", _PAIR_KEYS, optional=("warning", "evaluators"))
        warning = data.get("warning")  # genuinely optional: only when an evaluator is random
        if warning is not None and not isinstance(warning, str):
            raise PairResultError(f"{where}: 'warning' must be a string, got {warning!r}")
        r.keys(data["base"], "base.", ("model", *_SCORE_KEYS))
        random = data["random_metrics"]
        if not isinstance(random, list) or any(m not in ALL_METRICS for m in random):
            raise PairResultError(f"{where}: 'random_metrics' must be a list of metric names, got {random!r}")
        names = data.get("evaluators", {})  # optional: pair files written before it was recorded
        if not isinstance(names, Mapping) or not all(isinstance(v, str) for v in names.values()):
            raise PairResultError(f"{where}: 'evaluators' must map CLIP / LPIPS / DINO to names, got {names!r}")
        result = cls(pair=r.typed(data, "", "pair", str), category=r.typed(data, "", "category", str),
                     evaluators_pretrained=r.typed(data, "", "evaluators_pretrained", bool), warning=warning,
                     tuned=r.scores(data, ""), base=r.scores(data["base"], "base."),
                     base_model=r.typed(data["base"], "base.", "model", str), random_metrics=tuple(random), evaluators=dict(names))
        r.check_delta(data["delta"], result.delta)
        return result


def _stats_json(stats: Mapping[str, Stat]) -> dict[str, Any]:
    return {m: s.to_json() for m, s in stats.items()}


@dataclass(frozen=True)
class _Reader:
    """Checks one parsed file; every error names the file (`where`) and the dotted key."""

    where: str

    def fail(self, what: str) -> PairResultError:
        return PairResultError(f"{self.where}: {what}")

    def keys(self, data: Any, prefix: str, expected: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        if not isinstance(data, Mapping):
            raise self.fail(f"{prefix.rstrip('.') or 'the file'} must be an object, got {type(data).__name__}")
        missing = [k for k in expected if k not in data and k not in optional]
        unknown = [k for k in data if k not in expected]
        if missing or unknown:
            parts = [f"missing key {prefix}{k}" for k in missing] + [f"unknown key {prefix}{k}" for k in unknown]
            raise self.fail("; ".join(parts))

    def typed(self, data: Mapping[str, Any], prefix: str, key: str, kind: type) -> Any:
        value = data[key]
        ok = isinstance(value, bool) if kind is bool else isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise self.fail(f"{prefix}{key} must be {kind.__name__}, got {value!r}")
        return value

    def stat(self, data: Any, key: str) -> Stat:
        self.keys(data, f"{key}.", ("mean", "std", "n"))
        for k in ("mean", "std"):
            v = data[k]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise self.fail(f"{key}.{k} must be a number or null, got {v!r}")
        return Stat(mean=data["mean"], std=data["std"], n=self.typed(data, f"{key}.", "n", int))

    def stats(self, data: Any, key: str) -> dict[str, Stat]:
        if not isinstance(data, Mapping):
            raise self.fail(f"{key} must be an object, got {type(data).__name__}")
        return {m: self.stat(s, f"{key}.{m}") for m, s in data.items()}

    def scores(self, data: Mapping[str, Any], prefix: str) -> Scores:
        by_kind = data["by_kind"]
        if not isinstance(by_kind, Mapping):
            raise self.fail(f"{prefix}by_kind must be an object, got {type(by_kind).__name__}")
        return Scores(n_samples=self.typed(data, prefix, "n_samples", int),
                      metrics=self.stats(data["metrics"], f"{prefix}metrics"),
                      by_kind={k: self.stats(v, f"{prefix}by_kind.{k}") for k, v in by_kind.items()},
                      div=self.stat(data["div"], f"{prefix}div"), pres=self.stat(data["pres"], f"{prefix}pres"))

    def check_delta(self, given: Any, derived: Mapping[str, float | None]) -> None:
        """The file's `delta` must be what its means give: the report uses the derived one."""
        self.keys(given, "delta.", tuple(derived))
        for m, d in derived.items():
            g = given[m]
            same = (g is None and d is None) or (isinstance(g, (int, float)) and not isinstance(g, bool)
                                                 and d is not None and math.isclose(g, d, rel_tol=1e-9,
                                                                                    abs_tol=1e-12))
            if not same:
                raise self.fail(f"delta.{m} is {g!r}, but the fine-tuned minus the base mean is {d!r}")
