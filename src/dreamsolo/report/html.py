"""reports/index.html: one self-contained static page (inline CSS, no scripts, no external assets).

Images are relative links to files inside reports/ (the report stage writes them there), so the
page opens from disk and moves with the folder. Every piece of text goes through html.escape.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path, PurePosixPath

import pandas as pd

from dreamsolo.report.floor import BASE_LABEL, BASE_NOTE, Floor, fmt_delta, verdict
from dreamsolo.report.tables import LABELS, METRICS, REFERENCE_LABEL, REFERENCE_NOTE, fmt, reference_row

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; --warn:#b71c1c; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
       color:var(--fg); background:#fff; }
main { max-width:1200px; margin:0 auto; padding:24px 28px 64px; }
h1 { font-size:28px; margin:8px 0 4px; } h2 { font-size:21px; margin:36px 0 10px;
     padding-bottom:6px; border-bottom:1px solid var(--line); }
h3 { font-size:17px; margin:26px 0 6px; }
.sub { color:var(--muted); margin:0 0 16px; }
.banner { background:#fdecea; border:2px solid var(--warn); color:var(--warn); border-radius:8px;
          padding:14px 18px; margin:16px 0 8px; font-size:18px; font-weight:700; }
.banner small { display:block; font-weight:400; font-size:14px; color:#5f2120; margin-top:4px; }
.ok { background:#e6f4ea; border:1px solid #2e7d32; color:#1b5e20; border-radius:8px; padding:8px 14px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; font-size:13.5px; margin:6px 0; min-width:60%; }
th.text { text-align:left; }
th, td { padding:6px 9px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:var(--bg); font-weight:600; position:sticky; top:0; }
td:first-child, th:first-child, td.text { text-align:left; }
tbody tr:hover { background:#f0f6ff; }
tr.study td { font-weight:600; border-top:2px solid var(--fg); }
tr.ref td { color:var(--muted); font-style:italic; background:#fffbe6; }
tr.ref td:first-child { white-space:normal; max-width:220px; }
.note { color:var(--muted); font-size:13px; margin:4px 0 0; }
.tag { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; background:var(--bg);
       border:1px solid var(--line); color:var(--muted); font-weight:500; vertical-align:middle; }
figure { margin:14px 0 22px; } figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
details { font-size:13px; color:var(--muted); margin:-14px 0 18px; } ol { margin:4px 0; }
nav a { color:var(--accent); text-decoration:none; margin-right:14px; font-size:14px; }
tr.tuned td { border-bottom:none; }
tr.base td { color:var(--muted); font-size:12.5px; }
tr.base td:first-child { padding-left:18px; }
.d { display:block; font-size:11.5px; font-weight:600; }
.d.better { color:#1a7f37; } .d.worse { color:#cf222e; } .d.same { color:var(--muted); font-weight:400; }
"""


@dataclass(frozen=True)
class PairSection:
    pair: str
    category: str
    grid: str  # path relative to reports/
    base_grid: str  # the base model's samples of the same prompts and seeds (relative to reports/)
    summary: str = ""
    prompts: tuple[tuple[str, str], ...] = ()  # (kind, prompt without identifier tokens), grid row order


@dataclass(frozen=True)
class Page:
    study: pd.DataFrame  # pairs_table(): index pair, columns category + metrics
    overall: dict[str, dict]  # {metric: {'mean','std'}}
    categories: pd.DataFrame  # category_table()
    kinds: pd.DataFrame  # kind_table()
    # the floor (the base model on the same prompts and seeds) of each table
    study_floor: Floor
    overall_floor: tuple[dict[str, dict], dict[str, dict]]  # (base, delta) {metric: stats}
    categories_floor: Floor
    kinds_floor: Floor
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to reports/)
    pairs: list[PairSection] = field(default_factory=list)
    warning: str | None = None
    title: str = "dreamsolo study report"
    checks_html: str = ""  # report.method.html_table(): the method checks, rendered
    evaluators: str = ""  # report.tables.evaluators_text(): the networks behind the numbers
    findings_html: str = ""  # report.findings.html_section(): the seed study's claims and verdicts


