"""The study report: tables (csv/md), DVC metrics JSON, plots and a static HTML page under reports/.

Writes reports/{metrics.json, checks.json, pairs.csv, pairs.md, report.md, findings.md, index.html}, reports/plots/*.png
(metrics, loss, kinds), reports/grids/<pair>.png and reports/grids/base/<pair>.png (the sample grids of
the fine-tuned and of the base model) and reports/compare/<metric>.csv (DVC plots: fine-tuned and base
bar per pair). Every pair carries the floor (the base model on the same prompts and seeds), so every
table gets a '↳ base model' row and a Δ per fine-tuned value, pairs.csv and metrics.json the base and Δ
numbers, and the plots mark the base values.

build_report() is the one entry point the `report` stage calls; it returns the written artifacts
by name so the caller can log them to MLflow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from dreamsolo.files import atomic_dir, atomic_file, write_json
from dreamsolo.layout import arm_samples_dir, check_id, prepared_dir, samples_dir
from dreamsolo.metrics import EVALUATOR_OF
from dreamsolo.metrics.pair_result import PairResult
from dreamsolo import grids
from dreamsolo.report import arms, checks_table, findings, floor, html, plots, tables
from dreamsolo.report.tables import LABELS, METRICS, REFERENCE_LABEL, REFERENCE_NOTE, REFERENCE, fmt

PLOT_FILES = {"plot_metrics": "metrics.png", "plot_loss": "loss.png", "plot_kinds": "kinds.png"}
ARMS_PLOT = "arms_forest.png"  # only when the study runs arms
PLOT_CAPTIONS = {
    "plot_metrics": "Per-pair metrics, mean ± std over samples; dashed: DreamBooth reference (context)",
    "plot_loss": "Training loss of both stages per pair (solid: total, dotted: prior term); where train "
                 "eval_every is set, right axis: LPIPS of the stage's prompt to its photo (filled) and class drift (hollow)",
    "plot_kinds": "Metrics by prompt kind, all pairs pooled",
}
Prompts = tuple[tuple[str, str], ...]
"""(kind, clean prompt) of each row of a pair's sample grid."""


@dataclass(frozen=True)
class _Study:
    """The report's inputs, read and shaped once: every file below is written from these."""

    results: list[PairResult]
    summary: dict
    warning: str | None
    per_pair: pd.DataFrame  # pairs_numeric() + floor.pairs_columns(): the rows of pairs.csv
    per_sample: pd.DataFrame  # reports/pairs/<pair>.csv, all pairs
    per_sample_base: pd.DataFrame  # reports/pairs_base/<pair>.csv, all pairs
    overall: dict[str, dict]
    study: pd.DataFrame
    categories: pd.DataFrame
    kinds: pd.DataFrame
    floors: dict[str, Any]  # html.Page's floor fields, one per table
    checks: dict  # report.checks_table.compute(): the method's claims per pair, paired by seed
    checks_random: list[str]  # the checks' metrics whose evaluator was randomly initialised
    arms: dict | None = None  # report.arms.compute(): the arms against the method, when the study ran any
    findings: dict | None = None  # report.findings.compute(): the seed study's claims, tested


def build_report(root: Path, results: list[PairResult], study_summary: dict, arm_names: tuple[str, ...] = (),
                 method_name: str = arms.METHOD) -> dict[str, Path]:
    """Write every report artifact under root/reports and return {name: path}. `arm_names`: the arms
    the study ran (params `arms.run`), compared with the method by paired bootstrap."""
    s = _shape(root, results, study_summary)
    if arm_names:
        random = sorted({ev for r in results for m, ev in EVALUATOR_OF.items() if m in r.random_metrics})
        block = arms.compute(root, list(arm_names), s.per_sample, s.per_sample_base, [r.pair for r in results],
                             method_name, random)
        s = dataclasses.replace(s, arms=block)
    s = dataclasses.replace(s, findings=findings.compute(root, results, s.per_sample, s.per_sample_base))
    reports = root / "reports"
    out = _write_numbers(reports, s)
    out.update(_write_plots(root, reports, s))
    grids, prompts = _write_grids(root, reports, s)
    out.update(grids)
    out.update(_write_compare(reports, s.per_pair))
    out.update(_write_markdown(reports, s))
    out["index_html"] = _write_page(reports, s, prompts)
    return out


def _shape(root: Path, results: list[PairResult], summary: dict) -> _Study:
    for r in results:  # pair ids become file names below
        check_id("pair", r.pair)
    per_sample = tables.read_samples(root, results)
    per_sample_base = tables.read_samples(root, results, base=True)
    categories = tables.category_table(results, summary)
    floors = {
        "study_floor": floor.pairs_floor(results),
        "overall_floor": floor.overall_floor(results, summary),
        "categories_floor": floor.categories_floor(results, summary, categories),
        "kinds_floor": floor.kinds_floor(per_sample, per_sample_base),
    }
    return _Study(
        results=results, summary=summary, warning=tables.warning_text(results, summary),
        per_pair=tables.pairs_numeric(results).merge(floor.pairs_columns(results), on="pair", how="left"),
        per_sample=per_sample, per_sample_base=per_sample_base, overall=tables.overall_stats(results, summary),
        study=tables.pairs_table(results), categories=categories, kinds=tables.kind_table(per_sample),
        floors=floors, checks=checks_table.compute(per_sample, per_sample_base),
        checks_random=checks_table.random_metrics(results))


