"""The study report: tables (csv/md), DVC metrics JSON, plots and a static HTML page under reports/.

Writes reports/{metrics.json, pairs.csv, pairs.md, report.md, index.html}, reports/plots/*.png
(metrics, loss, kinds) and reports/grids/<pair>.png (one sample grid per pair).

build_report() is the one entry point the `report` stage calls; it returns the written artifacts
by name so the caller can log them to MLflow.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from dreamsolo.io import atomic_dir, atomic_file, write_json
from dreamsolo.paths import check_id
from dreamsolo.report import html, plots, tables
from dreamsolo.report.tables import LABELS, METRICS, REFERENCE_LABEL, REFERENCE_NOTE, REFERENCE, fmt

__all__ = ["build_report", "pair_grid"]

PLOT_FILES = {"plot_metrics": "metrics.png", "plot_loss": "loss.png", "plot_kinds": "kinds.png"}
PLOT_CAPTIONS = {
    "plot_metrics": "Per-pair metrics, mean ± std over samples; dashed: DreamBooth reference (context)",
    "plot_loss": "Training loss of both stages per pair (solid: total, dotted: prior term)",
    "plot_kinds": "Metrics by prompt kind, all pairs pooled",
}


def build_report(root: Path, pair_ids: list[str], study_summary: dict) -> dict[str, Path]:
    """Write every report artifact under root/reports and return {name: path}."""
    pair_ids = [check_id("pair", p) for p in pair_ids]
    per_pair, per_sample, pair_dicts = tables.collect(root, pair_ids)
    warning = tables.warning_text(pair_dicts, study_summary)
    overall = tables.overall_stats(pair_dicts, study_summary)
    reports = root / "reports"
    out: dict[str, Path] = {}

    out["pairs_csv"] = reports / "pairs.csv"
    tables.write_pairs_csv(per_pair, out["pairs_csv"])
    out["metrics_json"] = reports / "metrics.json"
    write_json(out["metrics_json"], tables.metrics_json(pair_dicts, study_summary))

    study = tables.pairs_table(pair_dicts)
    categories = tables.category_table(pair_dicts, study_summary)
    kinds_num = tables.kind_numeric(per_sample)
    kinds = tables.kind_table(per_sample)

    prompts: dict[str, tuple[tuple[str, str], ...]] = {}
    with atomic_dir(reports / "plots") as tmp:
        plots.metric_bars(per_pair, tmp / PLOT_FILES["plot_metrics"], warning)
        plots.loss_curves(_train_logs(root, pair_ids), tmp / PLOT_FILES["plot_loss"], warning)
        plots.metric_by_kind(kinds_num, tmp / PLOT_FILES["plot_kinds"], warning)
    out.update({k: reports / "plots" / f for k, f in PLOT_FILES.items()})
    with atomic_dir(reports / "grids") as tmp:
        for d in pair_dicts:
            _, prompts[d["pair"]] = pair_grid(root, d["pair"], tmp / f"{d['pair']}.png",
                                              d.get("category", ""), warning)
    out.update({f"grid_{p}": reports / "grids" / f"{p}.png" for p in pair_ids})

    md_table = tables.to_markdown(_with_context_rows(study, overall), "pair")
    out["pairs_md"] = reports / "pairs.md"
    _write_text(out["pairs_md"], _pairs_md(md_table, warning))
    out["report_md"] = reports / "report.md"
    _write_text(out["report_md"], _report_md(md_table, categories, kinds, pair_dicts, warning))

    page = html.Page(
        study=study, overall=overall, categories=categories, kinds=kinds, warning=warning,
        plots=[(PLOT_CAPTIONS[k], f"plots/{f}") for k, f in PLOT_FILES.items()],
        pairs=[html.PairSection(d["pair"], str(d.get("category", "")), f"grids/{d['pair']}.png",
                                _pair_summary(d), prompts[d["pair"]]) for d in pair_dicts],
    )
    text = html.render(page)
    bad = html.missing_refs(text, reports)
    if bad:
        raise RuntimeError(f"index.html would link to missing or outside files: {bad}")
    out["index_html"] = reports / "index.html"
    _write_text(out["index_html"], text)
    return out


def pair_grid(root: Path, pair: str, path: Path, category: str = "",
              warning: str | None = None) -> tuple[Path, tuple[tuple[str, str], ...]]:
    """The pair's sample grid: prepared scene + instance, then one row per prompt of the manifest.

    Returns the PNG path and the (kind, clean prompt) of each row."""
    sample_dir = root / "data" / "samples" / pair
    manifest = pd.read_csv(sample_dir / "manifest.csv")
    rows, kinds = [], []
    for prompt, group in manifest.groupby("prompt", sort=False):
        group = group.sort_values("seed")
        first = group.iloc[0]
        clean = first["prompt_clean"] if isinstance(first["prompt_clean"], str) else prompt
        kinds.append((str(first["kind"]), str(clean)))
        rows.append([_open(sample_dir / f) for f in group["file"]])
    prepared = root / "data" / "prepared" / pair
    refs = [("scene (reference)", _open(prepared / "scene.png")),
            ("instance (reference)", _open(prepared / "instance.png"))]
    title = f"{pair} ({category})" if category else pair
    labels = [f"{k}: {p}" for k, p in kinds]
    return plots.sample_grid(rows, labels, path, references=refs, title=title, warning=warning), tuple(kinds)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _train_logs(root: Path, pair_ids: list[str]) -> dict[str, dict[str, pd.DataFrame | None]]:
    return {p: {s: plots.read_train_log(root / "reports" / "train" / p / f"{s}.csv")
                for s in ("scene", "instance")} for p in pair_ids}


def _with_context_rows(study: pd.DataFrame, overall: dict[str, dict]) -> pd.DataFrame:
    """The study table plus a 'study (all pairs)' row and the labelled paper reference row."""
    extra = pd.DataFrame(
        [{"category": "all", **{m: fmt(overall.get(m, {}).get("mean"), overall.get(m, {}).get("std"))
                                for m in METRICS}},
         {"category": "context", **tables.reference_row()}],
        index=["**study (all pairs)**", f"*{REFERENCE_LABEL}*"])
    return pd.concat([study, extra])


def _warning_md(warning: str | None) -> str:
    return f"> [!WARNING]\n> **⚠ {warning}**\n\n" if warning else ""


def _reference_md() -> str:
    vals = ", ".join(f"{LABELS[m].split()[0]} {v}" for m, v in REFERENCE.items())
    return f"Reference values ({REFERENCE_LABEL}): {vals}. {REFERENCE_NOTE}.\n"


def _pairs_md(md_table: str, warning: str | None) -> str:
    return (f"# Study: pairs × metrics (mean ± std over samples)\n\n{_warning_md(warning)}"
            f"{md_table}\n{_reference_md()}")


def _report_md(md_table: str, categories: pd.DataFrame, kinds: pd.DataFrame,
               pair_dicts: list[dict], warning: str | None) -> str:
    parts = [
        "# dreamsolo study report\n",
        "Single-image scene + instance personalization (DreamBooth-style, two stages).\n",
        _warning_md(warning),
        "## Study: pairs × metrics (mean ± std over samples)\n",
        md_table, _reference_md(), "↑ higher is better, ↓ lower is better.\n",
        "## Per-category summary\n", tables.to_markdown(categories, "category"),
        "## Metrics by prompt kind (all pairs pooled)\n",
        tables.to_markdown(kinds, "kind") if not kinds.empty else "No per-sample data.\n",
        "## Plots\n",
        *[f"![{PLOT_CAPTIONS[k]}](plots/{f})\n" for k, f in PLOT_FILES.items()],
        "## Samples per pair\n",
        "Left: the reference scene and instance; then one row per prompt, one column per seed.\n",
        *[f"### {d['pair']} ({d.get('category', '')})\n\n![{d['pair']} samples](grids/{d['pair']}.png)\n"
          for d in pair_dicts],
    ]
    return "\n".join(p for p in parts if p)


def _pair_summary(d: dict) -> str:
    bits = [f"{d.get('n_samples', '?')} samples"]
    for m in ("clip_t", "clip_i", "lpips_instance", "lpips_scene"):
        s = tables.pair_stat(d, m)
        if s:
            bits.append(f"{LABELS[m]} {fmt(s.get('mean'), s.get('std'))}")
    return " · ".join(bits)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
