"""The typed pair result (reports/pairs/<pair>.json): to_json is the documented shape, from_json refuses
what is not, with one error naming the file and the key."""

from __future__ import annotations

import copy
import json

import pytest

from dreamsolo.metrics.pair_result import ALL_METRICS, PairResult, PairResultError, Scores, Stat
from studykit import REPO

COMMITTED = sorted((REPO / "reports" / "pairs").glob("*.json"))
WHERE = "reports/pairs/cat_grass.json"


def _scores(clip_t: float, div: float, n: int = 4) -> Scores:
    return Scores(n_samples=n, metrics={"clip_t": Stat(clip_t, 0.01, n), "dino": Stat(None, None, 0)},
                  by_kind={"composed": {"clip_t": Stat(clip_t, 0.0, 1)}},
                  div=Stat(div, 0.02, 2), pres=Stat(None, None, 0))


def _result(**kw) -> PairResult:
    args = dict(pair="cat_grass", category="animal", evaluators_pretrained=False,
                warning="evaluators not pretrained: numbers are not meaningful",
                tuned=_scores(0.375, 0.5), base=_scores(0.25, 0.25), base_model="models/base/tiny")
    return PairResult(**{**args, **kw})


def test_committed_pair_jsons_round_trip_exactly():
    assert len(COMMITTED) == 8
    for path in COMMITTED:
        text = path.read_text()
        data = json.loads(text)
        back = PairResult.from_json(data, path).to_json()
        assert back == data and list(back) == list(data) and list(back["base"]) == list(data["base"]), path
        assert json.dumps(back, indent=2) + "\n" == text, path  # what write_json writes: the same bytes


def test_to_json_shape_and_derived_delta():
    out = _result().to_json()
    assert list(out) == ["pair", "category", "evaluators_pretrained", "random_metrics", "warning", "n_samples",
                         "metrics", "by_kind", "div", "pres", "base", "delta"]
    assert list(out["base"]) == ["model", "n_samples", "metrics", "by_kind", "div", "pres"]
    assert out["metrics"]["clip_t"] == {"mean": 0.375, "std": 0.01, "n": 4}
    assert list(out["delta"]) == list(ALL_METRICS)
    assert out["delta"]["clip_t"] == 0.125 and out["delta"]["div"] == 0.25
    assert out["delta"]["dino"] is None and out["delta"]["pres"] is None and out["delta"]["clip_i"] is None
    pretrained = _result(evaluators_pretrained=True, warning=None).to_json()
    assert "warning" not in pretrained  # present only when an evaluator is random
    assert PairResult.from_json(json.loads(json.dumps(pretrained)), WHERE) == _result(evaluators_pretrained=True,
                                                                                     warning=None)


def _broken(edit) -> dict:
    data = copy.deepcopy(_result().to_json())
    edit(data)
    return data


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("base"), "no 'base' block: the floor"),
    (lambda d: d.pop("metrics"), "missing key metrics"),
    (lambda d: d["base"].pop("model"), "missing key base.model"),
    (lambda d: d["base"]["div"].pop("std"), "missing key base.div.std"),
    (lambda d: d["by_kind"]["composed"]["clip_t"].pop("n"), "missing key by_kind.composed.clip_t.n"),
    (lambda d: d.pop("delta"), "missing key delta"),
    (lambda d: d["delta"].pop("pres"), "missing key delta.pres"),
    (lambda d: d.update(extra=1), "unknown key extra"),
    (lambda d: d["metrics"]["clip_t"].update(mean="high"), "metrics.clip_t.mean must be a number or null"),
    (lambda d: d.update(n_samples=4.5), "n_samples must be int"),
    (lambda d: d.update(evaluators_pretrained="no"), "evaluators_pretrained must be bool"),
    (lambda d: d.update(warning=3), "'warning' must be a string"),
    (lambda d: d["base"].update(metrics=[]), "base.metrics must be an object"),
    (lambda d: d["delta"].update(clip_t=0.5), "delta.clip_t is 0.5, but the fine-tuned minus the base mean"),
])
def test_from_json_refuses_a_bad_file_naming_it_and_the_key(edit, message):
    with pytest.raises(PairResultError) as err:
        PairResult.from_json(_broken(edit), WHERE)
    assert str(err.value).startswith(f"{WHERE}: ") and message in str(err.value)
    assert str(err.value).count(WHERE) == 1  # one error, not a traceback of nested ones
    assert isinstance(err.value, ValueError)  # shown by the stages as one line


def test_from_json_refuses_a_non_object():
    with pytest.raises(PairResultError, match=f"^{WHERE}: the file must be an object, got list"):
        PairResult.from_json([], WHERE)


def test_report_reads_typed_results_and_names_a_stale_file(tmp_path):
    from dreamsolo.report.tables import read_results

    folder = tmp_path / "reports" / "pairs"
    folder.mkdir(parents=True)
    (folder / "cat_grass.json").write_text(json.dumps(_result().to_json()))
    assert read_results(tmp_path, ["cat_grass"]) == [_result()]
    stale = _result().to_json()
    del stale["base"], stale["delta"]  # what evaluate wrote before the floor
    (folder / "cat_grass.json").write_text(json.dumps(stale))
    with pytest.raises(PairResultError, match="^reports/pairs/cat_grass.json: no 'base' block"):
        read_results(tmp_path, ["cat_grass"])
    (folder / "cup_brick.json").write_text(json.dumps(_result().to_json()))  # says cat_grass
    with pytest.raises(ValueError, match="cup_brick.json: says pair 'cat_grass', expected 'cup_brick'"):
        read_results(tmp_path, ["cup_brick"])
