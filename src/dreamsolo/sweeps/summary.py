"""From a sweep's rows (one per point and pair) to its answers: pooled per-category figures, the best
point per pair and per category under the sweep's rule, and the `by_category` block to paste."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from dreamsolo.config import STAGE_KEYS
from dreamsolo.params import dump_yaml
from dreamsolo.sweeps.collect import METRICS
from dreamsolo.sweeps.spec import Sweep, fmt_value, short_key

SUBJECT, DRIFT = "lpips_instance", "class_drift"


def rule_text(sweep: Sweep) -> str:
    return (f"best = the point with the lowest LPIPS of the <S> prompt's samples to the instance photo "
            f"(subject fidelity) among the points whose class drift (LPIPS of the class prompt's samples to "
            f"the base model's, same seed) is at most {sweep.max_class_drift:g}; if none is, the point with "
            f"the least class drift. Means over samples; a category pools its pairs' samples.")


def pooled(group: pd.DataFrame, metric: str) -> tuple[float | None, float | None, int]:
    """Mean and sample std over all samples of the group's pairs, from each pair's mean, std and n."""
    g = group[[metric, f"{metric}_std", f"{metric}_n"]].dropna()
    g = g[g[f"{metric}_n"] > 0]
    n = int(g[f"{metric}_n"].sum())
    if n == 0:
        return None, None, 0
    mean = float((g[metric] * g[f"{metric}_n"]).sum() / n)
    ss = ((g[f"{metric}_n"] - 1) * g[f"{metric}_std"] ** 2 + g[f"{metric}_n"] * (g[metric] - mean) ** 2).sum()
    return mean, (math.sqrt(float(ss) / (n - 1)) if n > 1 else 0.0), n


def by_category(df: pd.DataFrame, sweep: Sweep) -> pd.DataFrame:
    """One row per (point, category): the swept settings and each metric pooled over the category."""
    rows = []
    for (point, cat), group in df.groupby(["point", "category"], sort=False):
        row: dict[str, Any] = {"point": point, "label": group["label"].iloc[0], "category": cat,
                               "pairs": len(group), **{k: group[k].iloc[0] for k in sweep.keys}}
        for m in METRICS:
            row[m.name], row[f"{m.name}_std"], row[f"{m.name}_n"] = pooled(group, m.name)
            row[f"{m.name}_random"] = bool(group[f"{m.name}_random"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def pick(table: pd.DataFrame, sweep: Sweep) -> tuple[pd.Series, bool]:
    """The best row of one pair's or category's points (the baseline excluded): (row, within bound)."""
    points = table[table["point"] != "baseline"].dropna(subset=[SUBJECT, DRIFT])
    if points.empty:
        raise ValueError("no finished point has both LPIPS to the instance and class drift")
    ok = points[points[DRIFT] <= sweep.max_class_drift]
    if ok.empty:
        return points.loc[points[DRIFT].idxmin()], False
    return ok.loc[ok[SUBJECT].idxmin()], True


def best(df: pd.DataFrame, cats: pd.DataFrame, sweep: Sweep) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {"category": {}, "pair": {}}
    for scope, table, col in (("category", cats, "category"), ("pair", df, "pair")):
        for key, group in table.groupby(col, sort=False):
            row, within = pick(group, sweep)
            out[scope][str(key)] = {"point": row["point"], "label": row["label"], "within_bound": within,
                                    "settings": {k: _plain(row[k]) for k in sweep.keys},
                                    SUBJECT: _plain(row[SUBJECT]), DRIFT: _plain(row[DRIFT])}
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def stage_field(key: str) -> tuple[tuple[str, ...], str] | None:
    """(training stages, field) a swept key sets, or None for a study-wide key (sampling, priors...)."""
    parts = key.split(".")
    if parts[0] == "train" and len(parts) == 2:
        return STAGE_KEYS, parts[1]
    stages = tuple(s for s in STAGE_KEYS if s in parts)
    return (stages, parts[-1]) if stages and len(parts) >= 3 else None


def category_block(raw: dict, sweep: Sweep, chosen: dict[str, dict[str, Any]]) -> str:
    """YAML to paste over params.yaml's train_<stage>.by_category: each swept category's best settings
    over what params.yaml has there now; categories the sweep did not run are left as they are."""
    block: dict[str, Any] = {}
    for stage in STAGE_KEYS:
        current = {c: dict(v or {}) for c, v in (raw[stage]["by_category"] or {}).items()}
        touched = False
        for cat, best_row in chosen.items():
            for key, value in best_row["settings"].items():
                sf = stage_field(key)
                if sf and stage in sf[0]:
                    current.setdefault(cat, {})[sf[1]] = value
                    touched = True
        if touched:
            block[stage] = {"by_category": current}
    if not block:
        return "# no swept key is a training setting: nothing to set per category\n"
    head = f"# sweep {sweep.name}: the best point per category ({', '.join(chosen)}), by the rule above\n"
    return head + dump_yaml(block)


def study_wide(sweep: Sweep) -> list[str]:
    return [k for k in sweep.keys if stage_field(k) is None]


def fmt(mean: Any, std: Any = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None and not (isinstance(std, float) and math.isnan(std)) else "")


def table_rows(table: pd.DataFrame, sweep: Sweep, metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a points × metrics table (mean ± std over samples)."""
    header = ["point", *(short_key(k) for k in sweep.keys), *metrics]
    cells = []
    for _, r in table.iterrows():
        cells.append([str(r["point"]), *(fmt_value(_plain(r[k])) for k in sweep.keys),
                      *(fmt(_plain(r[m]), _plain(r[f"{m}_std"])) for m in metrics)])
    return header, cells


def directions(cats: pd.DataFrame, sweep: Sweep, metrics: tuple[str, ...] = (SUBJECT, DRIFT)) -> list[list[str]]:
    """Per numeric swept key and category: each metric at the key's lowest and highest value (mean over
    the points there: a marginal over the other keys) and the change between them."""
    rows = []
    points = cats[cats["point"] != "baseline"]
    for key in sweep.keys:
        values = [v for v in points[key].dropna().unique() if pd.api.types.is_number(v) and not pd.api.types.is_bool(v)]
        if len(values) < 2:
            continue
        lo, hi = min(values), max(values)
        for cat, g in points.groupby("category", sort=False):
            for m in metrics:
                a, b = g[g[key] == lo][m].mean(), g[g[key] == hi][m].mean()
                word = "closer" if m == SUBJECT else "further from the base"
                moved = (b < a) if m == SUBJECT else (b > a)
                rows.append([short_key(key), str(cat), m, f"{fmt_value(_plain(lo))} → {fmt_value(_plain(hi))}",
                             f"{a:.3f} → {b:.3f}", f"{b - a:+.3f}", word if moved else "no"])
    return rows
