"""The findings page: each claim of the seed study, the test that decides it, its numbers with 95 % bootstrap
intervals over pairs and seeds, and a verdict by the rules written on the page (metrics.claims,
metrics.findings). Written by the `report` stage as reports/findings.md, a section of index.html, the
`findings` block of reports/metrics.json and the report run's MLflow metrics and tags.

It reads the study's per-sample tables and the sweeps' per-seed tables, reports/sweeps/<name>/samples.csv
of the sweeps metrics.claims names (dvc.yaml's report stage depends on those folders)."""

from __future__ import annotations

import html as _html
import json
from pathlib import Path

import pandas as pd

from dreamsolo.metrics import findings as F
from dreamsolo.metrics.claims import LR_STEPS, PRIOR, SENSITIVITY, Inputs, all_claims, stale
from dreamsolo.metrics.pair_result import PairResult

SWEEPS = (LR_STEPS, PRIOR)
FILE = "findings.md"
TITLE = "Findings: the seed study's claims, tested"


def sweep_folder(root: Path, name: str) -> Path:
    return root / "reports" / "sweeps" / name


def _read_sweep(root: Path, name: str, tuned: pd.DataFrame) -> pd.DataFrame | str:
    """The sweep's samples.csv, or why it cannot be used (not run, an older report, another study version)."""
    folder = sweep_folder(root, name)
    path = folder / "samples.csv"
    if not path.is_file():
        if (folder / "results.csv").is_file():
            return (f"sweep {name}'s report predates samples.csv (per-seed rows): "
                    f"rerun `dreamsolo sweep {name} --report-only`")
        return f"sweep {name} not run yet"
    samples = pd.read_csv(path)
    why = stale(samples, tuned)
    return f"sweep {name}: {why}" if why else samples


def _best(root: Path) -> dict:
    path = sweep_folder(root, LR_STEPS) / "best.json"
    if not path.is_file():
        return {}
    return {cat: b["label"] for cat, b in json.loads(path.read_text()).get("category", {}).items()}


def inputs(root: Path, results: list[PairResult], tuned: pd.DataFrame, base: pd.DataFrame) -> Inputs:
    random = {m for r in results for m in r.random_metrics}
    if "lpips_instance" in random:  # drift is LPIPS too
        random.add("class_drift")
    sweeps = {name: _read_sweep(root, name, tuned) for name in SWEEPS}
    for s in sweeps.values():
        if isinstance(s, pd.DataFrame) and "random_metrics" in s.columns:
            flagged = set(",".join(s["random_metrics"].fillna("").astype(str)).split(",")) - {""}
            random |= flagged | ({"class_drift"} if "lpips_instance" in flagged else set())
    return Inputs(tuned, base, {r.pair: r.category for r in results}, frozenset(random), sweeps)


def compute(root: Path, results: list[PairResult], tuned: pd.DataFrame, base: pd.DataFrame) -> dict:
    """The `findings` block of reports/metrics.json: every number and verdict of the page."""
    claims = all_claims(inputs(root, results, tuned, base), _best(root))
    return {"rules": dict(F.RULES), "sensitivity": SENSITIVITY,
            "smallest_effect": {"lpips": F.MIN_LPIPS, "r": F.MIN_R},
            "bootstrap": {"resamples": F.RESAMPLES, "level": F.LEVEL,
                          "unit": "pairs with replacement within category, then seeds within each drawn pair"},
            "claims": {str(c.n): c.as_dict() for c in claims}}


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _rows(block: dict) -> list[list[str]]:
    """Header + one row per part of every claim (a claim without data: one row saying what to run)."""
    out = [["claim", "part", "effect [95 % CI]", "pairs × seeds", "δ", "part verdict", "claim verdict"]]
    for n, c in block["claims"].items():
        if not c["parts"]:
            out.append([n, c["note"], "–", "–", "–", "–", c["verdict"]])
        for name, p in c["parts"].items():
            est = (f"{_num(p['value'])} [{_num(p['ci'][0])}, {_num(p['ci'][1])}]" if "value" in p else "–")
            size = f"{p['n_pairs']} × {p['n_seeds']}" if "n_pairs" in p else "–"
            out.append([n, p["label"], est, size, f"{p['smallest']:g}", p["verdict"], c["verdict"]])
    return out


def _interval(e: dict) -> str:
    return f"{e['value']:.3f} [{_num(e['ci'][0])[1:]}, {_num(e['ci'][1])[1:]}]"


def _sens(block: dict) -> str:
    return "; ".join(f"{k}: " + ", ".join(f"{o} {_interval(e)}" for o, e in v.items()) for k, v in block.items())


