"""The floor (the base model on the pair's own prompts and seeds): `evaluate` scores it next to the
fine-tuned samples with the same evaluators, and every report table shows it.

The stage functions run on a fabricated study (noise PNGs in the documented formats, no diffusion);
the full pipeline with `sample_base` is covered by test_e2e.py."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dreamsolo.report import floor
from studykit import make_study

PARTIAL = ("random evaluators, numbers not meaningful: clip_t, clip_i, clip_i_scene (CLIP); dino, dino_scene, pres (DINO); "
           "pretrained: lpips_instance, lpips_scene, div (LPIPS)")
PAIRS = ["cat_grass", "cup_brick"]
KINDS = [("composed", "a photo of sks cat in olis grass field", "a photo of cat in grass field"),
         ("scene", "a photo of olis grass field", "a photo of grass field"),
         ("instance", "a photo of sks cat", "a photo of cat"),
         ("class_instance", "a photo of a cat", "a photo of a cat"),
         ("class_scene", "a photo of a grass field", "a photo of a grass field")]
N = 2  # images per prompt


def _png(path, rng, size=64):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _samples(folder, rng):
    rows = []
    for kind, prompt, clean in KINDS:
        for seed in range(N):
            name = f"{len(rows):04d}.png"
            _png(folder / name, rng)
            rows.append({"file": name, "kind": kind, "prompt": prompt, "prompt_clean": clean, "seed": seed})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)


pytestmark = pytest.mark.e2e  # the chain through the report (slow: not in the day-to-day run)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """evaluate@<pair> for two fabricated pairs, then report; returns (root, {pair: summary}, calls)."""
    mp = pytest.MonkeyPatch()
    root = make_study(tmp_path_factory.mktemp("floor") / "study", PAIRS)
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    rng = np.random.default_rng(0)
    for p in PAIRS:
        _png(root / "data/prepared" / p / "scene.png", rng)
        _png(root / "data/prepared" / p / "instance.png", rng)
        _samples(root / "data/samples" / p, rng)
        _samples(root / "data/samples_base" / p, rng)
    for p in PAIRS:  # the report's loss plot reads these; absent ones are drawn as "no log"
        (root / "reports/train" / p).mkdir(parents=True, exist_ok=True)

    import dreamsolo.metrics.evaluators as evaluators
    import dreamsolo.metrics.score as score
    from dreamsolo.config import load_study
    from dreamsolo.stages.evaluate import run as evaluate_stage
    from dreamsolo.stages.report import run as report_stage

    calls = {"load": 0, "score": []}
    real_load, real_score = evaluators.load_evaluators, score.score_samples

    def load(*a, **k):
        calls["load"] += 1
        return real_load(*a, **k)

    def scored(manifest, images, *a, **k):
        calls["score"].append(len(images))
        return real_score(manifest, images, *a, **k)

    mp.setattr(evaluators, "load_evaluators", load)
    mp.setattr(score, "score_samples", scored)
    s = load_study(root)
    summaries = {p: evaluate_stage(s, p).to_json() for p in PAIRS}  # the typed result, as the file has it
    report_stage(s)
    yield root, summaries, calls
    mp.undo()


def _stat(values):
    v = pd.Series(values, dtype=float).dropna()
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else 0.0), len(v)


def test_evaluators_load_once_and_both_sets_score_in_one_pass(study):
    _, _, calls = study
    assert calls["load"] == len(PAIRS)  # once per pair (one process per stage), not once per sample set
    assert calls["score"] == [2 * len(KINDS) * N] * len(PAIRS)  # fine-tuned + base together


def test_pair_json_has_base_block_from_the_base_csv(study):
    root, summaries, _ = study
    for p in PAIRS:
        data = json.loads((root / "reports/pairs" / f"{p}.json").read_text())
        assert data == json.loads(json.dumps(summaries[p]))
        base = data["base"]
        assert set(base) == {"model", "n_samples", "metrics", "by_kind", "div", "pres"}
        assert base["model"] == "models/base/tiny" and base["n_samples"] == len(KINDS) * N
        assert set(base["by_kind"]) == set(data["by_kind"])
        # the fine-tuned side also has lpips_base (LPIPS to the base model's sample): 0 for the base itself
        assert set(base["metrics"]) | {"lpips_base"} == set(data["metrics"])
        csv = pd.read_csv(root / "reports/pairs_base" / f"{p}.csv")
        assert list(csv.columns[:2]) == ["pair", "category"] and len(csv) == len(KINDS) * N
        for m, s in base["metrics"].items():
            mean, std, n = _stat(csv[m])
            assert s["n"] == n and s["mean"] == pytest.approx(mean) and s["std"] == pytest.approx(std)
        pres = csv.loc[csv["kind"] == "class_instance", "dino"]
        assert base["pres"]["mean"] == pytest.approx(pres.mean())
        for m, d in data["delta"].items():
            tuned = data[m] if m in ("div", "pres") else data["metrics"][m]
            base_stat = base[m] if m in ("div", "pres") else base["metrics"][m]
            assert d == pytest.approx(tuned["mean"] - base_stat["mean"])


def test_joint_scoring_matches_scoring_each_set_alone(study):
    """Scoring both sets in one pass must not change a number (no leakage between the sets)."""
    root, _, _ = study
    from dreamsolo.config import load_study
    from dreamsolo.metrics.evaluators import load_evaluators
    from dreamsolo.metrics.score import score_samples

    s = load_study(root)
    ev = load_evaluators(s.evaluate, "cpu", root)
    p = PAIRS[0]
    refs = [Image.open(root / "data/prepared" / p / f"{r}.png").convert("RGB") for r in ("instance", "scene")]
    for folder, report in (("samples", "pairs"), ("samples_base", "pairs_base")):
        manifest = pd.read_csv(root / "data" / folder / p / "manifest.csv")
        images = [Image.open(root / "data" / folder / p / f).convert("RGB") for f in manifest["file"]]
        alone = score_samples(manifest, images, *refs, ev, s.evaluate.batch_size)
        joint = pd.read_csv(root / "reports" / report / f"{p}.csv")
        for m in ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene"):
            np.testing.assert_allclose(joint[m], alone[m], rtol=1e-4, atol=1e-5, err_msg=f"{folder} {m}")


def test_study_summary_base_and_delta(study):
    root, summaries, _ = study
    from dreamsolo.metrics.aggregate import study_summary
    from dreamsolo.metrics.pair_result import PairResult

    out = study_summary([PairResult.from_json(s, p) for p, s in summaries.items()])
    for m in ("clip_t", "lpips_instance", "div"):
        pick = (lambda d: d[m]) if m == "div" else (lambda d: d["metrics"][m])
        base_means = [pick(s["base"])["mean"] for s in summaries.values()]
        deltas = [s["delta"][m] for s in summaries.values()]
        assert out["base"]["overall"][m]["mean"] == pytest.approx(np.mean(base_means))
        assert out["base"]["overall"][m]["std"] == pytest.approx(np.std(base_means, ddof=1))
        assert out["delta"]["overall"][m]["mean"] == pytest.approx(np.mean(deltas))
        assert out["delta"]["overall"][m]["std"] == pytest.approx(np.std(deltas, ddof=1))
        assert out["delta"]["by_category"]["animal"][m]["n"] == 1


def test_pairs_csv_and_metrics_json_carry_the_floor(study):
    root, summaries, _ = study
    csv = pd.read_csv(root / "reports/pairs.csv", float_precision="round_trip").set_index("pair")
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics["base"]) == set(metrics["delta"]) == {"overall", "by_category", "pairs"}
    for p, s in summaries.items():
        for m in ("clip_t", "clip_i", "dino", "lpips_instance", "lpips_scene"):
            assert csv.loc[p, f"{m}_base_mean"] == s["base"]["metrics"][m]["mean"]
            assert csv.loc[p, f"{m}_base_std"] == s["base"]["metrics"][m]["std"]
            assert csv.loc[p, f"{m}_delta"] == s["delta"][m]
            assert metrics["base"]["pairs"][p][m] == csv.loc[p, f"{m}_base_mean"]
            assert metrics["delta"]["pairs"][p][m] == csv.loc[p, f"{m}_delta"]
        assert metrics["base"]["pairs"][p]["n_samples"] == s["base"]["n_samples"]
    assert metrics["delta"]["overall"]["clip_t"] == pytest.approx(np.mean(csv["clip_t_delta"]))
    for block in (metrics["base"], metrics["delta"]):
        for section in (block["overall"], *block["pairs"].values(), *block["by_category"].values()):
            assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in section.values())


def test_compare_csvs_for_dvc_plots(study):
    root, summaries, _ = study
    for m in ("clip_t", "lpips_instance", "lpips_scene"):
        df = pd.read_csv(root / "reports/compare" / f"{m}.csv")
        assert list(df.columns) == ["row", "pair", "model", "mean", "std"]
        assert list(df["row"]) == [r for p in PAIRS for r in (p, f"{p} · base")]
        for p in PAIRS:
            got = df[df["pair"] == p].set_index("model")["mean"]
            assert got["fine-tuned"] == pytest.approx(summaries[p]["metrics"][m]["mean"])
            assert got["base"] == pytest.approx(summaries[p]["base"]["metrics"][m]["mean"])


def test_markdown_tables_show_base_rows_and_deltas(study):
    root, summaries, _ = study
    md = (root / "reports/report.md").read_text()
    assert "↳ base model" in md and "Δ = fine-tuned − base" in md
    table = md.split("## Study: pairs × metrics")[1].split("## Per-category")[0]
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    for p in PAIRS:
        i = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {p} |"))
        assert lines[i + 1].startswith("| ↳ base model |")
        d = summaries[p]["delta"]["clip_t"]
        assert floor.fmt_delta(d) in lines[i]
    assert any(ln.startswith("| **study (all pairs)** |") and "Δ" in ln for ln in lines)
    for section in ("## Per-category summary", "## Metrics by prompt kind"):
        assert "↳ base model" in md.split(section)[1].split("## ")[0], section
    assert "](grids/base/cat_grass.png)" in md and (root / "reports/grids/base/cat_grass.png").is_file()
    assert "↳ base model" in (root / "reports/pairs.md").read_text()


def test_page_shows_floor_rows_coloured_deltas_and_base_grids(study):
    root, summaries, _ = study
    from dreamsolo.report import html

    page = (root / "reports/index.html").read_text()
    assert page.count('<tr class="base">') >= len(PAIRS) + 1 + 2 + len(KINDS)  # pairs, study, categories, kinds
    assert re.search(r'<span class="d (better|worse|same)">Δ [+−]?\d\.\d{3}</span>', page)
    for p in PAIRS:
        assert f'src="grids/base/{p}.png"' in page
    assert html.missing_refs(page, root / "reports") == []
    # the sign of each pair's Δ class follows the metric's direction
    d = summaries[PAIRS[0]]["delta"]["lpips_instance"]
    expected = "same" if round(d, 3) == 0 else ("better" if d < 0 else "worse")
    row = page.split(f"<td>{PAIRS[0]}</td>")[1].split("</tr>")[0]
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert f'class="d {expected}"' in cells[3]  # clip_t, clip_i, dino, lpips_instance


def test_mlflow_evaluate_run_has_base_tables_metrics_and_note(study):
    root, summaries, _ = study
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    exp = client.get_experiment_by_name("dreamsolo")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'evaluate'")
    assert {r.data.tags["dvc_stage"] for r in runs} == {f"evaluate@{p}" for p in PAIRS}
    for r in runs:
        s = summaries[r.data.tags["pair"]]
        assert r.data.metrics["base_clip_t_mean"] == pytest.approx(s["base"]["metrics"]["clip_t"]["mean"])
        assert r.data.metrics["delta_clip_t"] == pytest.approx(s["delta"]["clip_t"])
        # the study's default evaluators: LPIPS pretrained (shipped trunk), CLIP and DINO random
        assert r.data.tags["mlflow.note.content"] == f"⚠ {PARTIAL}"
        assert r.data.tags["random_metrics"] == "clip_t,clip_i,dino,clip_i_scene,dino_scene,pres"
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"samples_metrics.json", "samples_metrics_base.json", "diversity_base.json"} <= names
