"""Study tables: read the per-pair results written by `evaluate`, shape them, write csv/md/json.

Inputs (docs/FORMATS.md): reports/pairs/<pair>.json (read as `PairResult`s) and reports/pairs/<pair>.csv
(one row per sample). Numbers are copied, never recomputed, where the metrics team already
aggregated them, so metrics.json, pairs.csv and MLflow show the same values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dreamsolo.layout import check_id, pair_csv, pair_json
from dreamsolo.metrics import NOT_PRETRAINED_WARNING
from dreamsolo.metrics.pair_result import PairResult, Scores, Stat

# Study metrics, in table order. Per-sample ones are columns of reports/pairs/<pair>.csv.
METRICS = ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene", "clip_i_scene", "dino_scene", "div", "pres")
SAMPLE_METRICS = ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene", "clip_i_scene", "dino_scene")
LABELS = {
    "clip_t": "CLIP-T ↑", "clip_i": "CLIP-I ↑", "dino": "DINO ↑",
    "lpips_instance": "LPIPS inst ↓", "lpips_scene": "LPIPS scene ↓",
    "clip_i_scene": "CLIP-I scene ↑", "dino_scene": "DINO scene ↑",
    "div": "DIV ↑", "pres": "PRES ↓",
}
KINDS = ("composed", "recontext", "scene", "instance", "class_instance", "class_scene")
CATEGORIES = ("object", "animal", "human")
REFERENCE = {"clip_t": 0.305, "clip_i": 0.803, "dino": 0.668}
REFERENCE_LABEL = "DreamBooth (Stable Diffusion), multi-image, DreamBench"
REFERENCE_NOTE = "context only: multi-image training, other subjects and prompts; not comparable 1:1"


def read_results(root: Path, pair_ids: list[str]) -> list[PairResult]:
    """Every pair's reports/pairs/<pair>.json, in the given order."""
    return [read_pair_json(root, check_id("pair", pid)) for pid in pair_ids]


def read_pair_json(root: Path, pair_id: str) -> PairResult:
    path = pair_json(root, pair_id)
    where = path.relative_to(root.resolve())  # errors name the file as docs/FORMATS.md does
    if not path.is_file():
        raise FileNotFoundError(f"{where}: missing; run the evaluate stage for pair {pair_id!r}")
    result = PairResult.from_json(json.loads(path.read_text()), where)
    if result.pair != pair_id:
        raise ValueError(f"{where}: says pair {result.pair!r}, expected {pair_id!r}")
    return result


def read_samples(root: Path, results: list[PairResult], base: bool = False) -> pd.DataFrame:
    """Every pair's per-sample CSV (reports/pairs/ or, with `base`, reports/pairs_base/), concatenated."""
    frames = [read_pair_csv(root, r.pair, base) for r in results]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_pair_csv(root: Path, pair_id: str, base: bool = False) -> pd.DataFrame:
    path = pair_csv(root, pair_id, base=base)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the evaluate stage for pair {pair_id!r}")
    df = pd.read_csv(path)
    if "pair" not in df.columns:
        df.insert(0, "pair", pair_id)
    return df


def is_pretrained(results: list[PairResult], study_summary: dict) -> bool:
    """True only if the study and every pair say their evaluators were pretrained."""
    flags = [bool(study_summary.get("evaluators_pretrained", False))]
    flags += [r.evaluators_pretrained for r in results]
    return all(flags)


def warning_text(results: list[PairResult], study_summary: dict) -> str | None:
    """The warning to print everywhere, or None when all evaluators were pretrained."""
    if is_pretrained(results, study_summary):
        return None
    found = [study_summary.get("warning")] + [r.warning for r in results]
    return next((w for w in found if isinstance(w, str) and w.strip()), NOT_PRETRAINED_WARNING)


def pair_stat(scores: Scores, metric: str) -> Stat | None:
    """One metric's summary of one model on one pair, or None where it has no finite mean."""
    stat = scores.stat(metric)
    return stat if stat is not None and _num(stat.mean) is not None else None