def _extra(c: dict) -> list[str]:
    lines = []
    if c.get("sensitivity"):
        lines.append(f"Sensitivity over all pairs [95 % CI]: {_sens(c['sensitivity'])}.")
    if c.get("sensitivity_by_category"):
        lines.append(f"Sensitivity to lr × steps by category [95 % CI]: {_sens(c['sensitivity_by_category'])}.")
    if c.get("best_by_category"):
        lines.append("Best point per category (the sweep's rule): " + "; ".join(
            f"{k} {v}" for k, v in c["best_by_category"].items()) + ".")
    return lines


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]) + "\n"


def _rules_md(block: dict) -> str:
    return "\n".join(f"- **{v}**: {rule}" for v, rule in block["rules"].items())


def _method_md(block: dict) -> str:
    b = block["bootstrap"]
    return (f"Each effect is signed so that > 0 is what the claim says. Intervals: percentile bootstrap, "
            f"{b['resamples']} resamples, {b['level']:.0%}, {b['unit']}; seeded per test. Samples of one seed "
            f"share their initial noise across models and sweep points, so every difference is taken seed by seed. "
            f"**Sensitivity**: {block['sensitivity']}.")


def markdown(block: dict, warning: str | None = None) -> str:
    parts = [f"# {TITLE}\n", f"> [!WARNING]\n> **⚠ {warning}**\n" if warning else "",
             "## Method\n", _method_md(block) + "\n", "## Verdict rules\n", _rules_md(block) + "\n",
             "## Summary\n", _md_table([["claim", "verdict"]] +
                                         [[f"{n}. {c['claim']}", c["verdict"]] for n, c in block["claims"].items()]),
             "## Claims\n"]
    for n, c in block["claims"].items():
        parts.append(f"### {n}. {c['claim']}\n\n**Verdict: {c['verdict']}.**\n\nTest: {c['test']}\n")
        if c["parts"]:
            parts.append(_md_table([["part", "effect [95 % CI]", "pairs × seeds", "δ", "verdict"]] +
                                   [r[1:6] for r in _rows({"claims": {n: c}})[1:]]))
        for line in ([c["note"]] if c["note"] else []) + _extra(c):
            parts.append(f"{line}\n")
        if c["command"]:
            parts.append(f"To run it: `{c['command']}`, then `dvc repro report`.\n")
    return "\n".join(p for p in parts if p)


def html_section(block: dict) -> str:
    esc = _html.escape
    summary = "".join(f'<tr><td>{esc(n)}. {esc(c["claim"])}</td><td><b>{esc(c["verdict"])}</b></td></tr>'
                      for n, c in block["claims"].items())
    rows = _rows(block)
    head = "".join(f"<th>{esc(h)}</th>" for h in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in r) + "</tr>" for r in rows[1:])
    tests = "".join(f"<li><b>{esc(n)}</b>: {esc(c['test'])}"
                    + (f" <i>{esc(c['note'])}</i>" if c["note"] else "")
                    + "".join(f" {esc(x)}" for x in _extra(c))
                    + (f" To run it: <code>{esc(c['command'])}</code>, then <code>dvc repro report</code>."
                       if c["command"] else "") + "</li>" for n, c in block["claims"].items())
    rules = "".join(f"<li><b>{esc(v)}</b>: {esc(r)}</li>" for v, r in block["rules"].items())
    return (f'<h2 id="findings">Findings <span class="tag">the seed study\'s claims, bootstrap over pairs and '
            f'seeds</span></h2><table><thead><tr><th>claim</th><th>verdict</th></tr></thead><tbody>{summary}'
            f'</tbody></table><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="note">{esc(_method_md(block).replace("**", ""))}</p><ul class="note">{rules}</ul>'
            f'<ol class="note" style="list-style:none;padding-left:0">{tests}</ol>'
            f'<p class="note">The whole page: <a href="{FILE}">{FILE}</a>.</p>')


def write(reports: Path, block: dict, warning: str | None = None) -> Path:
    from dreamsolo.files import atomic_file

    path = reports / FILE
    with atomic_file(path) as tmp:
        tmp.write_text(markdown(block, warning), encoding="utf-8")
    return path


def mlflow_metrics(block: dict) -> dict[str, float]:
    """finding_<n>_verdict (1 supported, 0 inconclusive, -1 not supported; absent when not run or not
    meaningful) and each part's value and interval: the same numbers as metrics.json's `findings`."""
    out = {}
    for n, c in block["claims"].items():
        if c["verdict"] in F.CODE:
            out[f"finding_{n}_verdict"] = F.CODE[c["verdict"]]
        for name, p in c["parts"].items():
            if "value" in p and None not in (p["value"], *p["ci"]):
                out.update({f"{name}": p["value"], f"{name}_ci_low": p["ci"][0], f"{name}_ci_high": p["ci"][1]})
    return out


def mlflow_tags(block: dict) -> dict[str, str]:
    return {f"finding_{n}": c["verdict"] for n, c in block["claims"].items()}