def _write_numbers(reports: Path, s: _Study) -> dict[str, Path]:
    """pairs.csv and metrics.json (fine-tuned, then the floor's `base` and `delta` blocks)."""
    out = {"pairs_csv": reports / "pairs.csv", "metrics_json": reports / "metrics.json",
           "checks_json": reports / "checks.json"}
    write_json(out["checks_json"], {"random_metrics": s.checks_random, **s.checks})
    tables.write_pairs_csv(s.per_pair, out["pairs_csv"])
    metrics = tables.metrics_json(s.results, s.summary)
    metrics.update(floor.metrics_json_blocks(s.results, s.summary))
    if s.arms:
        metrics["arms"] = s.arms
    metrics["findings"] = s.findings
    write_json(out["metrics_json"], metrics)
    return out


def _write_plots(root: Path, reports: Path, s: _Study) -> dict[str, Path]:
    pair_ids = [r.pair for r in s.results]
    with atomic_dir(reports / "plots") as tmp:
        plots.metric_bars(s.per_pair, tmp / PLOT_FILES["plot_metrics"], s.warning)
        plots.loss_curves(_train_logs(root, pair_ids), tmp / PLOT_FILES["plot_loss"], s.warning)
        plots.metric_by_kind(tables.kind_numeric(s.per_sample), tables.kind_numeric(s.per_sample_base),
                             tmp / PLOT_FILES["plot_kinds"], s.warning)
        if s.arms:
            arms.forest_plot(s.arms, tmp / ARMS_PLOT, s.warning)
    out = {k: reports / "plots" / f for k, f in PLOT_FILES.items()}
    return out | ({"plot_arms": reports / "plots" / ARMS_PLOT} if s.arms else {})


def _base_grid(pair: str) -> str:
    """The base model's sample grid of a pair, relative to reports/."""
    return f"grids/base/{pair}.png"


def _write_grids(root: Path, reports: Path, s: _Study) -> tuple[dict[str, Path], dict[str, Prompts]]:
    """Each pair's sample grid, fine-tuned and base; returns the paths and each grid's row prompts."""
    prompts: dict[str, Prompts] = {}
    with atomic_dir(reports / "grids") as tmp:
        for r in s.results:
            _, prompts[r.pair] = pair_grid(root, r.pair, tmp / f"{r.pair}.png", r.category, s.warning)
            pair_grid(root, r.pair, tmp / "base" / f"{r.pair}.png", r.category, s.warning, samples="samples_base")
        for arm in (s.arms or {}).get("arms", []):
            for r in s.results:
                pair_grid(root, r.pair, tmp / "arms" / arm / f"{r.pair}.png", r.category, s.warning,
                          folder=arm_samples_dir(root, r.pair, arm), note=f"arm {arm}")
    out = {f"grid_{r.pair}": reports / "grids" / f"{r.pair}.png" for r in s.results}
    out.update({f"gridbase_{r.pair}": reports / _base_grid(r.pair) for r in s.results})
    out.update({f"gridarm_{arm}_{r.pair}": reports / "grids" / "arms" / arm / f"{r.pair}.png"
                for arm in (s.arms or {}).get("arms", []) for r in s.results})
    return out, prompts


def _write_compare(reports: Path, per_pair: pd.DataFrame) -> dict[str, Path]:
    with atomic_dir(reports / "compare") as tmp:
        for m, frame in floor.compare_frames(per_pair).items():
            frame.to_csv(tmp / f"{m}.csv", index=False)
    return {f"compare_{m}": reports / "compare" / f"{m}.csv" for m in floor.COMPARE}


def _write_markdown(reports: Path, s: _Study) -> dict[str, Path]:
    """pairs.md (the study table) and report.md (every table, plot and grid), each with the floor."""
    md_study = floor.interleave(_with_context_rows(s.study, s.overall), _md_floor(s.floors))
    md_table = tables.to_markdown(md_study, "pair")
    categories = floor.interleave(s.categories, s.floors["categories_floor"])
    kinds = floor.interleave(s.kinds, s.floors["kinds_floor"])
    out = {"pairs_md": reports / "pairs.md", "report_md": reports / "report.md",
           "findings_md": findings.write(reports, s.findings, s.warning)}
    _write_text(out["pairs_md"], _pairs_md(md_table, s.warning) + f"{floor.BASE_NOTE}.\n")
    checks_md = checks_table.markdown(s.checks, s.checks_random) + (f"\n{arms.markdown(s.arms)}" if s.arms else "")
    _write_text(out["report_md"], _report_md(md_table, categories, kinds, s.results, s.warning, checks_md))
    return out


