"""reports/sweeps/<name>/: index.md, index.html, results.csv, best.json, by_category.yaml and the
figures; one MLflow run (`sweep_report@<name>`) holds them, with the rows as a table."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from dreamsolo.files import atomic_dir
from dreamsolo.params import read_yaml
from dreamsolo.sweeps import curves
from dreamsolo.sweeps.collect import METRICS, baseline_stale, collect, collect_samples, queued_elsewhere
from dreamsolo.sweeps.spec import Sweep
from dreamsolo.sweeps.summary import (best, by_category, category_block, directions, rule_text, study_wide,
                                      table_rows)

SHOWN = ["lpips_instance", "class_drift", "scene_kept", "composed_instance", "dino", "clip_t"]


def sweep_dir(root: Path, name: str) -> Path:
    return root / "reports" / "sweeps" / name


def _md_table(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"


def _html_table(header: list[str], cells: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f"<table><tr>{head}</tr>{body}</table>"


def _best_cells(chosen: dict[str, dict]) -> list[list[str]]:
    return [[k, v["label"], v["point"], f"{v['lpips_instance']:.3f}", f"{v['class_drift']:.3f}",
             "yes" if v["within_bound"] else "no: least drift instead"] for k, v in chosen.items()]


def _sections(df: pd.DataFrame, cats: pd.DataFrame, sweep: Sweep, chosen: dict, block: str,
              missing: list[str], figures: list[Path], stale: str | None = None) -> list[tuple[str, str, object]]:
    """(kind, title, payload) in page order; both writers render the same list."""
    random = [m.name for m in METRICS if df[f"{m.name}_random"].any()]
    out: list[tuple[str, str, object]] = [("p", "", sweep.description or f"sweep {sweep.name}")]
    out.append(("p", "", f"{len(sweep.points) - len(missing)} of {len(sweep.points)} points finished; "
                         f"pairs: {', '.join(sweep.pairs)}; swept: {', '.join(sweep.keys)}."))
    if missing:
        out.append(("warn", "", f"not finished yet (rerun `dreamsolo sweep {sweep.name}`): {', '.join(missing)}"))
    if stale:
        out.append(("warn", "", f"no baseline row: the results committed at HEAD are not its params' ({stale})"))
    if random:
        out.append(("warn", "", "random evaluators, numbers not meaningful: " + ", ".join(random)
                    + " (the LPIPS columns and class drift use the pretrained LPIPS)"))
    out.append(("p", "Rule", rule_text(sweep)))
    hb = ["", "best point", "experiment", "lpips_instance", "class_drift", "within the bound"]
    out.append(("table", "Best per category", (["category", *hb[1:]], _best_cells(chosen["category"]))))
    out.append(("table", "Best per pair", (["pair", *hb[1:]], _best_cells(chosen["pair"]))))
    dirs = directions(cats, sweep)
    if dirs:
        out.append(("table", "Directions: the lowest against the highest value of each key",
                    (["key", "category", "metric", "value", "mean", "change", "moved"], dirs)))
    out.append(("pre", "by_category block for params.yaml", block))
    wide = study_wide(sweep)
    if wide:
        out.append(("p", "", f"study-wide keys ({', '.join(wide)}) are not per category: set them in their "
                             "own section from the table below."))
    for f in figures:
        out.append(("img", "", f.name))
    for cat, g in cats.groupby("category", sort=False):
        out.append(("table", f"Category {cat} (pooled over {g['pairs'].iloc[0]} pair(s))", table_rows(g, sweep, SHOWN)))
    for pair, g in df.groupby("pair", sort=False):
        out.append(("table", f"Pair {pair}", table_rows(g, sweep, SHOWN)))
    return out


def _markdown(title: str, sections: list) -> str:
    parts = [f"# {title}\n"]
    for kind, head, payload in sections:
        if head:
            parts.append(f"## {head}\n")
        if kind == "table":
            parts.append(_md_table(*payload))
        elif kind == "pre":
            parts.append(f"```yaml\n{payload}```\n")
        elif kind == "img":
            parts.append(f"![{payload}]({payload})\n")
        else:
            parts.append(("**" + str(payload) + "**\n") if kind == "warn" else f"{payload}\n")
    return "\n".join(parts)


def _html(title: str, sections: list) -> str:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}.warn{color:#a00;font-weight:bold}"
             "img{max-width:100%}</style>", f"<h1>{html.escape(title)}</h1>"]
    for kind, head, payload in sections:
        if head:
            parts.append(f"<h2>{html.escape(head)}</h2>")
        if kind == "table":
            parts.append(_html_table(*payload))
        elif kind == "pre":
            parts.append(f"<pre>{html.escape(str(payload))}</pre>")
        elif kind == "img":
            parts.append(f"<img src='{html.escape(str(payload))}' alt='{html.escape(str(payload))}'>")
        else:
            parts.append(f"<p class='{kind}'>{html.escape(str(payload))}</p>")
    return "\n".join(parts)


def no_points(root: Path, name: str) -> str:
    """Why there is nothing to report: no point run yet, or its points belong to another commit."""
    elsewhere = queued_elsewhere(root, name)
    if not elsewhere:
        return f"sweep {name}: no finished point yet (run `dreamsolo sweep {name}`)"
    where = ", ".join(f"{n} on {sha}" for sha, n in elsewhere.items())
    return (f"sweep {name}: no finished point on this commit; its points were run on another ({where}): "
            f"check that commit out with a clean tree and run `dreamsolo sweep {name} --report-only`, "
            "or rerun the sweep here")


def write_report(root: Path, sweep: Sweep, log: bool = True) -> Path:
    """Read the finished points from DVC, write the folder atomically, log it to MLflow."""
    stale = baseline_stale(root, sweep)  # then HEAD's committed numbers are not the baseline's: left out
    df, missing = collect(root, sweep, baseline=stale is None)
    if df.empty or not (df["point"] != "baseline").any():  # empty: no baseline row either (a dirty work tree)
        raise ValueError(no_points(root, sweep.name))
    cats = by_category(df, sweep)
    chosen = best(df, cats, sweep)
    block = category_block(read_yaml(root / "params.yaml"), sweep, chosen["category"])
    title = f"Sweep {sweep.name}"
    dest = sweep_dir(root, sweep.name)
    with atomic_dir(dest) as tmp:
        figures = [curves.metric_curves(df, sweep, k, tmp) for k in sweep.keys] + [curves.tradeoff(df, sweep, tmp)]
        sections = _sections(df, cats, sweep, chosen, block, missing, figures, stale)
        (tmp / "index.md").write_text(_markdown(title, sections))
        (tmp / "index.html").write_text(_html(title, sections))
        df.to_csv(tmp / "results.csv", index=False)
        samples = collect_samples(root, sweep, baseline=stale is None)  # per seed: the findings page
        samples.to_csv(tmp / "samples.csv", index=False)
        (tmp / "best.json").write_text(json.dumps({"rule": rule_text(sweep), **chosen, "missing": missing},
                                                  indent=2, default=str) + "\n")
        (tmp / "by_category.yaml").write_text(block)
    if log:
        _log(root, sweep, df, dest, chosen)
    return dest


def _log(root: Path, sweep: Sweep, df: pd.DataFrame, dest: Path, chosen: dict) -> None:
    from dreamsolo.tracking import stage_run

    params = {"sweep": sweep.name, "keys": list(sweep.keys), "pairs": list(sweep.pairs),
              "points": len(sweep.points), "max_class_drift": sweep.max_class_drift}
    with stage_run(root, "sweep_report", params, item=sweep.name) as run:
        run.tags({"sweep": sweep.name})
        run.table(df, "sweep_results.json")
        run.artifact(dest, f"sweeps/{sweep.name}")
        run.dict(chosen, "best.json")
        for cat, b in chosen["category"].items():
            run.metrics({f"best_{cat}_lpips_instance": b["lpips_instance"], f"best_{cat}_class_drift": b["class_drift"]})
