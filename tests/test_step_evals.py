"""Evaluations during training (train.eval_every) and the adaptive step rule (issue 14, point 4):
the rule as a pure function, and Stage II of the toy default with evaluations on: the same weights as
without them, curves in train_log.csv and MLflow, and an adaptive stop that records its step and why."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from safetensors.torch import load_file

from dreamsolo.config import Train
from dreamsolo.params import read_yaml
from dreamsolo.stages import train
from dreamsolo.training.evals import adaptive_stop
from studykit import TOY_PAIR, copy_study, edit_params, make_study

PAIR = TOY_PAIR


def _rows(*evals):
    return [{"step": 10 * (i + 1), "loss": 0.1, "eval_fidelity": f, "eval_class_drift": d}
            for i, (f, d) in enumerate(evals)]


def test_the_adaptive_rule_stops_on_drift_and_on_a_plateau():
    cfg = Train(steps=100, lr=1e-4, eval_every=10, stop="adaptive", stop_patience=2, stop_min_delta=0.01,
                stop_max_drift=0.3)
    assert adaptive_stop(_rows((0.60, 0.1)), cfg) is None
    assert adaptive_stop(_rows((0.60, 0.1), (0.55, 0.2)), cfg) is None  # improving
    why = adaptive_stop(_rows((0.60, 0.1), (0.55, 0.31)), cfg)
    assert why and why.startswith("class drift 0.310 passed stop_max_drift 0.3 at step 20"), why
    # 0.545 and 0.552 are within min_delta of the best (0.55): two evaluations without a gain
    assert adaptive_stop(_rows((0.60, 0.1), (0.55, 0.1), (0.545, 0.1)), cfg) is None
    why = adaptive_stop(_rows((0.60, 0.1), (0.55, 0.1), (0.545, 0.1), (0.552, 0.1)), cfg)
    assert why and "did not improve by 0.01 in 2 evaluations (best 0.545 at step 30); stopped at step 40" in why, why
    # a real gain resets the count
    assert adaptive_stop(_rows((0.60, 0.1), (0.55, 0.1), (0.545, 0.1), (0.50, 0.1)), cfg) is None


def test_adaptive_needs_evaluations(tmp_path):
    from dreamsolo.config import ParamsError, load_study

    root = make_study(tmp_path / "s", [PAIR], {"train_instance.defaults.stop": "adaptive"})
    with pytest.raises(ParamsError, match="stop: adaptive stops on the evaluations; set eval_every too"):
        load_study(root)


@pytest.fixture(scope="module")
def toy_stage_two(toy_template, tmp_path_factory):
    """cat_grass on toy through Stage II without evaluations (a copy of the shared toy study); then
    Stage II again with them."""
    from dreamsolo.config import load_study
    from dreamsolo.layout import model_dir

    root = copy_study(toy_template, tmp_path_factory.mktemp("evals") / "study")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    out = model_dir(root, PAIR, "train_instance")
    plain = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    edit_params(root, {"presets.toy.train_instance.eval_every": 20, "presets.toy.train_instance.eval_images": 2})
    summary = train.run(load_study(root), PAIR, "train_instance")
    yield root, plain, summary
    mp.undo()


@pytest.mark.e2e
def test_evaluating_during_training_does_not_change_the_weights(toy_stage_two):
    from dreamsolo.layout import model_dir

    root, plain, _ = toy_stage_two
    evald = load_file(model_dir(root, PAIR, "train_instance") / "unet" / "diffusion_pytorch_model.safetensors")
    assert set(evald) == set(plain)
    assert all((evald[k] == plain[k]).all() for k in plain)  # bit for bit: the evaluation has its own RNG


@pytest.mark.e2e
def test_the_curves_are_in_the_train_log_and_mlflow(toy_stage_two):
    from studykit import mlflow_client

    root, _, summary = toy_stage_two
    steps = read_yaml(root / "params.yaml")["presets"]["toy"]["train_instance"]["steps"]  # the default's
    every = list(range(20, steps + 1, 20))  # eval_every 20
    log = pd.read_csv(root / "reports/train" / PAIR / "instance.csv")
    ev = log[log["eval_fidelity"].notna()]
    assert list(ev["step"]) == every and len(every) >= 3
    assert ev["eval_fidelity"].between(0, 1.5).all() and ev["eval_class_drift"].between(0, 1.5).all()
    start = summary["evaluation"]["at_start"]
    # Stage II moves its <S> samples toward the instance photo. It starts from Stage I, whose text
    # encoder already moved the class prompt away from the base's samples (drift > 0 at step 0; on
    # this pair Stage II's prior term then brings it back: 0.28 -> 0.10 when written)
    assert ev["eval_fidelity"].iloc[-1] < start["eval_fidelity"]
    assert start["eval_class_drift"] > 0.02
    client, exp_id = mlflow_client(root)
    run = client.search_runs([exp_id], "tags.stage = 'train_instance'", order_by=["attributes.start_time DESC"])[0]
    hist = client.get_metric_history(run.info.run_id, "eval_fidelity")
    assert sorted(m.step for m in hist) == [0, *every]
    assert run.data.tags["stop_reason"] == f"ran all {steps} steps" and run.data.metrics["stopped_at"] == steps


@pytest.mark.e2e
def test_an_adaptive_stop_records_its_step_and_why(toy_stage_two):
    from dreamsolo.config import load_study
    from dreamsolo.layout import model_dir

    root, _, _ = toy_stage_two
    # a bound the toy model's drift passes within the first evaluations: the rule must stop early
    edit_params(root, {"presets.toy.train_instance.stop": "adaptive", "presets.toy.train_instance.eval_every": 10,
                       "presets.toy.train_instance.stop_max_drift": 0.05})
    summary = train.run(load_study(root), PAIR, "train_instance")
    ev = summary["evaluation"]
    assert ev["stopped_at"] < 60 and ev["stopped_at"] % 10 == 0
    assert ev["reason"].startswith("class drift") and f"at step {ev['stopped_at']}" in ev["reason"]
    meta = json.loads((model_dir(root, PAIR, "train_instance") / "train_meta.json").read_text())
    assert meta["steps"] == ev["stopped_at"] and meta["evaluation"]["reason"] == ev["reason"]
    log = pd.read_csv(root / "reports/train" / PAIR / "instance.csv")
    assert log["step"].max() == ev["stopped_at"]
