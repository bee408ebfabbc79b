"""`dvc status` on the end-to-end study: a params key or a code file marks exactly the stages that read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from studykit import E2E_CLASSES as CLASSES, E2E_PAIRS as PAIRS, edit_params, run

pytestmark = pytest.mark.e2e


# the arms' one study-wide input stage reads every pair's training settings (docs/DESIGN.md, *arms*)
ARM_INPUTS = {"arm_inputs"}


def per_pair(*stages: str) -> set[str]:
    return {f"{s}@{p}" for s in stages for p in PAIRS}


def status_after(root: Path, edits: dict) -> set[str]:
    """Stages `dvc status` reports as directly changed by `edits` (params restored afterwards)."""
    original = (root / "params.yaml").read_text()
    try:
        edit_params(root, edits)
        # `code` checks params.yaml before any stage runs, so every params edit touches it (it
        # rewrites the same fingerprints: nothing downstream reruns for it); the stages are the claim
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout)) - {"code"}
    finally:
        (root / "params.yaml").write_text(original)


def test_status_is_exact_per_setting(e2e_study):
    root, _ = e2e_study
    # (test_e2e.py has already reproduced the study with guidance 5.0: another value)
    assert status_after(root, {"sample.guidance_scale": 4.0}) == per_pair("sample", "sample_base")
    assert status_after(root, {"sample.num_images": 3}) == per_pair("sample", "sample_base")
    assert status_after(root, {"train_instance.defaults.lr": 1e-5}) == per_pair("train_instance") | ARM_INPUTS
    assert status_after(root, {"pairs.cat_grass.train_instance": {"lr": 1e-5}}) == {
        "train_instance@cat_grass", "report"} | ARM_INPUTS
    assert status_after(root, {"train_scene.defaults.steps": 300}) == per_pair("train_scene") | ARM_INPUTS
    # another category's defaults do not touch these two animal pairs (arm_inputs re-resolves every pair; its
    # bytes for these pairs stay the same, so no arm of theirs would rerun)
    assert status_after(root, {"train_instance.by_category.human": {"lr": 3e-6}}) == ARM_INPUTS
    assert status_after(root, {"evaluate.batch_size": 8}) == per_pair("evaluate")
    # the preset's step caps: only the stages they cap (not `base`: the model does not depend on them)
    assert status_after(root, {"presets.tiny.train_steps": 3}) == per_pair("train_scene", "train_instance") | ARM_INPUTS
    # the preset's own training layer: that stage only; another preset's layer: nothing
    assert status_after(root, {"presets.tiny.train_instance": {"lr": 1e-5}}) == per_pair("train_instance") | ARM_INPUTS
    assert status_after(root, {"presets.tiny.train_scene": {"steps": 3}}) == per_pair("train_scene") | ARM_INPUTS
    assert status_after(root, {"presets.toy.train_instance": {"lr": 1e-5}}) == set()
    # the preset's denoising-step cap: every sampling stage, no training stage
    assert status_after(root, {"presets.tiny.sample_steps": 2}) == (
        per_pair("sample", "sample_base") | {f"generate_priors@{c}" for c in CLASSES})


def status_after_code_edit(root: Path, rel: str, refresh: bool = True) -> set[str]:
    """Stages `dvc status` reports after a harmless edit of one project file and `dvc repro code`, which
    rewrites the fingerprints. Afterwards the file, the fingerprints and dvc.lock get their bytes back:
    what a second `dvc repro code` would write (the fingerprints are a function of the files), for less."""
    path = root / rel
    kept = {f: f.read_bytes() for f in (path, root / "dvc.lock", *(root / "fingerprints").glob("*"))}
    try:
        path.write_text(kept[path].decode() + "\n# an edit\n")
        if refresh:
            run(["dvc", "repro", "code"], root)
        return set(json.loads(run(["dvc", "status", "--json"], root).stdout))
    finally:
        for f, data in kept.items():
            f.write_bytes(data)


def test_status_is_exact_per_code_file(e2e_study):
    """A code change reruns what imports the file, and nothing else (fingerprints = import closures)."""
    root, _ = e2e_study
    priors = {f"generate_priors@{c}" for c in CLASSES}
    # before `code` reruns, the edit shows on it alone: its fingerprints are what the stages depend on
    assert status_after_code_edit(root, "src/dreamsolo/sampling.py", refresh=False) == {"code"}
    # encode_latents lives here: the training stages (cached latents) and every sampling stage import it
    assert status_after_code_edit(root, "src/dreamsolo/sampling.py") == (
        priors | per_pair("train_scene", "train_instance", "sample", "sample_base"))
    assert status_after_code_edit(root, "src/dreamsolo/training/loss.py") == per_pair("train_scene", "train_instance")
    assert status_after_code_edit(root, "src/dreamsolo/report/html.py") == {"report"}
    assert status_after_code_edit(root, "src/dreamsolo/metrics/clip.py") == per_pair("evaluate")
    assert status_after_code_edit(root, "src/dreamsolo/cli.py") == set()  # the ad-hoc CLI: no stage runs it
    # the shipped base models: `base` reads the folder (on tiny it rebuilds the same bytes, so nothing after reruns)
    assert status_after_code_edit(root, "data/base/toy/LICENSE.md") == {"base"}
    every_stage = set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) - {"code"}
    assert status_after_code_edit(root, "src/dreamsolo/layout.py") == every_stage  # every stage builds paths
    # the bytes put back leave the study as it was (test_team.py goes on from this copy)
    assert run(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."
