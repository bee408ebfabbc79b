"""Report plots (PNG): metric bars, loss curves, metric by prompt kind (the sample grids: dreamsolo.grids).

Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dreamsolo.files import atomic_file
from dreamsolo.grids import WARN_RED
from dreamsolo.report.tables import LABELS, METRICS, REFERENCE, SAMPLE_METRICS

CATEGORY_COLORS = {"object": "#4C72B0", "animal": "#DD8452", "human": "#55A868"}
STAGE_COLORS = {"scene": "#4C72B0", "instance": "#C44E52"}
BASE_MARK = {"marker": "o", "s": 42, "facecolors": "white", "edgecolors": "black", "linewidths": 1.6, "zorder": 4}
"""The floor (base model, no fine-tuning) in bar plots: a hollow circle at the base mean."""


def _base_handle() -> Line2D:
    return Line2D([], [], ls="none", marker="o", markersize=7, markerfacecolor="white", markeredgecolor="black",
                  markeredgewidth=1.6, label="base model, no fine-tuning (floor)")


def metric_bars(per_pair: pd.DataFrame, path: Path, warning: str | None = None) -> Path:
    """One subplot per metric; a bar per pair (coloured by category) with ±std error bars; a hollow
    circle per pair at the base model's mean (`per_pair`'s <metric>_base_mean columns: the floor)."""
    fig, axes = _grid(len(METRICS), ncols=4, cell=(3.6, 3.0))
    colors = [CATEGORY_COLORS.get(c, "#8172B3") for c in per_pair["category"]]
    x = range(len(per_pair))
    for ax, m in zip(axes, METRICS):
        ax.bar(x, per_pair[f"{m}_mean"].fillna(0), yerr=per_pair[f"{m}_std"].fillna(0),
               color=colors, capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.scatter(list(x), per_pair[f"{m}_base_mean"], **BASE_MARK)
        if m in REFERENCE:
            ax.axhline(REFERENCE[m], ls="--", lw=1, color="#555")
        ax.set_title(LABELS[m], fontsize=10)
        ax.set_xticks(list(x), per_pair["pair"], rotation=45, ha="right", fontsize=7)
        _tidy(ax)
    handles = [Patch(color=c, label=k) for k, c in CATEGORY_COLORS.items()]
    handles.append(Line2D([], [], ls="--", lw=1, color="#555", label="DreamBooth (SD) reference, context"))
    handles.append(_base_handle())
    fig.legend(handles=handles, loc="lower right", bbox_to_anchor=(0.98, 0.12), fontsize=9, frameon=False)
    return _save(fig, path, "Per-pair metrics (mean ± std over samples)", warning)


def loss_curves(logs: dict[str, dict[str, pd.DataFrame | None]], path: Path,
                warning: str | None = None) -> Path:
    """Subplot per pair: Stage I (scene) then Stage II (instance) total loss on one step axis."""
    fig, axes = _grid(max(len(logs), 1), ncols=4, cell=(3.6, 2.6))
    for ax, (pair, stages) in zip(axes, logs.items()):
        offset = 0.0
        for stage in ("scene", "instance"):
            log = stages.get(stage)
            if log is None or log.empty:
                ax.text(0.5, 0.5 if stage == "scene" else 0.35, f"no {stage} train_log.csv",
                        transform=ax.transAxes, ha="center", fontsize=8, color="#777")
                continue
            steps = log["step"] + offset
            ax.plot(steps, log["loss"], lw=1.2, color=STAGE_COLORS[stage])
            if "loss_prior" in log and log["loss_prior"].notna().any():
                ax.plot(steps, log["loss_prior"], lw=0.8, ls=":", color=STAGE_COLORS[stage])
            _eval_points(ax, log, offset, STAGE_COLORS[stage])
            offset = float(steps.max())
            if stage == "scene":
                ax.axvline(offset, color="#999", lw=0.8, ls="--")
        ax.set_title(pair, fontsize=10)
        ax.set_xlabel("optimizer step (Stage I, then II)", fontsize=7)
        _tidy(ax)
    handles = [Line2D([], [], color=STAGE_COLORS[s], lw=lw, ls=ls, label=f"{s} {what}")
               for s in STAGE_COLORS for what, lw, ls in (("loss (total)", 1.2, "-"), ("prior term", 0.8, ":"))]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return _save(fig, path, "Training loss per pair (Stage I scene → Stage II instance)", warning)


def _eval_points(ax: Axes, log: pd.DataFrame, offset: float, color: str) -> None:
    """Evaluations during training (train.eval_every), on a right-hand LPIPS axis: fidelity of the
    stage's prompt to its photo (filled) and class drift (hollow)."""
    if "eval_fidelity" not in log or not log["eval_fidelity"].notna().any():
        return
    ev = log[log["eval_fidelity"].notna()]
    right = getattr(ax, "_dreamsolo_right", None) or ax.twinx()
    ax._dreamsolo_right = right  # one right axis per pair, shared by both stages
    right.plot(ev["step"] + offset, ev["eval_fidelity"], "o-", ms=3, lw=0.8, color=color)
    right.plot(ev["step"] + offset, ev["eval_class_drift"], "o--", ms=3, lw=0.8, mfc="none", color=color)
    right.set_ylabel("LPIPS (evaluations)", fontsize=7)
    right.tick_params(labelsize=7)


def metric_by_kind(by_kind: pd.DataFrame, base: pd.DataFrame, path: Path, warning: str | None = None) -> Path:
    """One subplot per per-sample metric; a bar per prompt kind (all pairs pooled), ±std; a hollow circle
    at the base mean of each kind (`base`: the same table for the base model's samples, the floor)."""
    metrics = [m for m in SAMPLE_METRICS if f"{m}_mean" in by_kind.columns]
    fig, axes = _grid(max(len(metrics), 1), ncols=len(metrics) or 1, cell=(3.2, 3.0))
    for ax, m in zip(axes, metrics):
        ok = by_kind[f"{m}_mean"].notna()
        sub = by_kind[ok]
        ax.bar(range(len(sub)), sub[f"{m}_mean"], yerr=sub[f"{m}_std"].fillna(0), capsize=3,
               color="#8172B3", error_kw={"elinewidth": 1, "ecolor": "#333"})
        ax.scatter(range(len(sub)), base[f"{m}_mean"].reindex(sub.index), **BASE_MARK)
        ax.set_xticks(range(len(sub)), sub.index, rotation=45, ha="right", fontsize=7)
        ax.set_title(LABELS[m], fontsize=10)
        _tidy(ax)
    fig.legend(handles=[_base_handle()], loc="outside lower center", fontsize=8, frameon=False)
    return _save(fig, path, "Metrics by prompt kind (all pairs, mean ± std over samples)", warning)


def read_train_log(path: Path) -> pd.DataFrame | None:
    """reports/train/<pair>/<stage>.csv (a copy of the stage's train_log.csv), or None if absent (the plot then says so)."""
    return pd.read_csv(path) if path.is_file() else None


def _grid(n: int, ncols: int, cell: tuple[float, float]) -> tuple[Figure, list[Axes]]:
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(cell[0] * ncols, cell[1] * nrows + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _tidy(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", color="#eee", lw=0.8)
    ax.set_axisbelow(True)


def _save(fig: Figure, path: Path, title: str, warning: str | None) -> Path:
    """Title on top; the warning (if any) in red right under it, so no plot is read without it."""
    if warning:
        fig.suptitle(f"{title}\n⚠ {warning}", fontsize=12, color=WARN_RED, fontweight="bold")
    else:
        fig.suptitle(title, fontsize=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path