def render(page: Page) -> str:
    """The whole HTML document as one string."""
    parts = [
        f"<h1>{escape(page.title)}</h1>",
        '<p class="sub">Single-image scene + instance personalization (DreamBooth-style, two stages).</p>',
        _banner(page.warning),
        f'<p class="sub">{escape(page.evaluators)}</p>' if page.evaluators else "",
        '<nav>' + ('<a href="#findings">Findings</a>' if page.findings_html else "")
        + '<a href="#study">Study table</a><a href="#checks">Method checks</a>'
        + ('<a href="#arms">Arms</a>' if 'id="arms"' in page.checks_html else "")
        + '<a href="#categories">Categories</a>'
        '<a href="#kinds">Prompt kinds</a><a href="#plots">Plots</a><a href="#samples">Samples</a></nav>',
        page.findings_html,
        '<h2 id="study">Study: pairs × metrics <span class="tag">mean ± std over samples</span></h2>',
        _study_table(page.study, page.overall, page.study_floor, page.overall_floor),
        f'<p class="note">Reference row: {escape(REFERENCE_LABEL)} — {escape(REFERENCE_NOTE)}. '
        "↑ higher is better, ↓ lower is better.</p>",
        _floor_note(),
        '<h2 id="checks">Method checks <span class="tag">paired by seed, LPIPS</span></h2>',
        page.checks_html,
        '<h2 id="categories">Per-category summary</h2>',
        _table(page.categories, "category", page.categories_floor),
        '<h2 id="kinds">Metrics by prompt kind <span class="tag">all pairs pooled</span></h2>',
        _table(page.kinds, "kind", page.kinds_floor),
        '<h2 id="plots">Plots</h2>',
        *[_figure(src, cap) for cap, src in page.plots],
        '<h2 id="samples">Samples per pair</h2>',
        '<p class="note">Left: the two reference photos (scene, instance). Right: one row per prompt '
        "(prompt kind and prompt without identifier tokens), one column per seed."
        " Under each fine-tuned grid: the base model on the same prompts and seeds.</p>",
        *[_pair(s, page.warning) for s in page.pairs],
    ]
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(page.title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def local_refs(html_text: str) -> list[str]:
    """Every src/href value of the page (for checks: all must be files inside reports/)."""
    return re.findall(r'\b(?:src|href)="([^"]*)"', html_text)


def missing_refs(html_text: str, reports_dir: Path) -> list[str]:
    """Links that are external, absolute, leave reports/, or name a file that does not exist."""
    bad = []
    base = reports_dir.resolve()
    for ref in local_refs(html_text):
        if ref.startswith("#"):
            continue
        p = PurePosixPath(ref)
        if ":" in ref or p.is_absolute() or ".." in p.parts:
            bad.append(ref)
            continue
        full = (base / p).resolve()
        if not full.is_relative_to(base) or not full.is_file():
            bad.append(ref)
    return bad


def _banner(warning: str | None) -> str:
    if not warning:
        return '<p class="ok">Evaluators were pretrained: the numbers below are meaningful.</p>'
    return (f'<div class="banner" role="alert">⚠ {escape(warning)}'
            "<small>The CLIP / LPIPS / DINO evaluators of this run were randomly initialised. "
            "The tables and plots exercise the pipeline; do not read them as results.</small></div>")


def _floor_note() -> str:
    return (f'<p class="note">{escape(BASE_NOTE)}; '
            '<span class="d better" style="display:inline">green</span>: fine-tuning improved the metric '
            '(in its ↑/↓ direction), <span class="d worse" style="display:inline">red</span>: it got worse.</p>')


def _cell(metric: str, text: str, floor: Floor, idx) -> str:
    """A fine-tuned cell, with its Δ vs the base model underneath where the floor has one."""
    cell = escape(str(text))
    if metric in floor.delta.columns and idx in floor.delta.index:
        value = floor.delta.at[idx, metric]
        d = fmt_delta(value)
        if d:
            cell += f'<span class="d {verdict(metric, value)}">{escape(d)}</span>'
    return f"<td>{cell}</td>"


def _base_row(idx, cells: list[str], n_text_cols: int, floor: Floor) -> str:
    if idx not in floor.base.index:
        return ""
    texts = "".join('<td class="text"></td>' for _ in range(n_text_cols))
    vals = "".join(f"<td>{escape(str(floor.base.at[idx, m])) if m in floor.base.columns else ''}</td>"
                   for m in cells)
    return f'<tr class="base"><td>{escape(BASE_LABEL)}</td>{texts}{vals}</tr>'


def _study_table(study: pd.DataFrame, overall: dict[str, dict], floor: Floor,
                 overall_floor: tuple[dict[str, dict], dict[str, dict]]) -> str:
    cols = [m for m in METRICS if m in study.columns]
    head = "".join(f"<th>{escape(LABELS.get(m, m))}</th>" for m in cols)
    rows = []
    for pair, row in study.iterrows():
        cells = "".join(_cell(m, row[m], floor, pair) for m in cols)
        rows.append(f'<tr class="tuned"><td>{escape(str(pair))}</td><td class="text">{escape(str(row["category"]))}'
                    f"</td>{cells}</tr>")
        rows.append(_base_row(pair, cols, 1, floor))
    base, delta = overall_floor
    one = Floor(pd.DataFrame({m: [fmt(base[m]["mean"], base[m]["std"])] for m in cols}, index=["all"]),
                pd.DataFrame({m: [delta[m]["mean"]] for m in cols}, index=["all"], dtype=float))
    study_cells = "".join(
        _cell(m, fmt(overall.get(m, {}).get("mean"), overall.get(m, {}).get("std")), one, "all") for m in cols)
    rows.append(f'<tr class="study tuned"><td>study (all pairs)</td><td class="text">all</td>{study_cells}</tr>')
    rows.append(_base_row("all", cols, 1, one))
    ref = reference_row()
    ref_cells = "".join(f"<td>{escape(ref[m])}</td>" for m in cols)
    rows.append(f'<tr class="ref"><td colspan="2">{escape(REFERENCE_LABEL)} (context)</td>{ref_cells}</tr>')
    return (f'<div class="scroll"><table><thead><tr><th>pair</th><th class="text">category</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _table(df: pd.DataFrame, index_name: str, floor: Floor) -> str:
    if df.empty:
        return '<p class="note">No data.</p>'
    head = "".join(f'<th class="{"text" if c == "pairs" else ""}">{escape(LABELS.get(str(c), str(c)))}</th>'
                   for c in df.columns)
    text_cols = [c for c in df.columns if c not in METRICS]
    rows = []
    for idx, row in df.iterrows():
        cells = "".join(f'<td class="text">{escape(str(v))}</td>' if c in text_cols else _cell(str(c), v, floor, idx)
                        for c, v in row.items())
        rows.append(f'<tr class="tuned"><td>{escape(str(idx))}</td>{cells}</tr>')
        rows.append(_base_row(idx, [c for c in df.columns if c not in text_cols], len(text_cols), floor))
    return (f'<div class="scroll"><table><thead><tr><th>{escape(index_name)}</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _figure(src: str, caption: str, cls: str = "") -> str:
    s, c = escape(src, quote=True), escape(caption)
    return (f'<figure class="{cls}"><a href="{s}"><img src="{s}" alt="{escape(caption, quote=True)}" '
            f'loading="eager"></a><figcaption>{c}</figcaption></figure>')


def _pair(section: PairSection, warning: str | None) -> str:
    anchor = escape(f"pair-{section.pair}", quote=True)
    summary = f'<p class="note">{escape(section.summary)}</p>' if section.summary else ""
    note = " (evaluators not pretrained)" if warning else ""
    caption = f"{section.pair}: references and samples per prompt{note}"
    items = "".join(f"<li><b>{escape(k)}</b>: {escape(p)}</li>" for k, p in section.prompts)
    prompts = f"<details><summary>prompts (grid rows)</summary><ol>{items}</ol></details>" if items else ""
    base = _figure(section.base_grid, f"{section.pair}: the base model (no fine-tuning) on the same prompts "
                                      f"and seeds{note}", "grid")
    return (f'<h3 id="{anchor}">{escape(section.pair)} <span class="tag">{escape(section.category)}</span></h3>'
            f"{summary}{_figure(section.grid, caption, 'grid')}{base}{prompts}")
