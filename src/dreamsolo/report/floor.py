"""The floor: the base model's scores on the pair's own prompts and seeds (no fine-tuning), shown next to
every fine-tuned number so each table says what fine-tuning bought.

Inputs are the pairs' `PairResult`s (their `base` scores and `delta`), reports/pairs_base/<pair>.csv
(written by `evaluate`) and the `base` / `delta` blocks of the study summary. `evaluate` always writes
the floor and `PairResult.from_json` refuses a pair JSON without it, so nothing here is optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from dreamsolo.metrics.pair_result import PairResult
from dreamsolo.report import tables
from dreamsolo.report.tables import METRICS, _num, fmt, spread

BASE_LABEL = "↳ base model"
"""Row label of the floor under each fine-tuned row (tables in report.md and index.html)."""
BASE_NOTE = ("↳ base model: the model before fine-tuning, sampled on the same prompts with the same seeds "
             "and scored by the same evaluators (the floor); Δ = fine-tuned − base")
HIGHER_IS_BETTER = {"clip_t": True, "clip_i": True, "dino": True, "div": True,
                    "lpips_instance": False, "lpips_scene": False, "pres": False}
COMPARE = ("clip_t", "lpips_instance", "lpips_scene")
"""Metrics written to reports/compare/<metric>.csv (DVC plots: a fine-tuned and a base bar per pair)."""


@dataclass(frozen=True)
class Floor:
    """The floor of one display table: `base` has the table's index and 'mean ± std' strings per
    metric; `delta` the same index and the numeric fine-tuned − base difference per metric."""

    base: pd.DataFrame
    delta: pd.DataFrame


def pairs_columns(results: list[PairResult]) -> pd.DataFrame:
    """Rows = pairs; columns <metric>_base_mean, <metric>_base_std, <metric>_delta (NaN where missing)."""
    base = tables.pairs_numeric(results, base=True).set_index("pair")
    rows = []
    for r in results:
        row: dict[str, Any] = {"pair": r.pair}
        delta = r.delta
        for m in METRICS:
            row[f"{m}_base_mean"] = base.loc[r.pair, f"{m}_mean"]
            row[f"{m}_base_std"] = base.loc[r.pair, f"{m}_std"]
            row[f"{m}_delta"] = _num(delta[m])
        rows.append(row)
    cols = [f"{m}_{k}" for m in METRICS for k in ("base_mean", "base_std", "delta")]
    return pd.DataFrame(rows, columns=["pair", *cols]).astype({c: float for c in cols})


def pairs_floor(results: list[PairResult]) -> Floor:
    """Floor of the study table (index = pair)."""
    num = pairs_columns(results).set_index("pair")
    base = pd.DataFrame({m: [fmt(a, b) for a, b in zip(num[f"{m}_base_mean"], num[f"{m}_base_std"])]
                         for m in METRICS}, index=num.index)
    return Floor(base, pd.DataFrame({m: num[f"{m}_delta"] for m in METRICS}, index=num.index))


def _stats(given: Mapping[str, Any], values: pd.Series) -> dict[str, float | None]:
    """The study summary's {'mean','std'} where it has a mean, else mean ± std (ddof=1) of `values`."""
    if _num(given["mean"]) is not None:
        return {"mean": _num(given["mean"]), "std": _num(given["std"])}
    mean, std = spread(values)
    return {"mean": mean, "std": std}


def _group_floor(results: list[PairResult], summary: dict, groups: dict[str, list[str]],
                 scope: str) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, dict]]]:
    """({group: {metric: base stats}}, {group: {metric: delta stats}}) across the pairs of each group;
    `scope` picks the summary's block ('overall' or 'by_category')."""
    num = pairs_columns(results).set_index("pair")
    base_out, delta_out = {}, {}
    for name, pairs in groups.items():
        sub = num.loc[pairs]
        given_b, given_d = summary["base"][scope], summary["delta"][scope]
        if scope != "overall":
            given_b, given_d = given_b[name], given_d[name]
        base_out[name] = {m: _stats(given_b[m], sub[f"{m}_base_mean"]) for m in METRICS}
        delta_out[name] = {m: _stats(given_d[m], sub[f"{m}_delta"]) for m in METRICS}
    return base_out, delta_out


def overall_floor(results: list[PairResult], summary: dict) -> tuple[dict[str, dict], dict[str, dict]]:
    """({metric: base stats}, {metric: delta stats}) over all pairs (the 'study (all pairs)' row)."""
    base, delta = _group_floor(results, summary, {"all": [r.pair for r in results]}, "overall")
    return base["all"], delta["all"]


def categories_floor(results: list[PairResult], summary: dict, categories: pd.DataFrame) -> Floor:
    """Floor of the per-category table (index = category, as `tables.category_table`)."""
    groups = {c: [r.pair for r in results if r.category == c] for c in categories.index}
    base, delta = _group_floor(results, summary, groups, "by_category")
    return Floor(
        pd.DataFrame({m: [fmt(base[c][m]["mean"], base[c][m]["std"]) for c in groups] for m in METRICS},
                     index=categories.index),
        pd.DataFrame({m: [delta[c][m]["mean"] for c in groups] for m in METRICS}, index=categories.index,
                     dtype=float))


