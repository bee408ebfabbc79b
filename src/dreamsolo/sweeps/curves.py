"""The sweep report's figures: each metric against each swept key, and the fidelity / drift trade-off."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dreamsolo.sweeps.collect import BY_NAME  # noqa: E402
from dreamsolo.sweeps.spec import Sweep, fmt_value, short_key  # noqa: E402
from dreamsolo.sweeps.summary import DRIFT, SUBJECT, _plain, pooled  # noqa: E402

CURVES = ("lpips_instance", "class_drift", "scene_kept", "composed_instance", "clip_t")
COLORS = {"object": "tab:blue", "animal": "tab:orange", "human": "tab:green"}


def _numeric(values: pd.Series) -> bool:
    return all(pd.api.types.is_number(v) and not pd.api.types.is_bool(v) for v in values)


def metric_curves(df: pd.DataFrame, sweep: Sweep, key: str, out: Path) -> Path:
    """One panel per metric: its mean against `key` (averaged over the other swept keys' values: a
    marginal), one line per category (pooled samples, ± std) and a faint line per pair."""
    points = df[df["point"] != "baseline"]
    xs = sorted(points[key].dropna().unique(), key=lambda v: (str(type(v)), v))
    pos = {v: (v if _numeric(pd.Series(xs)) else i) for i, v in enumerate(xs)}
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.4 * len(CURVES), 3.2), squeeze=False)
    for ax, name in zip(axes[0], CURVES):
        m = BY_NAME[name]
        for pair, g in points.groupby("pair", sort=False):
            ys = [g[g[key] == v][name].mean() for v in xs]
            ax.plot([pos[v] for v in xs], ys, color=COLORS.get(g["category"].iloc[0], "grey"), alpha=0.25, lw=1)
        for cat, g in points.groupby("category", sort=False):
            stats = [pooled(g[g[key] == v], name) for v in xs]
            ax.errorbar([pos[v] for v in xs], [s[0] for s in stats], yerr=[s[1] or 0 for s in stats],
                        color=COLORS.get(cat, "black"), marker="o", capsize=3, lw=2, label=cat)
        random = bool(df[f"{name}_random"].any())
        ax.set_title(f"{name}{' (random evaluator)' if random else ''}", fontsize=9,
                     color="darkred" if random else "black")
        ax.set_xlabel(short_key(key))
        ax.set_ylabel(("lower" if m.lower_is_better else "higher") + " = better", fontsize=8)
        if _numeric(pd.Series(xs)) and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) > 8:
            ax.set_xscale("log")
        ax.set_xticks(list(pos.values()), [fmt_value(_plain(v)) for v in xs])  # the swept values, nothing else
        ax.minorticks_off()
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"sweep {sweep.name}: metrics against {key} (mean ± std over samples; faint: pairs)", fontsize=10)
    fig.tight_layout()
    path = out / f"metrics_vs_{short_key(key)}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def tradeoff(df: pd.DataFrame, sweep: Sweep, out: Path) -> Path:
    """Subject fidelity against prior drift and against prompt fidelity: one dot per point and pair."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, y in zip(axes, (DRIFT, "clip_t")):
        for cat, g in df.groupby("category", sort=False):
            pts, base = g[g["point"] != "baseline"], g[g["point"] == "baseline"]
            ax.scatter(pts[SUBJECT], pts[y], color=COLORS.get(cat, "grey"), s=18, alpha=0.8, label=cat)
            ax.scatter(base[SUBJECT], base[y], color=COLORS.get(cat, "grey"), marker="*", s=120, edgecolor="black")
        random = bool(df[f"{y}_random"].any())
        ax.set_xlabel(f"{SUBJECT} (<S> prompt to the instance; lower = closer)")
        ax.set_ylabel(f"{y}{' (random evaluator)' if random else ''}")
        if y == DRIFT:
            ax.axhline(sweep.max_class_drift, color="grey", ls="--", lw=1)
            ax.text(ax.get_xlim()[0], sweep.max_class_drift, " rule's bound", va="bottom", fontsize=8, color="grey")
    axes[0].legend(fontsize=8, title="★ = baseline")
    fig.suptitle(f"sweep {sweep.name}: subject fidelity against prior drift and prompt fidelity", fontsize=10)
    fig.tight_layout()
    path = out / "tradeoff.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
