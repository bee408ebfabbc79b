"""Report stage library: fabricated study of 2 pairs in tmp_path (tiny PNGs, CSV/JSON in the documented formats)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamsolo.metrics import NOT_PRETRAINED_WARNING
from dreamsolo.metrics.pair_result import PairResult, Scores, Stat
from dreamsolo.report import build_report, html, tables

PAIRS = {"cat_grass": "animal", "cup_brick": "object"}
WARNING = "evaluators not pretrained: numbers are not meaningful"
PROMPTS = [  # (kind, prompt, clean prompt)
    ("composed", "a photo of sks cat in olis grass field", "a photo of cat in grass field"),
    ("recontext", "a watercolor painting of sks cat | <b>&", "a watercolor painting of cat | <b>&"),
    ("scene", "a photo of olis grass field", "a photo of grass field"),
    ("instance", "a photo of sks cat", "a photo of cat"),
    ("class_instance", "a photo of a cat", "a photo of a cat"),
    ("class_scene", "a photo of a grass field", "a photo of a grass field"),
]
N_PER_PROMPT = 3
CHECK_PAGE = Path(__file__).resolve().parents[1] / "tools" / "check_page.py"


def _png(path: Path, rng: np.random.Generator, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _stat(values: pd.Series) -> Stat:
    v = values.dropna()
    return Stat(float(v.mean()), float(v.std(ddof=0)), int(len(v)))


def _fabricate_samples(root: Path, pair: str, category: str, rng: np.random.Generator, base: bool) -> Scores:
    """Noise samples + manifest, their per-sample CSV (fine-tuned, or with `base` the floor) and their scores."""
    samples, report = ("samples_base", "pairs_base") if base else ("samples", "pairs")
    rows = []
    for kind, prompt, clean in PROMPTS:
        for seed in range(N_PER_PROMPT):
            file = f"{len(rows):04d}.png"
            _png(root / "data" / samples / pair / file, rng)
            rows.append({"file": file, "kind": kind, "prompt": prompt, "prompt_clean": clean, "seed": seed})
    manifest = pd.DataFrame(rows)
    manifest.to_csv(root / "data" / samples / pair / "manifest.csv", index=False)
    per_sample = manifest.assign(pair=pair, category=category)
    for m in tables.SAMPLE_METRICS:
        per_sample[m] = rng.uniform(0.1, 0.9, len(per_sample))
    per_sample.loc[per_sample["kind"].str.startswith("class"), ["clip_i", "dino"]] = np.nan
    if not base:  # the fine-tuned table's LPIPS to the base sample of the same prompt and seed
        per_sample["lpips_base"] = rng.uniform(0.0, 0.5, len(per_sample))
    (root / "reports" / report).mkdir(parents=True, exist_ok=True)
    per_sample.to_csv(root / "reports" / report / f"{pair}.csv", index=False)
    return Scores(
        n_samples=len(per_sample), metrics={m: _stat(per_sample[m]) for m in tables.SAMPLE_METRICS},
        by_kind={k: {m: _stat(g[m]) for m in tables.SAMPLE_METRICS if g[m].notna().any()}
                 for k, g in per_sample.groupby("kind")},
        div=Stat(float(rng.uniform(0.2, 0.5)), 0.02, len(PROMPTS)), pres=Stat(float(rng.uniform(0.3, 0.7)), 0.03, 2))


def _fabricate_pair(root: Path, pair: str, category: str, rng: np.random.Generator, pretrained: bool) -> None:
    _png(root / "data" / "prepared" / pair / "scene.png", rng)
    _png(root / "data" / "prepared" / pair / "instance.png", rng)
    tuned = _fabricate_samples(root, pair, category, rng, base=False)
    base = _fabricate_samples(root, pair, category, rng, base=True)
    result = PairResult(pair=pair, category=category, evaluators_pretrained=pretrained,
                        warning=None if pretrained else WARNING, tuned=tuned, base=base,
                        base_model="models/base/tiny")
    (root / "reports" / "pairs" / f"{pair}.json").write_text(json.dumps(result.to_json()))
    for stage in ("scene", "instance"):
        steps = np.arange(0, 30, 5)
        log = pd.DataFrame({"step": steps, "loss": rng.uniform(0.1, 0.3, len(steps)),
                            "loss_instance": rng.uniform(0.05, 0.2, len(steps)),
                            "loss_prior": rng.uniform(0.05, 0.2, len(steps)),
                            "loss_replay": 0.0 if stage == "scene" else rng.uniform(0, 0.1, len(steps)),
                            "lr": 5e-6})
        (root / "models" / pair / stage).mkdir(parents=True, exist_ok=True)
        log.to_csv(root / "models" / pair / stage / "train_log.csv", index=False)


def fake_study_summary(root: Path, pairs: dict[str, str], pretrained: bool) -> dict:
    """What the metrics team's study aggregate hands over: per metric, mean of pair means and the
    sample std between pairs (ddof=1), overall and per category; the same for the floor (`base`) and
    for the per-pair gains (`delta`)."""
    dicts = [json.loads((root / "reports" / "pairs" / f"{p}.json").read_text()) for p in pairs]

    def mean(d: dict, m: str) -> float:
        return d[m]["mean"] if m in ("div", "pres") else d["metrics"][m]["mean"]

    def across(ds: list[dict], value=mean) -> dict:
        out = {}
        for m in tables.METRICS:
            means = pd.Series([value(d, m) for d in ds])
            out[m] = {"mean": float(means.mean()), "std": float(means.std(ddof=1)) if len(ds) > 1 else 0.0,
                      "n": len(ds)}
        return out

    def split(value=mean) -> dict:
        return {"overall": across(dicts, value),
                "by_category": {c: across([d for d in dicts if d["category"] == c], value)
                                for c in set(pairs.values())}}

    summary = {"evaluators_pretrained": pretrained, "n_pairs": len(dicts), "pairs": list(pairs), **split(),
               "base": split(lambda d, m: mean(d["base"], m)), "delta": split(lambda d, m: d["delta"][m])}
    if not pretrained:
        summary["warning"] = WARNING
    return summary


def make_study(root: Path, pretrained: bool = False) -> dict:
    rng = np.random.default_rng(0)
    for pair, cat in PAIRS.items():
        _fabricate_pair(root, pair, cat, rng, pretrained)
    return fake_study_summary(root, PAIRS, pretrained)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path]]:
    root = tmp_path_factory.mktemp("study")
    summary = make_study(root)
    return root, summary, build_report(root, tables.read_results(root, list(PAIRS)), summary)


def test_every_declared_output_is_written(study):
    root, _, out = study
    expected = {"pairs_csv", "pairs_md", "report_md", "findings_md", "metrics_json", "checks_json", "index_html",
                "plot_metrics", "plot_loss", "plot_kinds", *(f"grid_{p}" for p in PAIRS),
                *(f"gridbase_{p}" for p in PAIRS), "compare_clip_t", "compare_lpips_instance", "compare_lpips_scene"}
    assert set(out) == expected
    for name, path in out.items():
        assert path.is_file() and path.stat().st_size > 0, name
        assert path.resolve().is_relative_to((root / "reports").resolve()), name
    assert not list((root / "reports").rglob(".*.tmp-*")), "temporaries left behind"


def test_plots_are_valid_pngs(study):
    _, _, out = study
    for name, path in out.items():
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                assert im.width > 200 and im.height > 100, (name, im.size)


def test_pairs_csv_equals_json_means(study):
    root, _, out = study
    csv = pd.read_csv(out["pairs_csv"], float_precision="round_trip").set_index("pair")
    assert list(csv.index) == list(PAIRS)
    for pair, cat in PAIRS.items():
        data = json.loads((root / "reports" / "pairs" / f"{pair}.json").read_text())
        assert csv.loc[pair, "category"] == cat
        for m in tables.METRICS:
            stat = data[m] if m in ("div", "pres") else data["metrics"][m]
            assert csv.loc[pair, f"{m}_mean"] == stat["mean"], (pair, m)
            assert csv.loc[pair, f"{m}_std"] == stat["std"], (pair, m)
    metrics = json.loads(out["metrics_json"].read_text())["pairs"]
    for pair in PAIRS:
        for m in tables.METRICS:
            assert metrics[pair][m] == csv.loc[pair, f"{m}_mean"], (pair, m)


def test_metrics_json_numeric_and_warned(study):
    _, summary, out = study
    data = json.loads(out["metrics_json"].read_text())
    assert data["evaluators_pretrained"] is False
    assert data["warning"] == WARNING
    assert set(data["pairs"]) == set(PAIRS)
    for m, s in summary["overall"].items():
        assert math.isclose(data["overall"][m], s["mean"])
    for section in (data["overall"], *data["pairs"].values(), *data["by_category"].values()):
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in section.values())
    assert {"div", "pres"} <= set(data["overall"])


def test_metrics_json_pretrained_has_no_warning():
    none = Stat(None, None, 0)
    scores = Scores(n_samples=2, metrics={"clip_t": Stat(0.3, 0.01, 2), "dino": Stat(float("nan"), None, 1)},
                    by_kind={}, div=none, pres=none)
    pair = PairResult(pair="a", category="object", evaluators_pretrained=True, warning=None, tuned=scores,
                      base=scores, base_model="models/base/tiny")
    summary = {"overall": {"clip_t": {"mean": 0.3, "std": 0.0, "n": 2}, "dino": {"mean": None, "std": None, "n": 0}},
               "evaluators_pretrained": True}
    data = tables.metrics_json([pair], summary)
    assert "warning" not in data and data["evaluators_pretrained"] is True
    assert data["pairs"]["a"] == {"clip_t": 0.3, "n_samples": 2}
    assert data["overall"] == {"clip_t": 0.3}  # null / NaN means are left out, never written as NaN
    assert tables.pairs_table([pair]).loc["a", "dino"] == "–"
    # One unpretrained pair is enough to warn, even if the summary says otherwise.
    data = tables.metrics_json([dataclasses.replace(pair, evaluators_pretrained=False)], summary)
    assert data["warning"] == NOT_PRETRAINED_WARNING


def test_report_md_has_references_warning_and_links(study):
    root, _, out = study
    md = out["report_md"].read_text()
    for needle in ("0.305", "0.803", "0.668", tables.REFERENCE_LABEL, WARNING, "Per-category"):
        assert needle in md, needle
    for link in ("plots/metrics.png", "plots/loss.png", "plots/kinds.png", "grids/cat_grass.png"):
        assert f"]({link})" in md and (root / "reports" / link).is_file()
    pairs_md = out["pairs_md"].read_text()
    assert WARNING in pairs_md and "0.305" in pairs_md and "cup_brick" in pairs_md


def test_index_html_banner_escaping_and_local_links(study):
    root, _, out = study
    page = out["index_html"].read_text()
    assert 'class="banner"' in page and WARNING in page
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert tables.REFERENCE_LABEL in page and "0.803" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
    srcs = [s for s in html.local_refs(page) if not s.startswith("#")]
    assert len([s for s in srcs if s.endswith(".png")]) >= 3 + len(PAIRS)
    reports = (root / "reports").resolve()
    for src in srcs:
        full = (reports / src).resolve()
        assert full.is_relative_to(reports) and full.is_file(), src
    assert html.missing_refs(page, root / "reports") == []
    assert html.missing_refs('<img src="../data/x.png"><img src="https://x/y.png">', reports) == [
        "../data/x.png", "https://x/y.png"]


def test_markdown_escapes_pipes():
    df = pd.DataFrame({"clip_t": ["a | b"]}, index=pd.Index(["x|y"], name="pair"))
    md = tables.to_markdown(df)
    assert md.splitlines()[0] == "| pair | CLIP-T ↑ |"
    assert md.splitlines()[2] == "| x\\|y | a \\| b |"


def test_tables_shapes(study):
    root, summary, _ = study
    dicts = tables.read_results(root, list(PAIRS))
    per_sample = tables.read_samples(root, dicts)
    table = tables.pairs_table(dicts)
    assert list(table.index) == list(PAIRS) and list(table.columns) == ["category", *tables.METRICS]
    assert all("±" in v for v in table["clip_t"])
    cats = tables.category_table(dicts, summary)
    assert list(cats.index) == ["object", "animal"]
    kinds = tables.kind_table(per_sample)
    assert list(kinds.index) == list(tables.KINDS)
    assert kinds.loc["class_instance", "clip_i"] == "–"


def test_pretrained_report_has_no_banner(tmp_path):
    summary = make_study(tmp_path, pretrained=True)
    out = build_report(tmp_path, tables.read_results(tmp_path, list(PAIRS)), summary)
    page = out["index_html"].read_text()
    assert 'class="banner"' not in page and WARNING not in out["report_md"].read_text()
    assert "warning" not in json.loads(out["metrics_json"].read_text())


def test_missing_pair_metrics_is_a_clear_error(tmp_path):
    summary = make_study(tmp_path)
    with pytest.raises(FileNotFoundError, match="evaluate"):
        build_report(tmp_path, tables.read_results(tmp_path, [*PAIRS, "horse_gravel"]), summary)
    with pytest.raises(ValueError, match="safe folder name"):
        build_report(tmp_path, tables.read_results(tmp_path, ["../etc"]), summary)


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="chromium not installed (apt-get install chromium) - page not checked in a browser")
def test_page_loads_in_headless_chromium(study):
    root, _, out = study
    proc = subprocess.run([sys.executable, str(CHECK_PAGE), str(out["index_html"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "images loaded" in proc.stdout


def test_check_page_without_chromium_says_how_to_install(study):
    _, _, out = study
    proc = subprocess.run([sys.executable, str(CHECK_PAGE), str(out["index_html"]), "--chromium", "/nonexistent"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "apt-get install" in proc.stderr


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="chromium not installed (apt-get install chromium) - page not checked in a browser")
def test_check_page_flags_a_broken_image(tmp_path):
    page = tmp_path / "index.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    '<img src="plots/missing.png"></body></html>')
    proc = subprocess.run([sys.executable, str(CHECK_PAGE), str(page)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "image did not load: plots/missing.png" in proc.stderr


def test_method_checks_match_the_per_sample_tables(study):
    """reports/checks.json is computed from the per-sample CSVs (paired by seed), and report.md and
    index.html show those same numbers."""
    import json

    from dreamsolo.metrics.checks import pair_checks

    root, _, out = study
    checks = json.loads(out["checks_json"].read_text())
    md, page = out["report_md"].read_text(), out["index_html"].read_text()
    for pair in PAIRS:
        tuned, base = (pd.read_csv(root / "reports" / d / f"{pair}.csv") for d in ("pairs", "pairs_base"))
        assert checks["pairs"][pair] == json.loads(json.dumps(pair_checks(tuned, base)))
        d = checks["pairs"][pair]["binding"]["delta"]
        cell = f"{d['mean']:+.3f} ± {d['std']:.3f}"
        assert cell in md and cell in page
    results = tables.read_results(root, list(PAIRS))
    assert checks["random_metrics"] == [m for m in ("clip_t", "lpips_instance", "lpips_scene")
                                        if any(m in r.random_metrics for r in results)]
    assert ("randomly initialised in this run: the checks on" in md) == bool(checks["random_metrics"])
