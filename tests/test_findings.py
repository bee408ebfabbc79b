"""The findings page's verdict rules (metrics.findings, metrics.claims) on synthetic results: a constant shift,
a null effect and a category-dependent effect each get the verdict they should, and pairing by seed matters."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dreamsolo.metrics import findings as F
from dreamsolo.metrics.claims import LR_STEPS, PRIOR, Inputs, all_claims, claim1, claim2, claim3, claim4, claim5, \
    claim6, claim7, stale

CATS = {"o1": "object", "o2": "object", "o3": "object", "a1": "animal", "a2": "animal", "a3": "animal",
        "h1": "human", "h2": "human"}
KINDS = ("instance", "composed", "scene")


def study(shift: float, noise: float, seeds: int = 8, pairs: dict = CATS, seed_spread: float = 0.2,
          rng_seed: int = 0, shuffle: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-sample tables of the fine-tuned and the base model: each (pair, seed) has a common level (the seed's
    noise is shared, as in the study); fine-tuned = base - shift (+ its own noise): closer by `shift`."""
    rng = np.random.default_rng(rng_seed)
    tuned, base = [], []
    for pair, cat in pairs.items():
        level = 0.6 + rng.uniform(-seed_spread, seed_spread, seeds)
        for kind in KINDS:
            cols_b, cols_t = {}, {}
            for col in ("lpips_instance", "lpips_scene"):
                cols_b[col] = level + rng.normal(0, 0.001, seeds)
                cols_t[col] = cols_b[col] - shift + rng.normal(0, noise, seeds)
                if shuffle:  # break the pairing: the fine-tuned value of seed i is another seed's
                    cols_t[col] = rng.permutation(cols_t[col])
            for s in range(seeds):
                row = {"pair": pair, "category": cat, "kind": kind, "prompt": kind, "seed": s, "clip_t": 0.3,
                       "lpips_base": 0.2}
                base.append({**row, **{c: v[s] for c, v in cols_b.items()}})
                tuned.append({**row, **{c: v[s] for c, v in cols_t.items()}})
    return pd.DataFrame(tuned), pd.DataFrame(base)


def inputs(tuned, base, pairs=CATS, **kw) -> Inputs:
    return Inputs(tuned, base, dict(pairs), **kw)


def test_a_constant_shift_is_supported():
    for claim in (claim1, claim3):
        c = claim(inputs(*study(shift=0.05, noise=0.01)))
        assert c.verdict == F.SUPPORTED, c
        assert all(0.04 < p.estimate.value < 0.06 and p.estimate.lo > 0 for p in c.parts)


def test_a_null_effect_is_not_supported_when_measured_tightly_and_inconclusive_when_not():
    c = claim1(inputs(*study(shift=0.0, noise=0.002)))
    assert c.verdict == F.NOT_SUPPORTED, c  # the interval rules out 0.01
    assert all(p.estimate.lo < 0 < p.estimate.hi < F.MIN_LPIPS for p in c.parts)
    few = dict(itertools.islice(CATS.items(), 2))
    c = claim1(inputs(*study(shift=0.0, noise=0.08, seeds=4, pairs=few), pairs=few))  # 2 pairs x 4 seeds, noisy
    assert [p.verdict for p in c.parts] == [F.INCONCLUSIVE] * 2, c


def test_an_effect_the_other_way_is_not_supported():
    assert claim3(inputs(*study(shift=-0.05, noise=0.01))).verdict == F.NOT_SUPPORTED


def test_a_shuffled_pairing_loses_the_effect_that_pairing_by_seed_finds():
    """The seeds' spread (±0.2) dwarfs the shift (0.02): seed by seed it shows; with the pairing broken it
    drowns in the spread, so the test must be using the pairing."""
    paired = claim1(inputs(*study(shift=0.02, noise=0.005, seed_spread=0.2)))
    assert paired.verdict == F.SUPPORTED, paired
    shuffled = claim1(inputs(*study(shift=0.02, noise=0.005, seed_spread=0.2, shuffle=True)))
    assert shuffled.verdict == F.INCONCLUSIVE, shuffled
    assert all(p.estimate.hi - p.estimate.lo > 5 * (q.estimate.hi - q.estimate.lo)
               for p, q in zip(shuffled.parts, paired.parts))


def test_unpaired_sample_sets_are_refused():
    tuned, base = study(shift=0.05, noise=0.01)
    with pytest.raises(ValueError, match="not paired"):
        claim1(inputs(tuned[tuned["seed"] != 3], base))


def test_a_random_evaluator_gives_no_verdict():
    assert claim1(inputs(*study(0.05, 0.01), random=frozenset({"lpips_instance"}))).verdict == F.NOT_MEANINGFUL