def kinds_floor(per_sample: pd.DataFrame, per_sample_base: pd.DataFrame) -> Floor:
    """Floor of the prompt-kind table: base samples pooled over pairs, Δ of the pooled means."""
    tuned, base = tables.kind_numeric(per_sample), tables.kind_numeric(per_sample_base)
    base = base.reindex(tuned.index)
    cols = [m for m in tables.SAMPLE_METRICS if f"{m}_mean" in tuned.columns and f"{m}_mean" in base.columns]
    return Floor(
        pd.DataFrame({m: [fmt(a, b) for a, b in zip(base[f"{m}_mean"], base[f"{m}_std"])] for m in cols},
                     index=tuned.index),
        pd.DataFrame({m: tuned[f"{m}_mean"] - base[f"{m}_mean"] for m in cols}, index=tuned.index))


def metrics_json_blocks(results: list[PairResult], summary: dict) -> dict[str, Any]:
    """`base` and `delta` blocks of reports/metrics.json (numeric, nulls left out), in the shape of the
    fine-tuned ones: overall, by_category, pairs."""
    num = pairs_columns(results).set_index("pair")
    cats = list(dict.fromkeys(r.category for r in results))
    ob, od = overall_floor(results, summary)
    groups = {c: [r.pair for r in results if r.category == c] for c in cats}
    cb, cd = _group_floor(results, summary, groups, "by_category")

    def means(stats: dict[str, dict]) -> dict[str, float]:
        return {m: s["mean"] for m, s in stats.items() if _num(s.get("mean")) is not None}

    def pair_block(suffix: str) -> dict[str, dict[str, float]]:
        return {p: {m: float(v) for m in METRICS if (v := _num(num.loc[p, f"{m}_{suffix}"])) is not None}
                for p in num.index}

    base_pairs = pair_block("base_mean")
    for r in results:
        base_pairs[r.pair]["n_samples"] = r.base.n_samples
    return {"base": {"overall": means(ob), "by_category": {c: means(cb[c]) for c in cats}, "pairs": base_pairs},
            "delta": {"overall": means(od), "by_category": {c: means(cd[c]) for c in cats},
                      "pairs": pair_block("delta")}}


def compare_frames(per_pair: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{metric: long table} for the DVC plots in reports/compare/: per pair a fine-tuned row and a
    base row (`row` = '<pair>' / '<pair> · base'), columns row, pair, model, mean, std."""
    out = {}
    for m in COMPARE:
        rows = []
        for _, r in per_pair.iterrows():
            rows.append({"row": r["pair"], "pair": r["pair"], "model": "fine-tuned",
                         "mean": r[f"{m}_mean"], "std": r[f"{m}_std"]})
            rows.append({"row": f"{r['pair']} · base", "pair": r["pair"], "model": "base",
                         "mean": r[f"{m}_base_mean"], "std": r[f"{m}_base_std"]})
        out[m] = pd.DataFrame(rows, columns=["row", "pair", "model", "mean", "std"])
    return out


def fmt_delta(value: Any, digits: int = 3) -> str:
    """'Δ +0.013' / 'Δ −0.013' (a real minus sign) / 'Δ 0.000' (zero at the shown precision); '' when missing."""
    v = _num(value)
    if v is None:
        return ""
    if round(v, digits) == 0:
        return f"Δ {0:.{digits}f}"
    sign = "+" if v > 0 else "−"
    return f"Δ {sign}{abs(v):.{digits}f}"


def verdict(metric: str, value: Any, digits: int = 3) -> str:
    """'better' / 'worse' / 'same' (at the shown precision) for a Δ of `metric`; '' when missing."""
    v = _num(value)
    if v is None or metric not in HIGHER_IS_BETTER:
        return ""
    if round(v, digits) == 0:
        return "same"
    return "better" if (v > 0) == HIGHER_IS_BETTER[metric] else "worse"


def interleave(main: pd.DataFrame, floor: Floor) -> pd.DataFrame:
    """Markdown rows: each row of `main` with its Δ appended to each metric cell ('0.12 ± 0.01 (Δ +0.01)'),
    then a '↳ base model' row with the floor; non-metric columns of the base row are left blank."""
    rows, index = [], []
    for idx, row in main.iterrows():
        tuned = {}
        for c, v in row.items():
            d = fmt_delta(floor.delta.at[idx, c]) if c in floor.delta.columns and idx in floor.delta.index else ""
            tuned[c] = f"{v} ({d})" if d and v != "–" else v
        rows.append(tuned)
        index.append(idx)
        if idx in floor.base.index:
            rows.append({c: floor.base.at[idx, c] if c in floor.base.columns else "" for c in main.columns})
            index.append(BASE_LABEL)
    return pd.DataFrame(rows, index=index, columns=main.columns)
