"""`dvc repro` on a 2-pair copy of the study: every declared output, no-op rerun, exact invalidation."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

from studykit import (E2E_CLASSES, E2E_PAIRS, artifact_paths, current_runs, edit_params, load_table, mlflow_client,
                      ran, run)

pytestmark = pytest.mark.e2e
PAIRS, CLASSES = E2E_PAIRS, E2E_CLASSES


def per_pair(*stages: str) -> set[str]:
    return {f"{s}@{p}" for s in stages for p in PAIRS}


@pytest.fixture(scope="module")
def study(e2e_study) -> tuple[Path, str]:
    return e2e_study  # conftest.py: one `dvc repro` of the two-pair study, shared with test_e2e_status.py


def test_repro_runs_every_stage_once(study):
    root, stdout = study
    expected = {"code", "base", "arm_inputs", "report"} | per_pair("prepare", "train_scene", "train_instance", "sample", "sample_base",
                                              "evaluate")
    expected |= {f"generate_priors@{c}" for c in CLASSES}
    assert ran(stdout) == expected


def test_every_declared_output_exists(study):
    root, _ = study
    assert (root / "models/base/tiny/model_index.json").is_file()
    assert (root / "models/base/tiny/unet/diffusion_pytorch_model.safetensors").is_file()
    for c in CLASSES:
        prior = root / "data/priors" / c
        assert sorted(p.name for p in prior.glob("*.png")) == ["0000.png", "0001.png"]
        assert (prior / "latents.safetensors").is_file()
    n_prompts = 1 + 1 + 4  # composed, one recontext (FAST), scene, instance, two class prompts
    for p in PAIRS:
        for role in ("scene", "instance"):
            assert (root / "data/prepared" / p / f"{role}.png").is_file()
            assert (root / "models" / p / role / "unet/diffusion_pytorch_model.safetensors").is_file()
            log = list(csv.DictReader(open(root / "reports/train" / p / f"{role}.csv")))
            assert [int(r["step"]) for r in log] == [1, 2, 3, 4]
        rows = list(csv.DictReader(open(root / "data/samples" / p / "manifest.csv")))
        assert len(rows) == n_prompts * 2
        assert all((root / "data/samples" / p / r["file"]).is_file() for r in rows)
        assert all("sks" not in r["prompt_clean"] and "olis" not in r["prompt_clean"] for r in rows)
        summary = json.loads((root / "reports/pairs" / f"{p}.json").read_text())
        assert summary["n_samples"] == n_prompts * 2 and summary["evaluators_pretrained"] is False
        assert (root / "reports/pairs" / f"{p}.csv").is_file()
        assert (root / "reports/grids" / f"{p}.png").is_file()
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics["pairs"]) == set(PAIRS)
    assert "not meaningful" in metrics["warning"]
    for name in ("index.html", "report.md", "pairs.md", "pairs.csv"):
        assert (root / "reports" / name).is_file()
    assert list((root / "reports/plots").glob("*.png"))
    assert not list(root.rglob(".*.tmp-*")), "temporary outputs left behind"


def test_second_repro_runs_nothing(study):
    root, _ = study
    out = run(["dvc", "repro"], root)
    assert ran(out.stdout) == set()
    assert "up to date" in run(["dvc", "status"], root).stdout


def test_sampling_change_reruns_only_sample_evaluate_report(study):
    root, _ = study
    edit_params(root, {"sample.guidance_scale": 5.0})
    out = run(["dvc", "repro"], root)
    # `code` checks the edited params.yaml first (its fingerprints come out the same: no other stage for it)
    assert ran(out.stdout) == per_pair("sample", "sample_base", "evaluate") | {"report", "code"}
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["sample"]["guidance_scale"] == 5.0


# --- the floor, tracking store, page and DVC plots on the same e2e run (appended; reuse `study`) -------

def test_floor_samples_use_the_pairs_prompts_and_seeds(study):
    root, _ = study
    for p in PAIRS:
        tuned = list(csv.DictReader(open(root / "data/samples" / p / "manifest.csv")))
        base = list(csv.DictReader(open(root / "data/samples_base" / p / "manifest.csv")))
        assert base == tuned  # same files, kinds, prompts and seeds: only the weights differ
        assert all((root / "data/samples_base" / p / r["file"]).is_file() for r in base)
        summary = json.loads((root / "reports/pairs" / f"{p}.json").read_text())
        assert summary["base"]["n_samples"] == len(base) and summary["base"]["model"] == "models/base/tiny"
        assert set(summary["delta"]) >= {"clip_t", "lpips_instance", "lpips_scene", "div", "pres"}
        assert len(list(csv.DictReader(open(root / "reports/pairs_base" / f"{p}.csv")))) == len(base)
        assert (root / "reports/grids/base" / f"{p}.png").is_file()
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(metrics["base"]["pairs"]) == set(metrics["delta"]["pairs"]) == set(PAIRS)
    for name in ("clip_t", "lpips_instance", "lpips_scene"):
        assert (root / "reports/compare" / f"{name}.csv").is_file()
    page = (root / "reports/index.html").read_text()
    assert page.count('<tr class="base">') >= len(PAIRS) and "grids/base/cat_grass.png" in page


def _store(root: Path):
    client, exp_id = mlflow_client(root)
    runs = client.search_runs([exp_id], max_results=5000)
    return client, runs, current_runs(runs)


def test_tracking_store_has_every_stage_run_and_training_curve(study):
    import pandas as pd

    root, _ = study
    client, runs, current = _store(root)
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    stages = {"prepare", "train_scene", "train_instance", "sample", "sample_base", "evaluate"}
    for p in PAIRS:
        parents = [r for r in runs if r.data.tags.get("dreamsolo_parent") == p]
        assert len(parents) == 1, f"one parent run per pair, got {len(parents)} for {p}"
        for s in stages:
            r = current[f"{s}@{p}"]
            tags = r.data.tags
            assert tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert tags["stage"] == s and tags["pair"] == p and tags["git_commit"] == head
            assert re.fullmatch(r"[0-9a-f]{12}", tags["params_hash"]) and r.data.params
        for role in ("scene", "instance"):  # per-step losses and lr, the same as the train log
            r = current[f"train_{role}@{p}"]
            log = pd.read_csv(root / "reports/train" / p / f"{role}.csv").set_index("step")
            for key in ("loss", "loss_instance", "loss_prior", "lr"):
                hist = {m.step: m.value for m in client.get_metric_history(r.info.run_id, key)}
                assert hist and set(hist) <= set(log.index), key
                for step, value in hist.items():
                    assert value == pytest.approx(log.loc[step, key], rel=1e-5, abs=1e-9), (key, step)
            assert r.data.tags["weights"] == f"models/{p}/{role}"
            if "weights.md5" in r.data.tags:  # full-model weights by reference (tracking.weights.log_weights)
                import hashlib

                f = root / r.data.tags["weights.dvc_path"] / r.data.tags["weights.file"]
                assert hashlib.md5(f.read_bytes()).hexdigest() == r.data.tags["weights.md5"]


def test_tracking_store_has_the_grids_and_the_pair_numbers(study):
    import tempfile

    import pandas as pd

    root, _ = study
    client, _, current = _store(root)
    for p in PAIRS:
        for s in ("sample", "sample_base"):  # sample grids as images
            r = current[f"{s}@{p}"]
            assert {"grid.png", "manifest.csv"} <= artifact_paths(client, r.info.run_id)
            with tempfile.TemporaryDirectory() as tmp:
                grid = client.download_artifacts(r.info.run_id, "grid.png", tmp)
                assert Path(grid).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ev = current[f"evaluate@{p}"]
        pair = json.loads((root / "reports/pairs" / f"{p}.json").read_text())
        assert ev.data.tags["warning"] == pair["warning"] and pair["warning"] in ev.data.tags["mlflow.note.content"]
        for m, s in pair["metrics"].items():
            if s["n"]:
                assert ev.data.metrics[f"{m}_mean"] == pytest.approx(s["mean"])
                if m in pair["base"]["metrics"]:  # lpips_base (LPIPS to the base model) has no base side
                    assert ev.data.metrics[f"base_{m}_mean"] == pytest.approx(pair["base"]["metrics"][m]["mean"])
        for m, d in pair["delta"].items():
            if d is not None:
                assert ev.data.metrics[f"delta_{m}"] == pytest.approx(d)
        table = load_table(root, "samples_metrics.json", ev.info.run_id)
        rows = pd.read_csv(root / "reports/pairs" / f"{p}.csv")
        assert len(table) == len(rows)
        for m in ("clip_t", "lpips_instance", "lpips_scene"):
            assert table[m].tolist() == pytest.approx(rows[m].tolist())
        assert "samples_metrics_base.json" in artifact_paths(client, ev.info.run_id)


def test_tracking_store_has_the_study_table_and_page(study):
    root, _ = study
    client, _, current = _store(root)
    rep = current["report"]
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert rep.data.tags["warning"] == metrics["warning"]
    for prefix, block in (("", metrics), ("base_", metrics["base"]), ("delta_", metrics["delta"])):
        for m, v in block["overall"].items():
            assert rep.data.metrics[f"{prefix}{m}"] == pytest.approx(v), (prefix, m)
    table = load_table(root, "pairs_table.json", rep.info.run_id).set_index("pair")
    assert set(table.index) == set(PAIRS)
    for p in PAIRS:
        for m in ("clip_t", "lpips_instance", "lpips_scene"):
            assert table.loc[p, f"{m}_mean"] == pytest.approx(metrics["pairs"][p][m])
            assert table.loc[p, f"{m}_base_mean"] == pytest.approx(metrics["base"]["pairs"][p][m])
    arts = artifact_paths(client, rep.info.run_id)
    assert {"index.html", "report.md", "metrics.json", "pairs_table.json", "plots/metrics.png",
            "plots/loss.png", "compare/clip_t.csv"} <= arts
    assert {f"grids/{p}.png" for p in PAIRS} | {f"grids/base/{p}.png" for p in PAIRS} <= arts


def test_no_duplicate_current_runs(study):
    root, _ = study
    client, exp_id = mlflow_client(root)
    seen: dict = {}
    for r in client.search_runs([exp_id], "attributes.status = 'FINISHED'", max_results=5000):
        t = r.data.tags
        if "dvc_stage" in t and "superseded_by" not in t:
            key = (t["dvc_stage"], t["params_hash"], t.get("class", ""))
            assert key not in seen, f"two current runs for {key}"
            seen[key] = r.info.run_id


def test_every_run_records_its_exact_dvc_stage_name(study):
    root, _ = study
    client, exp_id = mlflow_client(root)
    tagged = {r.data.tags.get("dvc_stage") for r in client.search_runs([exp_id], max_results=5000)}
    locked = set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) - {"code"}  # (no torch, no run)
    assert locked <= tagged, sorted(locked - tagged)


def test_forced_rerun_of_an_unchanged_stage_supersedes_the_old_run(study):
    root, _ = study
    client, exp_id = mlflow_client(root)
    query = "tags.dvc_stage = 'evaluate@cat_grass' and attributes.status = 'FINISHED'"
    before = current_runs(client.search_runs([exp_id], query))["evaluate@cat_grass"]
    run(["dvc", "repro", "-s", "-f", "evaluate@cat_grass"], root)
    after = client.search_runs([exp_id], query)
    now = current_runs(after)["evaluate@cat_grass"]
    assert now.info.run_id != before.info.run_id
    assert client.get_run(before.info.run_id).data.tags["superseded_by"] == now.info.run_id
    live = [r for r in after if "superseded_by" not in r.data.tags
            and r.data.tags["params_hash"] == now.data.tags["params_hash"]]
    assert [r.info.run_id for r in live] == [now.info.run_id]


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and __import__("shutil").which("chromium") is None,
                    reason="chromium not installed (apt-get install chromium) - page not checked in a browser")
def test_e2e_page_loads_in_headless_chromium(study):
    import subprocess
    import sys

    root, _ = study
    tool = Path(__file__).resolve().parents[1] / "tools" / "check_page.py"
    proc = subprocess.run([sys.executable, str(tool), str(root / "reports/index.html")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded, total = map(int, re.search(r"(\d+)/(\d+) images loaded", proc.stdout).groups())
    assert loaded == total == 3 + 2 * len(PAIRS)  # plots, then a fine-tuned and a base grid per pair


@pytest.mark.skipif(__import__("shutil").which("chromium") is None,
                    reason="chromium not installed (apt-get install chromium) - MLflow UI not checked in a browser")
def test_mlflow_ui_saved_view_shows_every_pair_with_its_metrics(study, tmp_path):
    import subprocess
    import sys

    root, _ = study
    tool = Path(__file__).resolve().parents[1] / "tools" / "check_mlflow_ui.py"
    proc = subprocess.run([sys.executable, str(tool), str(root), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "study_view.png").stat().st_size > 10_000


def test_dvc_plots_and_metrics_diff_show_the_change(study, tmp_path):
    """Commit the current results, change an evaluator, reproduce: `dvc plots diff` / `dvc metrics diff`
    against HEAD show both revisions with different numbers (the way two experiments are compared)."""
    root, _ = study
    run(["git", "add", "dvc.yaml", "dvc.lock", "params.yaml", "reports"], root)
    run(["git", "commit", "-qm", "results"], root)
    edit_params(root, {"evaluate.lpips_pretrained": False})  # the real trunk -> a random one
    out = run(["dvc", "repro"], root)
    assert ran(out.stdout) == per_pair("evaluate") | {"report", "code"}
    changed = json.loads(run(["dvc", "metrics", "diff", "HEAD", "--json"], root).stdout)["reports/metrics.json"]
    for key in ("overall.lpips_instance", "base.pairs.cat_grass.lpips_instance", "delta.overall.lpips_scene"):
        assert key in changed and changed[key]["old"] != changed[key]["new"], key
    plots = json.loads(run(["dvc", "plots", "diff", "HEAD", "--json", "--split", "-o", str(tmp_path / "plots")],
                           root).stdout)["data"]
    for name, field in (("reports/compare/lpips_instance.csv", "mean"), ("reports/compare/clip_t.csv", "mean"),
                        ("reports/pairs.csv", "lpips_instance_mean")):
        assert name in plots, f"{name} is not a DVC plot"
        rows = [r for e in plots[name] for r in e["anchor_definitions"]["<DVC_METRIC_DATA>"]]
        key = "row" if "row" in rows[0] else "pair"
        value = {(r["rev"], r[key]): float(r[field]) for r in rows}
        assert {rev for rev, _ in value} == {"HEAD", "workspace"}, name
        if "clip_t" not in name:  # LPIPS moved with the evaluator; CLIP-T did not
            assert value[("HEAD", "cat_grass")] != value[("workspace", "cat_grass")], name
        else:
            assert value[("HEAD", "cat_grass · base")] == value[("workspace", "cat_grass · base")]
    for png in ("metrics", "loss", "kinds"):  # the report's figures, one per revision
        assert {r for e in plots[f"reports/plots/{png}.png"] for r in e["revisions"]} == {"HEAD", "workspace"}


def test_dreamsolo_ui_serves_the_study_store_and_links_its_runs_view(study):
    """`dreamsolo ui` starts `mlflow ui` on the study's mlflow.db and prints the saved view's link."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    from dreamsolo import tracking

    root, _ = study
    client, exp_id = mlflow_client(root)
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["dreamsolo", "ui", "--port", str(port)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})
    try:
        line = proc.stdout.readline().strip()
        assert line == f"the study's runs: http://127.0.0.1:{port}{tracking.view_path(exp_id)}", line
        api = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name={tracking.EXPERIMENT}"
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(api, timeout=5) as resp:
                    served = json.load(resp)["experiment"]
                break
            except OSError:
                assert time.time() < deadline and proc.poll() is None, "mlflow ui did not answer"
                time.sleep(1)
        assert served["experiment_id"] == exp_id
        assert {t["key"]: t["value"] for t in served["tags"]}[tracking.KIND_TAG] == "custom_model_development"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