# --- the sweeps -----------------------------------------------------------------------------------------

LR, STEPS, LAM = (f"presets.m.train_instance.{k}" for k in ("lr", "steps", "prior_weight"))


def sweep(keys: dict[str, list], effect, seeds: int = 6, noise: float = 0.003, pairs: dict = CATS,
          baseline: dict | None = None, rng_seed: int = 1) -> pd.DataFrame:
    """samples.csv of a sweep: fidelity and drift of each (point, pair, seed) = the seed's level +
    effect(category, settings) (a (fidelity, drift) tuple) + noise. The baseline first, at `baseline`."""
    rng = np.random.default_rng(rng_seed)
    level = {p: 0.5 + rng.uniform(-0.1, 0.1, seeds) for p in pairs}
    grid = [dict(zip(keys, v)) for v in itertools.product(*keys.values())]
    points = [("baseline", baseline or grid[0])] + [(f"p{i}", g) for i, g in enumerate(grid)]
    rows = []
    for (point, settings), (pair, cat) in itertools.product(points, pairs.items()):
        fid, drift = effect(cat, settings)
        for s in range(seeds):
            rows.append({"point": point, "pair": pair, "category": cat, "seed": s, **settings,
                         "lpips_instance": level[pair][s] + fid + rng.normal(0, noise),
                         "class_drift": level[pair][s] / 2 + drift + rng.normal(0, noise), "random_metrics": ""})
    return pd.DataFrame(rows)


def lr_steps(effect, **kw) -> pd.DataFrame:
    return sweep({LR: [1e-5, 1e-4, 1e-3], STEPS: [30, 60]}, effect, **kw)


def prior(effect, **kw) -> pd.DataFrame:
    return sweep({LAM: [0.0, 0.5, 1.0, 2.0]}, effect, baseline={LAM: 1.0}, **kw)


def by_lr(scale: dict[str, float]):
    """An effect of lr (on both outcomes) whose size depends on the category: 0 at the lowest lr."""
    return lambda cat, s: (scale[cat] * np.log10(s[LR] / 1e-5) / 2,) * 2


def sweep_inputs(lr=None, lam=None) -> Inputs:
    tuned, base = study(0.05, 0.01)
    return inputs(tuned, base, sweeps={k: v for k, v in ((LR_STEPS, lr), (PRIOR, lam)) if v is not None})


def test_a_category_dependent_effect_is_found_where_it_is():
    humans = sweep_inputs(lr=lr_steps(by_lr({"object": 0.01, "animal": 0.02, "human": 0.2})))
    assert claim6(humans).verdict == F.SUPPORTED
    assert claim5(humans).verdict == F.SUPPORTED  # organic (animals and humans) move more than objects
    objects = sweep_inputs(lr=lr_steps(by_lr({"object": 0.2, "animal": 0.02, "human": 0.02})))
    assert claim6(objects).verdict == F.NOT_SUPPORTED
    assert claim5(objects).verdict == F.NOT_SUPPORTED
    c = claim6(humans)
    sens = c.context["sensitivity_by_category"]  # each with its own interval
    assert sens["human"]["fidelity"]["value"] == pytest.approx(0.2, abs=0.01)
    assert sens["object"]["drift"]["value"] == pytest.approx(0.01, abs=0.01)
    assert all(e["ci"][0] <= e["value"] <= e["ci"][1] for v in sens.values() for e in v.values())
    assert sens["human"]["fidelity"]["ci"][0] > sens["object"]["fidelity"]["ci"][1]


def test_a_constant_shift_across_categories_makes_no_category_more_sensitive():
    same = sweep_inputs(lr=lr_steps(by_lr({"object": 0.1, "animal": 0.1, "human": 0.1})))
    assert claim5(same).verdict == F.NOT_SUPPORTED
    assert claim6(same).verdict == F.NOT_SUPPORTED


def test_lr_and_steps_against_the_prior_weight():
    strong_lr = lr_steps(by_lr({"object": 0.1, "animal": 0.1, "human": 0.1}))
    weak_lam = prior(lambda cat, s: (0.0, 0.01 * s[LAM]))
    assert claim4(sweep_inputs(strong_lr, weak_lam)).verdict == F.SUPPORTED
    weak_lr = lr_steps(by_lr({"object": 0.005, "animal": 0.005, "human": 0.005}))
    strong_lam = prior(lambda cat, s: (0.05 * s[LAM], 0.05 * s[LAM]))
    c = claim4(sweep_inputs(weak_lr, strong_lam))
    assert c.verdict == F.NOT_SUPPORTED
    sens = {k: [v[o]["value"] for o in ("fidelity", "drift")] for k, v in c.context["sensitivity"].items()}
    assert sens["prior_weight"] == pytest.approx([0.1, 0.1], abs=0.005)  # λ 0 -> 2 moves both by 0.1, lr by 0.005
    assert sens["lr"] == pytest.approx([0.005, 0.005], abs=0.003) and sens["steps"] == pytest.approx([0, 0], abs=0.003)