def scores_numeric(rows: list[tuple[str, str, Scores]]) -> pd.DataFrame:
    """Rows = (pair, category, scores); columns category, n_samples, <metric>_mean, <metric>_std (NaN when absent)."""
    out = []
    for pair, category, scores in rows:
        row: dict[str, Any] = {"pair": pair, "category": category, "n_samples": scores.n_samples}
        for m in METRICS:
            s = pair_stat(scores, m)
            row[f"{m}_mean"] = None if s is None else _num(s.mean)
            row[f"{m}_std"] = None if s is None else _num(s.std)
        out.append(row)
    cols = ["pair", "category", "n_samples"] + [f"{m}_{k}" for m in METRICS for k in ("mean", "std")]
    return pd.DataFrame(out, columns=cols).astype({c: float for c in cols[3:]})


def pairs_numeric(results: list[PairResult], base: bool = False) -> pd.DataFrame:
    """`scores_numeric` of the fine-tuned scores, or with `base` of the floor."""
    return scores_numeric([(r.pair, r.category, r.base if base else r.tuned) for r in results])


def pairs_table(results: list[PairResult]) -> pd.DataFrame:
    """Display table: rows = pairs (index), columns category + 'mean ± std' per metric."""
    num = pairs_numeric(results).set_index("pair")
    out = pd.DataFrame({"category": num["category"]})
    for m in METRICS:
        out[m] = [fmt(a, b) for a, b in zip(num[f"{m}_mean"], num[f"{m}_std"])]
    return out


