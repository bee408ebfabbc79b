"""The study report: tables (csv/md), DVC metrics JSON, plots and a static HTML page under reports/.

Writes reports/{metrics.json, pairs.csv, pairs.md, report.md, index.html}, reports/plots/*.png
(metrics, loss, kinds) and reports/grids/<pair>.png (one sample grid per pair). When the pairs carry
the floor (the base model on the same prompts and seeds, `base` in the pair JSON), every table gets a
'↳ base model' row and a Δ per fine-tuned value, pairs.csv and metrics.json get the base and Δ numbers,
the plots mark the base values, and reports/grids/base/<pair>.png and reports/compare/<metric>.csv
(DVC plots: fine-tuned and base bar per pair) are written too.

build_report() is the one entry point the `report` stage calls; it returns the written artifacts
by name so the caller can log them to MLflow.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from dreamsolo.files import atomic_dir, atomic_file, write_json
from dreamsolo.layout import check_id, prepared_dir, samples_dir
from dreamsolo.report import floor, html, plots, tables
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
    has_floor = floor.has_floor(pair_dicts)
    if has_floor:
        per_pair = per_pair.merge(floor.pairs_columns(pair_dicts), on="pair", how="left")
    reports = root / "reports"
    out: dict[str, Path] = {}

    out["pairs_csv"] = reports / "pairs.csv"
    tables.write_pairs_csv(per_pair, out["pairs_csv"])
    out["metrics_json"] = reports / "metrics.json"
    metrics = tables.metrics_json(pair_dicts, study_summary)
    if has_floor:
        metrics.update(floor.metrics_json_blocks(pair_dicts, study_summary))
    write_json(out["metrics_json"], metrics)

    study = tables.pairs_table(pair_dicts)
    categories = tables.category_table(pair_dicts, study_summary)
    kinds_num = tables.kind_numeric(per_sample)
    kinds = tables.kind_table(per_sample)
    per_sample_base = floor.read_base_csvs(root, pair_ids) if has_floor else pd.DataFrame()
    floors = {
        "study_floor": floor.pairs_floor(pair_dicts),
        "overall_floor": floor.overall_floor(pair_dicts, study_summary),
        "categories_floor": floor.categories_floor(pair_dicts, study_summary, categories),
        "kinds_floor": floor.kinds_floor(per_sample, per_sample_base),
    } if has_floor else {}

    prompts: dict[str, tuple[tuple[str, str], ...]] = {}
    with atomic_dir(reports / "plots") as tmp:
        plots.metric_bars(per_pair, tmp / PLOT_FILES["plot_metrics"], warning)
        plots.loss_curves(_train_logs(root, pair_ids), tmp / PLOT_FILES["plot_loss"], warning)
        plots.metric_by_kind(kinds_num, tmp / PLOT_FILES["plot_kinds"], warning,
                             base=tables.kind_numeric(per_sample_base) if has_floor else None)
    out.update({k: reports / "plots" / f for k, f in PLOT_FILES.items()})
    base_grids: dict[str, str] = {}
    with atomic_dir(reports / "grids") as tmp:
        for d in pair_dicts:
            _, prompts[d["pair"]] = pair_grid(root, d["pair"], tmp / f"{d['pair']}.png",
                                              d.get("category", ""), warning)
            if has_floor and (root / "data" / "samples_base" / d["pair"] / "manifest.csv").is_file():
                pair_grid(root, d["pair"], tmp / "base" / f"{d['pair']}.png", d.get("category", ""), warning,
                          samples="samples_base")
                base_grids[d["pair"]] = f"grids/base/{d['pair']}.png"
    out.update({f"grid_{p}": reports / "grids" / f"{p}.png" for p in pair_ids})
    out.update({f"gridbase_{p}": reports / g for p, g in base_grids.items()})
    if has_floor:
        with atomic_dir(reports / "compare") as tmp:
            for m, frame in floor.compare_frames(per_pair).items():
                frame.to_csv(tmp / f"{m}.csv", index=False)
        out.update({f"compare_{m}": reports / "compare" / f"{m}.csv" for m in floor.COMPARE})

    md_study = _with_context_rows(study, overall)
    if has_floor:
        md_study = floor.interleave(md_study, _md_floor(floors))
        categories_md = floor.interleave(categories, floors["categories_floor"])
        kinds_md = floor.interleave(kinds, floors["kinds_floor"]) if floors["kinds_floor"] else kinds
    else:
        categories_md, kinds_md = categories, kinds
    md_table = tables.to_markdown(md_study, "pair")
    note = f"{floor.BASE_NOTE}.\n" if has_floor else ""
    out["pairs_md"] = reports / "pairs.md"
    _write_text(out["pairs_md"], _pairs_md(md_table, warning) + note)
    out["report_md"] = reports / "report.md"
    _write_text(out["report_md"], _report_md(md_table, categories_md, kinds_md, pair_dicts, warning, note,
                                             base_grids))

    page = html.Page(
        study=study, overall=overall, categories=categories, kinds=kinds, warning=warning,
        plots=[(_caption(k, has_floor), f"plots/{f}") for k, f in PLOT_FILES.items()],
        pairs=[html.PairSection(d["pair"], str(d.get("category", "")), f"grids/{d['pair']}.png",
                                _pair_summary(d), prompts[d["pair"]], base_grids.get(d["pair"]))
               for d in pair_dicts],
        **floors,
    )
    text = html.render(page)
    bad = html.missing_refs(text, reports)
    if bad:
        raise RuntimeError(f"index.html would link to missing or outside files: {bad}")
    out["index_html"] = reports / "index.html"
    _write_text(out["index_html"], text)
    return out


def _caption(name: str, has_floor: bool) -> str:
    caption = PLOT_CAPTIONS[name]
    if has_floor and name in ("plot_metrics", "plot_kinds"):
        caption += "; ○: the base model (no fine-tuning) on the same prompts and seeds"
    return caption


def _md_floor(floors: dict) -> floor.Floor:
    """The study table's floor for markdown: the pairs' rows plus the 'study (all pairs)' row."""
    pf, (base, delta) = floors["study_floor"], floors["overall_floor"]
    label = "**study (all pairs)**"
    extra_b = pd.DataFrame({m: [fmt(base[m]["mean"], base[m]["std"])] for m in METRICS}, index=[label])
    extra_d = pd.DataFrame({m: [delta[m]["mean"]] for m in METRICS}, index=[label], dtype=float)
    return floor.Floor(pd.concat([pf.base, extra_b]), pd.concat([pf.delta, extra_d]))


def pair_grid(root: Path, pair: str, path: Path, category: str = "", warning: str | None = None,
              samples: str = "samples") -> tuple[Path, tuple[tuple[str, str], ...]]:
    """The pair's sample grid: prepared scene + instance, then one row per prompt of the manifest.
    `samples`: 'samples' (fine-tuned) or 'samples_base' (the base model on the same prompts).

    Returns the PNG path and the (kind, clean prompt) of each row."""
    if samples not in ("samples", "samples_base"):
        raise ValueError(f"pair_grid: samples must be 'samples' or 'samples_base', got {samples!r}")
    sample_dir = samples_dir(root, pair, base=samples == "samples_base")
    manifest = pd.read_csv(sample_dir / "manifest.csv")
    rows, kinds = [], []
    for prompt, group in manifest.groupby("prompt", sort=False):
        group = group.sort_values("seed")
        first = group.iloc[0]
        clean = first["prompt_clean"] if isinstance(first["prompt_clean"], str) else prompt
        kinds.append((str(first["kind"]), str(clean)))
        rows.append([_open(sample_dir / f) for f in group["file"]])
    prepared = prepared_dir(root, pair)
    refs = [("scene (reference)", _open(prepared / "scene.png")),
            ("instance (reference)", _open(prepared / "instance.png"))]
    title = f"{pair} ({category})" if category else pair
    if samples != "samples":
        title += " — base model, no fine-tuning (the floor)"
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
               pair_dicts: list[dict], warning: str | None, floor_note: str = "",
               base_grids: dict[str, str] | None = None) -> str:
    base_grids = base_grids or {}
    parts = [
        "# dreamsolo study report\n",
        "Single-image scene + instance personalization (DreamBooth-style, two stages).\n",
        _warning_md(warning),
        "## Study: pairs × metrics (mean ± std over samples)\n",
        md_table, _reference_md(), "↑ higher is better, ↓ lower is better.\n", floor_note,
        "## Per-category summary\n", tables.to_markdown(categories, "category"),
        "## Metrics by prompt kind (all pairs pooled)\n",
        tables.to_markdown(kinds, "kind") if not kinds.empty else "No per-sample data.\n",
        "## Plots\n",
        *[f"![{_caption(k, bool(floor_note))}](plots/{f})\n" for k, f in PLOT_FILES.items()],
        "## Samples per pair\n",
        "Left: the reference scene and instance; then one row per prompt, one column per seed.\n",
        *[f"### {d['pair']} ({d.get('category', '')})\n\n![{d['pair']} samples](grids/{d['pair']}.png)\n"
          + (f"\nBase model, same prompts and seeds:\n\n![{d['pair']} base samples]({base_grids[d['pair']]})\n"
             if d["pair"] in base_grids else "")
          for d in pair_dicts],
    ]
    return "\n".join(p for p in parts if p)


def _pair_summary(d: dict) -> str:
    bits = [f"{d.get('n_samples', '?')} samples"]
    deltas = floor.pair_deltas(d) if isinstance(d.get("base"), dict) else {}
    for m in ("clip_t", "clip_i", "lpips_instance", "lpips_scene"):
        s = tables.pair_stat(d, m)
        if s:
            text = f"{LABELS[m]} {fmt(s.get('mean'), s.get('std'))}"
            b = tables.pair_stat(d.get("base") or {}, m)
            if b:
                text += f" (base {fmt(b.get('mean'))}, {floor.fmt_delta(deltas.get(m))})"
            bits.append(text)
    return " · ".join(bits)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
