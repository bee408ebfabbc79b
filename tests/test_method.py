"""The method, shown on the `toy` preset (pretrained, shipped in data/base/toy): these tests fail when the
method breaks (issue 13). One pair, the study's own settings (params.yaml's toy preset), one recontext
prompt; every claim is a paired, seed-by-seed LPIPS comparison (dreamsolo.metrics.method).

Mutations each of these was seen to catch (see the closing note of issue 13): sampling the base model
instead of Stage II; Stage II starting from the base model instead of Stage I; the two identifiers
swapped in training; the prior term dropped from the loss.
"""

from __future__ import annotations

import pandas as pd
import pytest

from studykit import edit_params, make_study, run_chain, torch_threads

PAIR = "cat_grass"
# the study's sampling settings (FAST cuts them for the plumbing tests): the claims need several seeds
TOY = {"model.preset": "toy", "priors.num_images": 8, "priors.steps": 20, "priors.batch_size": 8,
       "sample.num_images": 4, "sample.steps": 20, "sample.batch_size": 8}


def _checks(root, pair=PAIR):
    from dreamsolo.layout import pair_csv
    from dreamsolo.metrics.method import pair_checks

    return pair_checks(pd.read_csv(pair_csv(root, pair)), pd.read_csv(pair_csv(root, pair, base=True)))


def _rerun_stage_two(root, edits: dict):
    """Stage II again with `edits` (the pair's train_instance), then its samples and scores."""
    from dreamsolo.config import load_study
    from dreamsolo.stages import evaluate, sample, train

    edit_params(root, edits)
    study = load_study(root)
    train.run(study, PAIR, "train_instance")
    sample.run(study, PAIR)
    evaluate.run(study, PAIR)
    return _checks(root)


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """The pair through `evaluate` with the toy defaults (λ = 1), then Stage II again with λ = 0."""
    from dreamsolo.config import load_study

    root = make_study(tmp_path_factory.mktemp("method") / "study", [PAIR], TOY)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    with torch_threads(2):
        run_chain(load_study(root), PAIR, through="evaluate")
        default = _checks(root)
        no_prior = _rerun_stage_two(root, {f"pairs.{PAIR}.train_instance": {"prior_weight": 0.0}})
    yield default, no_prior
    mp.undo()


def _delta(check: dict) -> str:
    d = check["delta"]
    return f"{check['a']} vs {check['b']}: Δ {d['mean']:+.4f} ± {d['std']:.4f} over {d['n']} seeds"


def test_the_identifier_binds_the_instance(toy_runs):
    """`a photo of sks cat` samples are closer to the instance photo than the same model's `a photo of a
    cat` samples, and than the base model's `sks cat` samples."""
    checks, _ = toy_runs
    assert checks["binding"]["holds"], _delta(checks["binding"])
    assert checks["binding_vs_base"]["holds"], _delta(checks["binding_vs_base"])


def test_stage_one_survives_stage_two(toy_runs):
    """After Stage II the scene prompt's samples are still closer to the scene photo than the base's."""
    checks, _ = toy_runs
    assert checks["scene_kept"]["holds"], _delta(checks["scene_kept"])


def test_the_prior_term_keeps_the_class_prior(toy_runs):
    """With λ = 1 the class prompt's samples stay closer to the base model's than with λ = 0."""
    with_prior, without = (r["class_drift"] for r in toy_runs)
    assert with_prior["mean"] < without["mean"], (with_prior, without)


def test_the_identifier_still_binds_without_the_prior(toy_runs):
    """Dropping λ changes what happens to the class prompt, not whether the identifier binds."""
    _, no_prior = toy_runs
    assert no_prior["binding_vs_base"]["holds"], _delta(no_prior["binding_vs_base"])
