"""`dvc repro` on a 2-pair copy of the study: every declared output, no-op rerun, exact invalidation."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from studykit import edit_params, make_study, run

pytestmark = pytest.mark.e2e
PAIRS = ["cat_grass", "cat_brick"]  # share the class `cat`: one priors stage serves both
CLASSES = ["cat", "grass", "brick"]


def ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def per_pair(*stages: str) -> set[str]:
    return {f"{s}@{p}" for s in stages for p in PAIRS}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, str]:
    root = make_study(tmp_path_factory.mktemp("e2e") / "study", PAIRS, git=True)
    out = run(["dvc", "repro"], root)
    return root, out.stdout


def test_repro_runs_every_stage_once(study):
    root, stdout = study
    expected = {"base", "report"} | per_pair("prepare", "train_scene", "train_instance", "sample", "evaluate")
    expected |= {f"generate_priors@{c}" for c in CLASSES}
    assert ran(stdout) == expected


def test_every_declared_output_exists(study):
    root, _ = study
    assert (root / "models/base/tiny/model_index.json").is_file()
    assert (root / "models/base/tiny/unet/diffusion_pytorch_model.safetensors").is_file()
    for c in CLASSES:
        prior = root / "data/priors" / c
        assert sorted(p.name for p in prior.glob("*.png")) == ["0000.png", "0001.png"]
        assert (prior / "latents.safetensors").is_file()
    n_prompts = 1 + 1 + 4  # composed, one recontext (FAST), scene, instance, two class prompts
    for p in PAIRS:
        for role in ("scene", "instance"):
            assert (root / "data/prepared" / p / f"{role}.png").is_file()
            assert (root / "models" / p / role / "unet/diffusion_pytorch_model.safetensors").is_file()
            log = list(csv.DictReader(open(root / "reports/train" / p / f"{role}.csv")))
            assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
        rows = list(csv.DictReader(open(root / "data/samples" / p / "manifest.csv")))
        assert len(rows) == n_prompts * 2
        assert all((root / "data/samples" / p / r["file"]).is_file() for r in rows)
        assert all("sks" not in r["prompt_clean"] and "olis" not in r["prompt_clean"] for r in rows)
        summary = json.loads((root / "reports/pairs" / f"{p}.json").read_text())
        assert summary["n_samples"] == n_prompts * 2 and summary["evaluators_pretrained"] is False
        assert (root / "reports/pairs" / f"{p}.csv").is_file()
        assert (root / "reports/grids" / f"{p}.png").is_file()
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics["pairs"]) == set(PAIRS)
    assert "not meaningful" in metrics["warning"]
    for name in ("index.html", "report.md", "pairs.md", "pairs.csv"):
        assert (root / "reports" / name).is_file()
    assert list((root / "reports/plots").glob("*.png"))
    assert not list(root.rglob(".*.tmp-*")), "temporary outputs left behind"


def test_second_repro_runs_nothing(study):
    root, _ = study
    out = run(["dvc", "repro"], root)
    assert ran(out.stdout) == set()
    assert "up to date" in run(["dvc", "status"], root).stdout


def status_after(root: Path, edits: dict) -> set[str]:
    """Stages `dvc status` reports as directly changed by `edits` (params restored afterwards)."""
    original = (root / "params.yaml").read_text()
    try:
        edit_params(root, edits)
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout))
    finally:
        (root / "params.yaml").write_text(original)


def test_status_is_exact_per_setting(study):
    root, _ = study
    assert status_after(root, {"sample.guidance_scale": 5.0}) == per_pair("sample")
    assert status_after(root, {"sample.num_images": 3}) == per_pair("sample")
    assert status_after(root, {"train_instance.defaults.lr": 1e-5}) == per_pair("train_instance")
    assert status_after(root, {"pairs.cat_grass.train_instance": {"lr": 1e-5}}) == {
        "train_instance@cat_grass", "report"}
    assert status_after(root, {"train_scene.defaults.steps": 300}) == per_pair("train_scene")
    # another category's defaults do not touch these two animal pairs
    assert status_after(root, {"train_instance.by_category.human": {"lr": 3e-6}}) == set()
    assert status_after(root, {"evaluate.batch_size": 8}) == per_pair("evaluate")


def test_sampling_change_reruns_only_sample_evaluate_report(study):
    root, _ = study
    edit_params(root, {"sample.guidance_scale": 5.0})
    out = run(["dvc", "repro"], root)
    assert ran(out.stdout) == per_pair("sample", "evaluate") | {"report"}
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["sample"]["guidance_scale"] == 5.0