def _write_page(reports: Path, s: _Study, prompts: dict[str, Prompts]) -> Path:
    page = html.Page(
        study=s.study, overall=s.overall, categories=s.categories, kinds=s.kinds, warning=s.warning,
        evaluators=tables.evaluators_text(s.results),
        plots=[(_caption(k), f"plots/{f}") for k, f in PLOT_FILES.items()],
        pairs=[html.PairSection(r.pair, r.category, f"grids/{r.pair}.png", _base_grid(r.pair), _pair_summary(r),
                                prompts[r.pair]) for r in s.results],
        checks_html=checks_table.html_table(s.checks, s.checks_random) + (arms.html_section(s.arms) if s.arms else ""),
        findings_html=findings.html_section(s.findings),
        **s.floors,
    )
    text = html.render(page)
    bad = html.missing_refs(text, reports)
    if bad:
        raise RuntimeError(f"index.html would link to missing or outside files: {bad}")
    path = reports / "index.html"
    _write_text(path, text)
    return path


def _caption(name: str) -> str:
    caption = PLOT_CAPTIONS[name]
    if name in ("plot_metrics", "plot_kinds"):
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
              samples: str = "samples", folder: Path | None = None,
              note: str = "") -> tuple[Path, tuple[tuple[str, str], ...]]:
    """The pair's sample grid: prepared scene + instance, then one row per prompt of the manifest.
    `samples`: 'samples' (fine-tuned) or 'samples_base' (the base model on the same prompts); `folder`
    (with a title `note`): another sample folder, an arm's.

    Returns the PNG path and the (kind, clean prompt) of each row."""
    if samples not in ("samples", "samples_base"):
        raise ValueError(f"pair_grid: samples must be 'samples' or 'samples_base', got {samples!r}")
    sample_dir = folder or samples_dir(root, pair, base=samples == "samples_base")
    manifest = pd.read_csv(sample_dir / "manifest.csv")
    rows, kinds, labels = [], [], []
    for prompt, group in manifest.groupby("prompt", sort=False):
        group = group.sort_values("seed")
        first = group.iloc[0]
        clean = first["prompt_clean"] if isinstance(first["prompt_clean"], str) else prompt
        kinds.append((str(first["kind"]), str(clean)))
        # as sampled (with the identifiers) and as CLIP-T scored it (identifiers removed)
        labels.append(f"{first['kind']}: sampled “{prompt}”" + ("" if clean == prompt else f" · scored “{clean}”"))
        rows.append([_open(sample_dir / f) for f in group["file"]])
    prepared = prepared_dir(root, pair)
    refs = [("scene (reference)", _open(prepared / "scene.png")),
            ("instance (reference)", _open(prepared / "instance.png"))]
    title = f"{pair} ({category})" if category else pair
    if samples != "samples":
        title += " — base model, no fine-tuning (the floor)"
    if note:
        title += f" — {note}"
    return grids.labelled(rows, labels, path, references=refs, title=title, warning=warning), tuple(kinds)


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
               results: list[PairResult], warning: str | None, checks_md: str) -> str:
    parts = [
        "# dreamsolo study report\n",
        "Single-image scene + instance personalization (DreamBooth-style, two stages).\n",
        _warning_md(warning),
        tables.evaluators_text(results) + "\n",
        "## Study: pairs × metrics (mean ± std over samples)\n",
        md_table, _reference_md(), "↑ higher is better, ↓ lower is better.\n", f"{floor.BASE_NOTE}.\n",
        "## Method checks (paired by seed: LPIPS, and CLIP-T for the composed prompt's text)\n", checks_md,
        "## Per-category summary\n", tables.to_markdown(categories, "category"),
        "## Metrics by prompt kind (all pairs pooled)\n",
        tables.to_markdown(kinds, "kind") if not kinds.empty else "No per-sample data.\n",
        "## Plots\n",
        *[f"![{_caption(k)}](plots/{f})\n" for k, f in PLOT_FILES.items()],
        "## Samples per pair\n",
        "Left: the reference scene and instance; then one row per prompt, one column per seed.\n",
        *[f"### {r.pair} ({r.category})\n\n![{r.pair} samples](grids/{r.pair}.png)\n"
          f"\nBase model, same prompts and seeds:\n\n![{r.pair} base samples]({_base_grid(r.pair)})\n"
          for r in results],
    ]
    return "\n".join(p for p in parts if p)


def _pair_summary(r: PairResult) -> str:
    bits = [f"{r.tuned.n_samples} samples"]
    delta = r.delta
    for m in ("clip_t", "clip_i", "lpips_instance", "lpips_scene"):
        s = tables.pair_stat(r.tuned, m)
        if s is not None:
            text = f"{LABELS[m]} {fmt(s.mean, s.std)}"
            b = tables.pair_stat(r.base, m)
            if b is not None:  # a metric the base samples have no value for shows no floor
                text += f" (base {fmt(b.mean)}, {floor.fmt_delta(delta[m])})"
            bits.append(text)
    return " · ".join(bits)


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
