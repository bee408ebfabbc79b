"""The arms end to end on one pair of the embedded default (`toy`, few steps): every arm trains, samples and
is scored; the report compares each with the method; and adding an arm reruns only that arm's stages."""

from __future__ import annotations

import json
import shutil

import pytest

from dreamsolo.layout import is_model
from studykit import copy_study, edit_params, make_study, run

pytestmark = pytest.mark.e2e
PAIR = "cat_grass"  # has a mask file (data/pairs/cat_grass/instance_mask.png)
ARMS = ["two_stage", "joint", "composite", "masked", "lora_merge"]
TOY = {"model.preset": "toy", "presets.toy.train_steps": 3, "presets.toy.sample_steps": 3, "sample.batch_size": 8}


def arm_stages(*arms: str) -> set[str]:
    return {f"{s}@{PAIR}-{a}" for s in ("train_arm", "sample_arm", "evaluate_arm") for a in arms}


def status(root, edits: dict | None = None) -> set[str]:
    original = (root / "params.yaml").read_text()
    try:
        if edits:
            edit_params(root, edits)
        # `code` checks params.yaml before any stage runs, so every params edit touches it (it
        # rewrites the same fingerprints: nothing downstream reruns for it); the stages are the claim
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout)) - {"code"}
    finally:
        (root / "params.yaml").write_text(original)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = make_study(tmp_path_factory.mktemp("arms") / "study", [PAIR], TOY, git=True)
    run(["dvc", "repro"], root)
    return root


def test_adding_an_arm_reruns_only_that_arm(study):
    assert status(study) == set()
    # arm settings of arms that do not run: nothing
    assert status(study, {"arms.composite.weight": 0.5, "arms.lora_merge.scene_weight": 0.5}) == set()
    edit_params(study, {"arms.run": ["two_stage"]})
    run(["dvc", "repro"], study)
    assert status(study) == set()
    assert status(study, {"arms.run": ["two_stage", "masked"]}) == arm_stages("masked") | {"report"}
    # an arm's own settings: that arm's training only
    edit_params(study, {"arms.run": ["two_stage", "lora_merge"]})
    run(["dvc", "repro"], study)
    assert status(study, {"arms.lora_merge.instance_weight": 0.5}) == {f"train_arm@{PAIR}-lora_merge"}
    # the method's Stage II settings: the method and every arm that reads them, never Stage I
    changed = status(study, {"presets.toy.train_instance": {"steps": 60, "lr": 2e-4, "train_text_encoder": True}})
    assert changed == {f"train_instance@{PAIR}", "arm_inputs"}  # arm_inputs' bytes change, so its arms follow


def test_every_arm_trains_samples_and_is_compared(study):
    edit_params(study, {"arms.run": ARMS})
    out = run(["dvc", "repro"], study).stdout
    assert f"Running stage 'train_scene@{PAIR}'" not in out  # Stage I is shared, never retrained for an arm
    for arm in ARMS:
        model = study / "models" / PAIR / "arms" / arm
        assert is_model(model), arm
        manifest = (study / "data/samples_arms" / arm / PAIR / "manifest.csv").read_text().splitlines()
        method_manifest = (study / "data/samples" / PAIR / "manifest.csv").read_text().splitlines()
        assert manifest == method_manifest  # the same prompts and seeds as the method
        assert json.loads((study / "reports/arms" / arm / f"{PAIR}.json").read_text())["pair"] == PAIR
    meta = {a: json.loads((study / "models" / PAIR / "arms" / a / "train_meta.json").read_text()) for a in ARMS}
    assert meta["joint"]["steps"] == 6  # Stage I's 3 steps plus Stage II's 3
    assert meta["two_stage"]["settings"]["replay_weight"] == 0.0
    assert meta["joint"]["replay_prompt"] == "a photo of olis grass field"
    assert meta["lora_merge"]["merge"]["scene_weight"] == 1.0
    assert (study / "models" / PAIR / "arms" / "composite" / "composite.png").is_file()
    assert "loss_composite" in (study / "reports/train" / PAIR / "arm_composite.csv").read_text().splitlines()[0]
    metrics = json.loads((study / "reports/metrics.json").read_text())["arms"]
    assert metrics["arms"] == ARMS and set(metrics["vs_method"]) == set(ARMS)
    c = metrics["vs_method"]["joint"]["composed_lpips_scene"]
    lo, hi = c["overall"]["ci"]
    assert lo <= c["overall"]["delta"] <= hi and c["pairs"][PAIR]["n"] == 2  # 2 seeds of the composed prompt
    assert metrics["comparisons"]["composed_dino"]["random"] is False  # toy's DINO is the trained toy DINO
    assert metrics["comparisons"]["composed_lpips_scene"]["random"] is False
    report = (study / "reports/report.md").read_text()
    assert "## Arms against the method" in report and "composed → scene, DINO ↑" in report
    assert "DINO ↑ (random)" not in report  # marked only where the evaluator is random (test_arms_units)
    assert (study / "reports/plots/arms_forest.png").is_file()
    assert (study / "reports/grids/arms/joint" / f"{PAIR}.png").is_file()
    assert status(study) == set()


def test_an_arm_that_needs_a_mask_says_which_file_is_missing(study, tmp_path):
    root = copy_study(study, tmp_path / "nomask")  # reproduced: only the arm's own inputs left to run
    edit_params(root, {"arms.run": ["masked"]})
    shutil.rmtree(root / "models" / PAIR / "arms" / "masked", ignore_errors=True)  # (an earlier test's)
    (root / "data/pairs" / PAIR / "instance_mask.png").unlink()
    proc = run(["dvc", "repro", f"train_arm@{PAIR}-masked"], root, check=False)
    assert proc.returncode != 0
    assert f"data/pairs/{PAIR}/ has no instance mask" in proc.stdout + proc.stderr
    assert not (root / "models" / PAIR / "arms" / "masked").exists()