def test_the_prior_weight_against_none():
    keeps = prior(lambda cat, s: (0.0, 0.1 if s[LAM] == 0 else 0.0))
    c = claim2(sweep_inputs(lam=keeps))
    assert c.verdict == F.SUPPORTED and c.parts[0].estimate.value == pytest.approx(0.1, abs=0.01)
    assert claim2(sweep_inputs(lam=prior(lambda cat, s: (0.0, 0.0)))).verdict == F.NOT_SUPPORTED


def test_missing_sweeps_are_not_run_with_the_command():
    claims = all_claims(sweep_inputs())
    for c in claims:
        if c.n in (2, 4, 5, 6):
            assert c.verdict == F.NOT_RUN and c.command.startswith("dreamsolo sweep") and not c.parts
    assert claims[3].command == f"dreamsolo sweep {LR_STEPS} -j 2 && dreamsolo sweep {PRIOR} -j 2"
    no_humans = {k: v for k, v in CATS.items() if v != "human"}
    partial = sweep_inputs(lr=lr_steps(by_lr({"object": 0.1, "animal": 0.1}), pairs=no_humans))
    assert claim6(partial).verdict == F.NOT_RUN and "human" in claim6(partial).note


def test_complexity_correlation():
    """Claim 7: a pair's composed fidelity loss that grows with how badly the base draws the prompt."""
    tuned, base = study(0.05, 0.005)
    rng = np.random.default_rng(3)
    for i, pair in enumerate(CATS):
        clip = 0.35 - 0.02 * i  # pair i is more complex than pair i - 1
        base.loc[(base["pair"] == pair) & (base["kind"] == "composed"), "clip_t"] = clip
        sel = (tuned["pair"] == pair) & (tuned["kind"] == "composed")
        tuned.loc[sel, "lpips_instance"] += 0.1 + 0.03 * i + rng.normal(0, 0.003, sel.sum())
    assert claim7(inputs(tuned, base)).verdict == F.SUPPORTED
    assert claim7(inputs(tuned, base, random=frozenset({"clip_t"}))).verdict == F.NOT_MEANINGFUL
    two = dict(itertools.islice(CATS.items(), 2))
    assert claim7(inputs(*study(0.05, 0.01, pairs=two), pairs=two)).verdict == F.NOT_RUN


def test_a_sweep_of_another_study_version_is_stale():
    tuned, _ = study(0.05, 0.01)
    s = lr_steps(by_lr({"object": 0.1, "animal": 0.1, "human": 0.1}), seeds=8)
    assert stale(s, tuned) is not None
    here = F.by_seed(tuned, "instance", "lpips_instance")
    base = s["point"] == "baseline"
    s.loc[base, "lpips_instance"] = [here.loc[p, sd] for p, sd in zip(s.loc[base, "pair"], s.loc[base, "seed"])]
    assert stale(s, tuned) is None
    # a report that left its baseline out (HEAD's results were not its own: sweeps.collect) is stale too
    assert "no baseline" in stale(s[~base], tuned)


def test_verdict_rules_at_their_edges():
    est = lambda lo, hi: F.Estimate(0.0, lo, hi, 8, 4)  # noqa: E731
    assert F.verdict(est(0.001, 0.2), 0.01) == F.SUPPORTED
    assert F.verdict(est(-0.2, 0.009), 0.01) == F.NOT_SUPPORTED
    assert F.verdict(est(-0.2, 0.011), 0.01) == F.INCONCLUSIVE
    assert F.combine([F.SUPPORTED, F.INCONCLUSIVE]) == F.INCONCLUSIVE
    assert F.combine([F.SUPPORTED, F.NOT_SUPPORTED, F.INCONCLUSIVE]) == F.NOT_SUPPORTED
    assert F.combine([F.SUPPORTED, F.SUPPORTED]) == F.SUPPORTED


def test_the_report_stage_depends_on_what_the_page_reads():
    """`report` reruns when a findings sweep's report lands, and writes the page: dvc.yaml says so, and each
    sweep folder exists before its sweep runs (its README), so DVC can hash the dependency."""
    from pathlib import Path

    import yaml

    from dreamsolo.report.findings import FILE, SWEEPS

    repo = Path(__file__).resolve().parents[1]
    stage = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["report"]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
    assert f"reports/{FILE}" in outs
    for name in SWEEPS:
        assert f"reports/sweeps/{name}" in stage["deps"]
        assert (repo / "reports/sweeps" / name).is_dir()
