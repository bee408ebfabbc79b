"""The findings page (report.findings) on the two-pair test study: written by `report` as findings.md, a
section of index.html, metrics.json's `findings` and the report run's MLflow metrics and tags; and a sweep
report landing in reports/sweeps/<name>/ reruns `report` alone and turns "not run" into a verdict."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from studykit import E2E_PAIRS, copy_study, current_runs, mlflow_client, ran, run

from dreamsolo.metrics import findings as F
from dreamsolo.metrics.claims import LR_STEPS, PRIOR

pytestmark = pytest.mark.e2e
VERDICTS = {F.SUPPORTED, F.NOT_SUPPORTED, F.INCONCLUSIVE}


def test_the_page_tests_every_claim_and_says_what_is_not_run(e2e_template):
    root, _ = e2e_template
    block = json.loads((root / "reports/metrics.json").read_text())["findings"]
    claims = block["claims"]
    assert list(claims) == [str(n) for n in range(1, 8)]
    for n in ("1", "3"):  # from the study itself: LPIPS (pretrained) paired by seed, 2 pairs x 2 seeds
        assert claims[n]["verdict"] in VERDICTS
        for p in claims[n]["parts"].values():
            assert p["n_pairs"] == len(E2E_PAIRS) and p["n_seeds"] == 2
            assert p["ci"][0] <= p["value"] <= p["ci"][1]
    for n, sweeps in (("2", [PRIOR]), ("4", [LR_STEPS, PRIOR]), ("5", [LR_STEPS]), ("6", [LR_STEPS])):
        assert claims[n]["verdict"] == F.NOT_RUN and not claims[n]["parts"]
        assert claims[n]["command"] == " && ".join(f"dreamsolo sweep {s} -j 2" for s in sweeps)
    assert claims["7"]["verdict"] == F.NOT_RUN and "at least 4" in claims["7"]["note"]  # two pairs

    page = (root / "reports/findings.md").read_text()
    for rule in F.RULES:  # the rules are on the page, and every claim's verdict
        assert f"**{rule[0]}**: {rule[1]}" in page
    for n, c in claims.items():
        assert f"### {n}. {c['claim']}\n\n**Verdict: {c['verdict']}.**" in page
    assert "dreamsolo sweep lr_steps_all -j 2" in page and "Sensitivity" in page
    p = next(iter(claims["1"]["parts"].values()))
    assert f"{p['value']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}]" in page

    html = (root / "reports/index.html").read_text()
    assert 'id="findings"' in html and 'href="#findings"' in html and 'href="findings.md"' in html
    assert html.index('id="findings"') < html.index('id="study"')  # the page opens with what it found

    client, exp_id = mlflow_client(root)
    rep = current_runs(client.search_runs([exp_id]))["report"]
    for n, c in claims.items():
        assert rep.data.tags[f"finding_{n}"] == c["verdict"]
        if c["verdict"] in F.CODE:
            assert rep.data.metrics[f"finding_{n}_verdict"] == F.CODE[c["verdict"]]
        for name, part in c["parts"].items():
            assert rep.data.metrics[name] == pytest.approx(part["value"], abs=1e-12)
            assert rep.data.metrics[f"{name}_ci_low"] == pytest.approx(part["ci"][0], abs=1e-12)
    assert "findings.md" in {a.path for a in client.list_artifacts(rep.info.run_id)}


def _sweep(study: pd.DataFrame, key: str, values: list[float], drift_step: float) -> pd.DataFrame:
    """A sweep's samples.csv whose baseline is this study (so it is not stale); each point's drift rises by
    drift_step per value index, its fidelity as the baseline's."""
    per_seed = {name: study[study["kind"] == kind].groupby(["pair", "seed"])[col].mean()
                for name, kind, col in (("lpips_instance", "instance", "lpips_instance"),
                                        ("class_drift", "class_instance", "lpips_base"))}
    rows = []
    for i, (point, value) in enumerate([("baseline", values[-1])] + [(f"p{i}", v) for i, v in enumerate(values)]):
        for (pair, seed), fid in per_seed["lpips_instance"].items():
            step = 0 if point == "baseline" else drift_step * (len(values) - i)
            drift = per_seed["class_drift"][(pair, seed)] + step
            rows.append({"point": point, "pair": pair, "category": "animal", "seed": seed, key: value,
                         "lpips_instance": fid, "class_drift": drift, "random_metrics": ""})
    return pd.DataFrame(rows)


def test_a_sweep_report_reruns_the_report_alone_and_gets_a_verdict(e2e_template, tmp_path):
    root = copy_study(e2e_template[0], tmp_path / "study")
    study = pd.concat(pd.read_csv(root / f"reports/pairs/{p}.csv") for p in E2E_PAIRS)
    lam = _sweep(study, "presets.tiny.train_instance.prior_weight", [0.0, 1.0], drift_step=0.1)
    steps = _sweep(study, "presets.tiny.train_instance.lr", [1e-5, 1e-4], drift_step=0.0)
    steps["presets.tiny.train_instance.steps"] = 4  # lr_steps_all sweeps both keys: one steps value here
    for name, frame in ((PRIOR, lam), (LR_STEPS, steps)):
        folder = root / "reports/sweeps" / name
        (folder / "README.md").unlink()
        frame.to_csv(folder / "samples.csv", index=False)
    out = run(["dvc", "repro"], root)
    assert ran(out.stdout) == {"report"}, out.stdout
    claims = json.loads((root / "reports/metrics.json").read_text())["findings"]["claims"]
    c2 = claims["2"]
    assert c2["verdict"] == F.SUPPORTED, c2  # λ = 0 drifts 0.1 further on every seed
    assert c2["parts"]["c2_drift"]["value"] == pytest.approx(0.1, abs=1e-9)
    assert claims["4"]["verdict"] == F.NOT_RUN and "fewer than two finished values" in claims["4"]["note"]
    assert "dreamsolo sweep" not in (root / "reports/findings.md").read_text().split("### 2.")[1].split("### 3.")[0]
