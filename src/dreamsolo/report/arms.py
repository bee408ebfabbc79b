"""The report's "Arms against the method" section: each arm's numbers beside the method's and the floor's,
arm minus method per pair and overall with bootstrap 95 % intervals (metrics.paired), wins / ties / losses,
and a forest plot. The same numbers go to reports/metrics.json (`arms`) and the report's MLflow run."""

from __future__ import annotations

import html as _html
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dreamsolo.files import atomic_file
from dreamsolo.layout import arm_csv
from dreamsolo.metrics import paired

# The study's own train_scene -> train_instance stages, as params.yaml sets them (on the toy preset:
# Stage II with scene replay, weight 2: the two_stage_replay arm)
METHOD = "method"
VERDICT = {"win": "▲", "tie": "·", "loss": "▼"}


def read_arm(root: Path, arm: str, pairs: list[str]) -> pd.DataFrame:
    frames = []
    for pair in pairs:
        path = arm_csv(root, pair, arm)
        if not path.is_file():
            raise FileNotFoundError(f"{path.relative_to(root)}: missing; run evaluate_arm@{pair}-{arm}")
        frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def compute(root: Path, arms: list[str], method_rows: pd.DataFrame, base_rows: pd.DataFrame, pairs: list[str],
            method: str, random_evaluators: list[str]) -> dict:
    """The `arms` block of reports/metrics.json."""
    values = {method: paired.arm_values(method_rows, pairs), "base": paired.arm_values(base_rows, pairs)}
    compared = {}
    for arm in arms:
        rows = read_arm(root, arm, pairs)
        values[arm] = paired.arm_values(rows, pairs)
        compared[arm] = paired.compare_arm(arm, rows, method_rows, pairs)
    return {"method": method, "arms": list(arms), "values": values, "vs_method": compared,
            "comparisons": {c.name: {"label": c.label, "kinds": list(c.kinds), "column": c.column,
                                     "lower_is_better": c.lower_is_better, "evaluator": c.evaluator,
                                     "random": c.evaluator in random_evaluators} for c in paired.COMPARISONS},
            "bootstrap": {"resamples": paired.RESAMPLES, "level": paired.LEVEL, "seed": 0,
                          "unit": "samples, paired by prompt and seed; overall: stratified by pair, mean of pair means"}}


def _names(block: dict) -> list[str]:
    return [n for n in block["comparisons"] if any(n in v for v in block["values"].values())]


def _label(block: dict, name: str) -> str:
    c = block["comparisons"][name]
    return c["label"] + (" (random)" if c["random"] else "")


def values_rows(block: dict) -> list[list[str]]:
    """Header + one row per arm (method first, the floor last): mean over pairs of each comparison's metric."""
    names = _names(block)
    order = [block["method"], *block["arms"], "base"]
    out = [["arm", *[_label(block, n) for n in names]]]
    for arm in order:
        v = block["values"][arm]
        out.append([arm, *[f"{v[n]:.3f}" if n in v else "–" for n in names]])
    return out


def delta_rows(block: dict) -> list[list[str]]:
    """Header + one row per (arm, comparison): Δ overall [95 % CI], W/T/L over pairs, then each pair's Δ."""
    pairs = list(dict.fromkeys(p for a in block["vs_method"].values() for c in a.values() for p in c["pairs"]))
    out = [["arm − method", "comparison", "Δ [95 % CI]", "wins / ties / losses", *pairs]]
    for arm, comps in block["vs_method"].items():
        for name, c in comps.items():
            o = c["overall"]
            cells = [f"{c['pairs'][p]['delta']:+.3f} {VERDICT[c['pairs'][p]['verdict']]}" if p in c["pairs"] else "–"
                     for p in pairs]
            out.append([arm, _label(block, name), f"{o['delta']:+.3f} [{o['ci'][0]:+.3f}, {o['ci'][1]:+.3f}]",
                        f"{o['wins']} / {o['ties']} / {o['losses']}", *cells])
    return out


NOTE = ("Δ = arm − method on the same pairs, prompts and seeds; 95 % percentile bootstrap interval over samples "
        "(per pair: its paired differences; overall: stratified by pair, the mean of the pair means), "
        f"{paired.RESAMPLES} resamples, seeded. ▲ win / ▼ loss: the pair's interval lies wholly on the better / "
        "worse side of 0 (↓: lower is better); · tie otherwise. \"(random)\": that evaluator is randomly initialised "
        "in this run, so its numbers are not meaningful.")


def _md(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join("---" for _ in rows[0]) + " |"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def markdown(block: dict) -> str:
    return (f"## Arms against the method ({block['method']})\n\n{_md(values_rows(block))}\n\n"
            f"Mean over pairs of each pair's mean; `base` is the floor.\n\n{_md(delta_rows(block))}\n\n{NOTE}\n\n"
            "![forest plot](plots/arms_forest.png)\n")


def html_section(block: dict) -> str:
    esc = _html.escape

    def table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    return (f'<h2 id="arms">Arms against the method <span class="tag">{esc(block["method"])}, paired bootstrap</span></h2>'
            f"{table(values_rows(block))}<p class=\"note\">Mean over pairs of each pair's mean; base is the floor.</p>"
            f"{table(delta_rows(block))}<p class=\"note\">{esc(NOTE)}</p>"
            '<figure><img src="plots/arms_forest.png" alt="forest plot of arm minus method"><figcaption>'
            "Arm − method per comparison: overall Δ with its 95 % interval (bar), each pair's Δ (dots)"
            "</figcaption></figure>")


def forest_plot(block: dict, path: Path, warning: str | None = None) -> Path:
    """One panel per comparison; a row per arm: overall Δ and its interval, the pairs' Δ as dots, 0 marked."""
    names = [n for n in block["comparisons"] if any(n in c for c in block["vs_method"].values())]
    arms = list(block["vs_method"])
    ncols = min(5, max(1, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.3 * ncols, 0.5 * len(arms) * nrows + 1.3 * nrows + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes, names):
        for y, arm in enumerate(arms):
            c = block["vs_method"][arm].get(name)
            if not c:
                continue
            o = c["overall"]
            color = {"win": "#2e7d32", "loss": "#c62828", "tie": "#555555"}[o["verdict"]]
            ax.plot(o["ci"], [y, y], color=color, lw=2.2)
            ax.plot([o["delta"]], [y], "o", color=color, ms=6)
            ax.plot([p["delta"] for p in c["pairs"].values()], [y + 0.22] * len(c["pairs"]), ".", color="#999", ms=4)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(arms)), arms, fontsize=7)
        ax.set_ylim(-0.6, len(arms) - 0.3)
        ax.invert_yaxis()
        ax.set_title(_label(block, name), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    title = f"Arms − method ({block['method']}): Δ and bootstrap 95 % interval; green = win, red = loss"
    fig.suptitle(f"{title}\n⚠ {warning}" if warning else title, fontsize=11,
                 color="#c62828" if warning else "black")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    return path


def mlflow_metrics(block: dict) -> dict[str, float]:
    """The same numbers flat: arm_<arm>_<comparison>_{delta,ci_low,ci_high,wins,ties,losses}."""
    out = {}
    for arm, comps in block["vs_method"].items():
        for name, c in comps.items():
            o = c["overall"]
            key = f"arm_{arm}_{name}"
            out.update({f"{key}_delta": o["delta"], f"{key}_ci_low": o["ci"][0], f"{key}_ci_high": o["ci"][1],
                        f"{key}_wins": float(o["wins"]), f"{key}_ties": float(o["ties"]),
                        f"{key}_losses": float(o["losses"])})
    return out
