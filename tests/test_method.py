"""The method, shown on the `toy` preset (pretrained, shipped in data/base/toy): these tests fail when the
method breaks (issue 13). One pair, the study's own settings (params.yaml's toy preset), one recontext
prompt; every claim is a paired, seed-by-seed LPIPS comparison (dreamsolo.metrics.checks).

Mutations these were seen to catch (each makes at least one test fail; see the closing note of issue
13): sampling the base model instead of Stage II; Stage II starting from the base model instead of
Stage I (replay off); the two identifiers swapped in training; the prior term dropped from the loss.
"""

from __future__ import annotations

import pandas as pd
import pytest

from studykit import TOY_PAIR, copy_study, edit_params, torch_threads

pytestmark = pytest.mark.e2e  # the whole chain on toy (conftest.toy_template), then Stage II twice more (minutes)

PAIR = TOY_PAIR


def _checks(root, pair=PAIR):
    from dreamsolo.layout import pair_csv
    from dreamsolo.metrics.checks import pair_checks

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


def _swapped_identifiers(study) -> dict[str, float]:
    """Mean over the study's seeds of metrics.crossed's two deltas (`<S> cat` vs `<V> cat` to the instance,
    `<V> grass field` vs `<S> grass field` to the scene): < 0 where each identifier binds its own photo. The
    identifiers are arbitrary tokens, so only this tells a swap apart from a correct run."""
    from dreamsolo.metrics.crossed import crossed_identifiers

    return {k: sum(v) / len(v) for k, v in crossed_identifiers(study, PAIR).items()}


@pytest.fixture(scope="module")
def toy_runs(toy_template, tmp_path_factory):
    """The pair through `evaluate` with the toy defaults (λ = 1, replay on: a copy of the shared toy
    study), then Stage II again with λ = 0, and again with replay off."""
    from dreamsolo.config import load_study

    root = copy_study(toy_template, tmp_path_factory.mktemp("method") / "study")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    with torch_threads(2):
        default = _checks(root)
        default["swap"] = _swapped_identifiers(load_study(root))
        no_prior = _rerun_stage_two(root, {f"pairs.{PAIR}.train_instance": {"prior_weight": 0.0}})
        no_replay = _rerun_stage_two(root, {f"pairs.{PAIR}.train_instance": {"replay_weight": 0.0}})
    yield default, no_prior, no_replay
    mp.undo()


def _delta(check: dict) -> str:
    d = check["delta"]
    return f"{check['a']} vs {check['b']}: Δ {d['mean']:+.4f} ± {d['std']:.4f} over {d['n']} seeds"


def test_the_identifier_binds_the_instance(toy_runs):
    """`a photo of sks cat` samples are closer to the instance photo than the same model's `a photo of a
    cat` samples, and than the base model's `sks cat` samples."""
    checks = toy_runs[0]
    assert checks["binding"]["holds"], _delta(checks["binding"])
    assert checks["binding_vs_base"]["holds"], _delta(checks["binding_vs_base"])


def test_stage_one_survives_stage_two(toy_runs):
    """After Stage II the scene prompt's samples are still closer to the scene photo than the base's, with
    scene replay and without it (then only Stage I's weights can carry the scene into Stage II)."""
    default, _, no_replay = toy_runs
    assert default["scene_kept"]["holds"], _delta(default["scene_kept"])
    assert no_replay["scene_kept"]["holds"], _delta(no_replay["scene_kept"])


def test_each_identifier_binds_its_own_photo(toy_runs):
    """`<S> cat` is closer to the instance than `<V> cat`, `<V> grass field` closer to the scene than
    `<S> grass field`: the identifiers are not interchangeable (a swap in training fails here)."""
    swap = toy_runs[0]["swap"]
    assert swap["instance"] < 0 and swap["scene"] < 0, swap


def test_the_prior_term_keeps_the_class_prior(toy_runs):
    """With λ = 1 the class prompt's samples stay closer to the base model's than with λ = 0."""
    with_prior, without = (r["class_drift"] for r in toy_runs[:2])
    assert with_prior["mean"] < without["mean"], (with_prior, without)


def test_the_identifier_still_binds_without_the_prior(toy_runs):
    """Dropping λ changes what happens to the class prompt, not whether the identifier binds."""
    no_prior = toy_runs[1]
    assert no_prior["binding_vs_base"]["holds"], _delta(no_prior["binding_vs_base"])
