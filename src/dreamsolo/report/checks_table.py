"""The report's "Method checks" section and reports/checks.json: does each claim of the method hold, pair
by pair, paired by seed (metrics.method), with the seed-to-seed spread beside each figure."""

from __future__ import annotations

import html as _html

import pandas as pd

from dreamsolo.metrics.checks import CHECKS, pair_checks, study_checks

HEAD = {"binding": "binding: ⟨S⟩ vs class prompt", "binding_vs_base": "binding: vs base",
        "scene_kept": "Stage I kept: ⟨V⟩ scene vs base", "composed_instance": "composed → instance vs base",
        "composed_scene": "composed → scene vs base", "composed_text": "composed CLIP-T vs base",
        "class_drift": "class drift (LPIPS to base)"}
NOTE = ("Each cell: mean over seeds of Δ = metric(fine-tuned side) − metric(comparison side), paired by seed, "
        "± its std over seeds; LPIPS columns: ✓ where Δ < 0 (closer); the CLIP-T column: ✓ where Δ > 0 (the "
        "samples agree with the prompt better); ✗ otherwise. Class drift: LPIPS of "
        "the class prompt's samples (no identifier) to the base model's samples of the same seed, ± std over "
        "seeds: how far fine-tuning moved the prior (lower = kept).")


def compute(per_sample: pd.DataFrame, per_sample_base: pd.DataFrame) -> dict:
    """{"pairs": {pair: checks}, "study": per-check summary over pairs} (the shape of reports/checks.json)."""
    pairs = {}
    for pair in dict.fromkeys(per_sample["pair"]):
        tuned = per_sample[per_sample["pair"] == pair]
        base = per_sample_base[per_sample_base["pair"] == pair]
        pairs[str(pair)] = pair_checks(tuned, base, f"reports/pairs/{pair}.csv")
    return {"pairs": pairs, "study": study_checks(pairs)}


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:+.3f} ± {std:.3f}" if std is not None else f"{mean:+.3f}"


def _cell(check: dict) -> str:
    d = check["delta"]
    return f"{_pm(d['mean'], d['std'])} {'✓' if check['holds'] else '✗'}"


def rows(checks: dict) -> list[list[str]]:
    """Header, one row per pair, then the study row (claims holding / pairs, mean Δ ± std over pairs)."""
    out = [["pair", *[HEAD[c.name] for c in CHECKS], HEAD["class_drift"]]]
    for pair, ch in checks["pairs"].items():
        drift = ch["class_drift"]
        out.append([pair, *[_cell(ch[c.name]) for c in CHECKS], _pm(drift["mean"], drift["std"]).lstrip("+")])
    st = checks["study"]
    study = [f"{st[c.name]['holds']}/{st[c.name]['pairs']} ✓ · {_pm(st[c.name]['delta']['mean'], st[c.name]['delta']['std'])}"
             for c in CHECKS]
    drift = st["class_drift"]
    out.append(["**study**", *study, _pm(drift["mean"], drift["std"]).lstrip("+") if drift["n"] else "–"])
    return out


_NAMES = {"lpips_instance": "LPIPS", "lpips_scene": "LPIPS", "lpips_base": "LPIPS", "clip_t": "CLIP-T"}


def random_metrics(results) -> list[str]:
    """The checks' metrics (LPIPS, CLIP-T) whose evaluator was random in any pair's results."""
    used = sorted({c.metric for c in CHECKS})  # class drift is LPIPS too: lpips_instance stands for it
    return [m for m in used if any(m in r.random_metrics for r in results)]


def random_text(random: list[str]) -> str:
    """The warning for checks whose metric came from a randomly initialised evaluator ('' if none)."""
    names = sorted({_NAMES.get(m, m) for m in random})
    if not names:
        return ""
    return f"⚠ {' and '.join(names)} {'is' if len(names) == 1 else 'are'} randomly initialised in this run: the checks on {'it' if len(names) == 1 else 'them'} are not meaningful."


def markdown(checks: dict, random: list[str]) -> str:
    table = rows(checks)
    lines = ["| " + " | ".join(table[0]) + " |", "| " + " | ".join("---" for _ in table[0]) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
    warn = f"\n> [!WARNING]\n> **{random_text(random)}**\n" if random else ""
    return "\n".join(lines) + f"\n\n{NOTE} Study row: pairs where the claim holds, and Δ ± std over pairs.\n{warn}"


def html_table(checks: dict, random: list[str]) -> str:
    table = rows(checks)
    esc = _html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in r) + "</tr>" for r in table[1:])
    warn = f'<p class="warning">{esc(random_text(random))}</p>' if random else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><p>{esc(NOTE)}</p>{warn}"