def category_table(results: list[PairResult], study_summary: dict | None = None) -> pd.DataFrame:
    """Rows = categories: the metrics team's by_category stats where given, else mean ± std of pair means
    (the same definition: every pair weighs the same, the spread is between pairs)."""
    given = (study_summary or {}).get("by_category", {}) or {}
    num = pairs_numeric(results)
    cats = [c for c in CATEGORIES if c in set(num["category"]) | set(given)]
    cats += sorted((set(num["category"]) | set(given)) - set(cats))
    rows = []
    for cat in cats:
        sub = num[num["category"] == cat]
        row = {"category": cat, "pairs": ", ".join(sub["pair"])}
        for m in METRICS:
            s = given.get(cat, {}).get(m)
            if isinstance(s, dict) and _num(s.get("mean")) is not None:
                row[m] = fmt(s.get("mean"), s.get("std"))
            else:
                row[m] = fmt_spread(sub[f"{m}_mean"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["category", "pairs", *METRICS]).set_index("category")


def kind_numeric(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Rows = prompt kinds (study order); columns <metric>_mean/_std/_n over all samples of the study."""
    cols = [m for m in SAMPLE_METRICS if m in per_sample.columns]
    if per_sample.empty or "kind" not in per_sample.columns:
        return pd.DataFrame()
    g = per_sample.groupby("kind")[cols]
    std = g.std(ddof=1).where(g.count() > 1, 0.0)  # sample std like the pair JSON; 0 for one value
    out = pd.concat({"mean": g.mean(), "std": std, "n": g.count()}, axis=1)
    out.columns = [f"{m}_{stat}" for stat, m in out.columns]
    order = [k for k in KINDS if k in out.index] + sorted(set(out.index) - set(KINDS))
    return out.loc[order, [f"{m}_{s}" for m in cols for s in ("mean", "std", "n")]]


def kind_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Display table: rows = prompt kinds, columns 'mean ± std' per per-sample metric (blank if n/a)."""
    num = kind_numeric(per_sample)
    out = pd.DataFrame(index=num.index)
    for m in SAMPLE_METRICS:
        if f"{m}_mean" in num.columns:
            out[m] = [fmt(a, b) for a, b in zip(num[f"{m}_mean"], num[f"{m}_std"])]
    return out


def overall_stats(results: list[PairResult], study_summary: dict) -> dict[str, dict]:
    """Study-level {metric: {'mean','std'}}: the summary's values, else mean ± std of pair means."""
    given = study_summary.get("overall", {}) or {}
    num = pairs_numeric(results)
    out = {}
    for m in METRICS:
        s = given.get(m)
        if isinstance(s, dict) and _num(s.get("mean")) is not None:
            out[m] = {"mean": _num(s["mean"]), "std": _num(s.get("std"))}
        elif num[f"{m}_mean"].notna().any():
            mean, std = spread(num[f"{m}_mean"])
            out[m] = {"mean": mean, "std": std}
    return out


def metrics_json(results: list[PairResult], study_summary: dict) -> dict:
    """The DVC metrics file's fine-tuned part: flat-ish, numeric (NaN omitted), plus a warning string when
    not pretrained (the floor's `base` and `delta` blocks: floor.metrics_json_blocks)."""
    pretrained = is_pretrained(results, study_summary)
    overall = {m: s["mean"] for m, s in overall_stats(results, study_summary).items()}
    pairs = {}
    for r in results:
        means: dict[str, Any] = {m: _num(s.mean) for m in METRICS if (s := pair_stat(r.tuned, m))}
        means["n_samples"] = r.tuned.n_samples
        pairs[r.pair] = means
    by_cat = {}
    for cat, stats in (study_summary.get("by_category", {}) or {}).items():
        vals = {m: _num(s.get("mean")) for m, s in stats.items() if isinstance(s, dict)}
        by_cat[cat] = {m: v for m, v in vals.items() if v is not None}
    out: dict[str, Any] = {"overall": overall, "by_category": by_cat, "pairs": pairs,
                           "evaluators_pretrained": pretrained,
                           "random_metrics": [m for m in METRICS if any(m in r.random_metrics for r in results)]}
    if not pretrained:
        out["warning"] = warning_text(results, study_summary)
    return out


def reference_row() -> dict[str, str]:
    return {m: (f"{REFERENCE[m]:.3f}" if m in REFERENCE else "–") for m in METRICS}


def to_markdown(df: pd.DataFrame, index_name: str | None = None) -> str:
    """A GitHub pipe table (no extra dependency); '|' in cells is escaped."""
    head = [index_name or df.index.name or ""] + [LABELS.get(str(c), str(c)) for c in df.columns]
    lines = ["| " + " | ".join(_md(h) for h in head) + " |", "|" + " --- |" * len(head)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join(_md(v) for v in [idx, *row.tolist()]) + " |")
    return "\n".join(lines) + "\n"


def write_pairs_csv(per_pair: pd.DataFrame, path: Path) -> None:
    from dreamsolo.files import atomic_file

    with atomic_file(path) as tmp:
        per_pair.to_csv(tmp, index=False)  # full precision: the same numbers as metrics.json


def fmt(mean: Any, std: Any = None, digits: int = 3) -> str:
    """'0.123 ± 0.004'; '–' for a missing mean; just the mean when std is missing."""
    m, s = _num(mean), _num(std)
    if m is None:
        return "–"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def spread(values: pd.Series) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1; 0 for a single value) of the finite values, as the metrics team does."""
    vals = values.dropna()
    if not len(vals):
        return None, None
    return float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0


def fmt_spread(values: pd.Series) -> str:
    return fmt(*spread(values))


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _num(value: Any) -> float | None:
    """A finite float, or None (missing, NaN, inf, non-numeric)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def evaluators_text(results: list[PairResult]) -> str:
    """One line naming the networks behind the numbers ("CLIP toy-clip (…) · LPIPS alex (…) · DINO …");
    pairs scored by different evaluators are named per pair."""
    seen: dict[str, list[str]] = {}
    for r in results:
        line = " · ".join(f"{k} {v}" for k, v in r.evaluators.items())
        seen.setdefault(line, []).append(r.pair)
    if len(seen) == 1:
        line = next(iter(seen))
        return f"Evaluators: {line}." if line else ""
    return "Evaluators: " + "; ".join(f"{', '.join(p)}: {line or 'not recorded'}" for line, p in seen.items()) + "."

