"""A refused params.yaml leaves the workspace as it was (issue 26, point 1).

DVC removes a stage's outputs before it runs the stage's command, so a stage that refuses a bad value
has already lost its model or report. Every stage waits on the `code` stage, which reads all of
params.yaml and checks it first (tools/code_deps.py check_params): a bad edit stops `dvc repro` there.
Mutation tried: without `params.yaml:` among the code stage's params (or without `persist`), the
mistyped key below (in a block train_scene reads) reran train_scene, which deleted models/cat_grass/scene
before refusing the key, and this test failed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from studykit import make_study, read_yaml, run

pytestmark = pytest.mark.e2e


def _files(root: Path, *folders: str) -> dict[str, str]:
    out = {}
    for folder in folders:
        for p in sorted((root / folder).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_a_mistyped_key_is_refused_before_any_output_is_removed(tmp_path):
    root = make_study(tmp_path / "s", ["cat_grass"], git=True)
    run(["dvc", "repro", "train_scene@cat_grass"], root)
    kept = _files(root, "models/cat_grass", "reports/train", "fingerprints", "data/priors")
    assert any(k.startswith("models/cat_grass/scene/") for k in kept)
    good = (root / "params.yaml").read_text()
    bad = good.replace("\ntrain_scene:\n  defaults:\n", "\ntrain_scene:\n  defaults:\n    stepz: 3\n", 1)
    assert bad != good
    (root / "params.yaml").write_text(bad)
    proc = run(["dvc", "repro", "train_scene@cat_grass"], root, check=False)
    assert proc.returncode != 0
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error: params.yaml")]
    assert len(ours) == 1 and "train_scene.defaults.stepz: unknown key" in ours[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert _files(root, "models/cat_grass", "reports/train", "fingerprints", "data/priors") == kept
    (root / "params.yaml").write_text(good)  # fixed: nothing to redo but the check itself
    again = run(["dvc", "repro", "train_scene@cat_grass"], root)
    assert "Running stage 'train_scene@cat_grass'" not in again.stdout
    assert _files(root, "models/cat_grass", "reports/train", "fingerprints", "data/priors") == kept
    assert read_yaml(root / "dvc.lock")["stages"]["code"]["params"]["params.yaml"]
