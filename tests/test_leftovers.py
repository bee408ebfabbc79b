"""No temporary folder while a sampling stage samples (issue 26, point 6).

A stage writes its output folder through `files.atomic_dir`: a hidden sibling `.<name>.tmp-*`, renamed into
place at the end. The sampling stages used to create it before loading the model, so a kill -9 while
sampling (most of the stage's time) left it behind, empty (images are written at the end); the stage's
next run removes such leftovers, but a `dvc repro` that restores the output from DVC's run-cache runs no
stage, and the empty folder stayed. The folder is now made only once the images exist.

Mutation tried: `atomic_dir(out)` back around the model load and sampling (in sample._sample or in
generate_priors.run) fails the matching case below.
"""

from __future__ import annotations

import pytest

from studykit import make_study, run_chain


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from dreamsolo.config import load_study

    root = make_study(tmp_path_factory.mktemp("leftovers") / "study", ["cat_grass"])
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    study = load_study(root)
    run_chain(study, "cat_grass", through="base")
    yield study
    mp.undo()


@pytest.mark.parametrize("stage", ["sample_base", "generate_priors"])
def test_no_temporary_folder_exists_while_sampling(study, monkeypatch, stage):
    from dreamsolo import sampling
    from dreamsolo.stages import generate_priors, sample

    parent = study.root / ("data/samples_base" if stage == "sample_base" else "data/priors")
    real, seen = sampling.sample_images, []

    def watched(*args, **kwargs):
        seen.append(sorted(p.name for p in parent.glob(".*.tmp-*")) if parent.exists() else [])
        return real(*args, **kwargs)  # a kill -9 here would leave whatever `seen` lists

    monkeypatch.setattr(sampling, "sample_images", watched)
    out = sample.run_base(study, "cat_grass") if stage == "sample_base" else generate_priors.run(study, "cat")
    assert seen == [[]], seen
    assert (out / "0000.png").is_file() and not list(parent.glob(".*.tmp-*"))
