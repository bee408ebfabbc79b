"""The method checks' arithmetic (dreamsolo.metrics.checks): paired by seed, spread over seeds, direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dreamsolo.metrics.checks import CHECKS, DRIFT, pair_checks, study_checks
from dreamsolo.report import checks_table as report_method

KINDS = ("composed", "recontext", "scene", "instance", "class_instance", "class_scene")


def table(values: dict[str, list[float]], seeds=(0, 1, 2, 3), clip_t: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per (kind, seed); `values[kind]` gives lpips_instance, lpips_scene is 1 - it; clip_t 0.3
    unless `clip_t[kind]` says otherwise."""
    clip_t = clip_t or {}
    rows = []
    for kind in KINDS:
        for s, v in zip(seeds, values.get(kind, [0.5] * len(seeds))):
            rows.append({"kind": kind, "prompt": f"p {kind}", "seed": s, "lpips_instance": v,
                         "lpips_scene": 1 - v, DRIFT: v / 10, "clip_t": clip_t.get(kind, 0.3)})
    return pd.DataFrame(rows)


def test_the_delta_is_paired_by_seed():
    """Seed-to-seed variation shared by both sides cancels: the spread is that of the differences."""
    tuned = table({"instance": [0.1, 0.5, 0.3, 0.9], "class_instance": [0.2, 0.6, 0.4, 1.0]})
    c = pair_checks(tuned, table({}))["binding"]
    assert c["holds"] and c["delta"]["mean"] == pytest.approx(-0.1)
    assert c["delta"]["std"] == pytest.approx(0.0, abs=1e-12) and c["delta"]["n"] == 4
    assert c["a_mean"] == pytest.approx(0.45) and c["b_mean"] == pytest.approx(0.55)


def test_a_claim_that_does_not_hold_says_so():
    same = table({})
    checks = pair_checks(same, same)  # a fine-tuned model equal to the base: nothing holds
    assert not any(checks[c.name]["holds"] for c in CHECKS)
    assert all(checks[c.name]["delta"]["mean"] == 0 for c in CHECKS)


def test_scene_and_composed_checks_use_their_own_metric():
    tuned = table({"scene": [0.9] * 4, "composed": [0.2] * 4})  # lpips_scene = 1 - v: scene closer, composed farther
    checks = pair_checks(tuned, table({}))
    assert checks["scene_kept"]["holds"] and checks["scene_kept"]["metric"] == "lpips_scene"
    assert checks["composed_instance"]["holds"] and not checks["composed_scene"]["holds"]


def test_the_composed_text_check_counts_higher_clip_t_as_closer():
    better = pair_checks(table({}, clip_t={"composed": 0.4}), table({}))["composed_text"]
    worse = pair_checks(table({}, clip_t={"composed": 0.2}), table({}))["composed_text"]
    assert better["metric"] == "clip_t" and better["holds"] and better["delta"]["mean"] == pytest.approx(0.1)
    assert not worse["holds"]


def test_class_drift_is_the_mean_lpips_to_the_base_on_the_class_prompt():
    tuned = table({"class_instance": [0.1, 0.2, 0.3, 0.4]})
    drift = pair_checks(tuned, table({}))["class_drift"]
    assert drift["mean"] == pytest.approx(0.025) and drift["std"] == pytest.approx(np.std([.01, .02, .03, .04], ddof=1))


def test_missing_kind_or_unmatched_seeds_are_refused():
    with pytest.raises(ValueError, match="no samples of prompt kind 'instance'"):
        pair_checks(table({})[lambda d: d["kind"] != "instance"], table({}), "reports/pairs/x.csv")
    with pytest.raises(ValueError, match="different seeds"):
        pair_checks(table({}), table({}, seeds=(4, 5, 6, 7)))


def test_the_study_row_counts_pairs_and_the_report_renders_it():
    good = pair_checks(table({"instance": [0.1] * 4}), table({}))
    flat = pair_checks(table({}), table({}))
    study = study_checks({"a": good, "b": flat})
    assert study["binding"]["holds"] == 1 and study["binding"]["pairs"] == 2
    assert study["binding"]["delta"]["mean"] == pytest.approx(-0.2)
    md = report_method.markdown({"pairs": {"a": good, "b": flat}, "study": study}, random=["clip_t", "lpips_instance"])
    assert "| a | -0.400 ± 0.000 ✓ |" in md and "| b | +0.000 ± 0.000 ✗ |" in md and "1/2 ✓" in md
    assert "CLIP-T and LPIPS are randomly initialised" in md
    assert "randomly initialised" not in report_method.markdown({"pairs": {"a": good}, "study": study}, random=[])
