"""Tracking without a pipeline run: the weights-logging helper, superseded runs, and the flat metrics the
evaluate / report runs log. Each test uses its own SQLite store in tmp_path (MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dreamsolo import tracking
from dreamsolo.stages.evaluate import pair_metrics
from dreamsolo.stages.report import artifact_folder, report_metrics
from dreamsolo.tracking.weights import log_weights, weights_manifest


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One SQLite store for the module (creating one costs seconds); tests use distinct pair ids."""
    import mlflow
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the store's default artifact root (./mlruns) lands here, not in the repo
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setattr(tracking.runs, "EXPERIMENT", "dreamsolo-test")
        mlflow.set_tracking_uri(uri)
        exp = mlflow.set_experiment("dreamsolo-test")
        yield root, MlflowClient(uri), exp.experiment_id


@pytest.fixture()
def store(shared_store):
    """(study root, client, experiment id)."""
    return shared_store


def _weights_folder(root: Path, name: str = "p") -> Path:
    folder = root / "models" / name / "instance"
    for rel, data in (("unet/diffusion_pytorch_model.safetensors", b"unet" * 1000),
                      ("text_encoder/model.safetensors", b"text" * 100),
                      ("unet/config.json", b"{}"), ("train_log.csv", b"step,loss\n")):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _artifacts(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for a in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, a.path) if a.is_dir else {a.path}
    return out


def test_reference_mode_records_dvc_path_and_md5_not_the_weights(store):
    root, client, _ = store
    folder = _weights_folder(root)
    with tracking.stage_run(root, "train_instance", {"lr": 1.0}, pair="p") as run:
        manifest = log_weights(run, root, folder, "reference")
    got = client.get_run(run.id)
    unet = hashlib.md5((b"unet" * 1000)).hexdigest()
    assert got.data.tags["weights.mode"] == "reference"
    assert got.data.tags["weights.dvc_path"] == "models/p/instance"
    assert got.data.tags["weights.md5"] == unet
    assert got.data.tags["weights.file"] == "unet/diffusion_pytorch_model.safetensors"
    assert got.data.tags["weights.md5.text_encoder/model.safetensors"] == hashlib.md5(b"text" * 100).hexdigest()
    assert [f["path"] for f in manifest["files"]] == ["text_encoder/model.safetensors",
                                                      "unet/diffusion_pytorch_model.safetensors"]
    assert _artifacts(client, run.id) == {"weights_manifest.json"}  # nothing big copied
    logged = json.loads(Path(client.download_artifacts(run.id, "weights_manifest.json", str(root))).read_text())
    assert logged["dvc_path"] == "models/p/instance" and logged["mode"] == "reference"


def test_artifact_mode_logs_the_whole_folder(store):
    root, client, _ = store
    folder = _weights_folder(root)
    with tracking.stage_run(root, "train_scene", {"lr": 2.0}, pair="p") as run:
        log_weights(run, root, folder, "artifact")
    arts = _artifacts(client, run.id)
    assert {"weights/unet/diffusion_pytorch_model.safetensors", "weights/text_encoder/model.safetensors",
            "weights/unet/config.json", "weights_manifest.json"} <= arts
    assert client.get_run(run.id).data.tags["weights.mode"] == "artifact"


def test_adapter_weights_are_always_logged_in_full(store):
    root, client, _ = store
    folder = root / "models" / "lora" / "instance"
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"lora" * 10)
    (folder / "dreamsolo_model.json").write_text('{"method": "lora", "base": "../../base/tiny"}')
    with tracking.stage_run(root, "train_instance", {"lr": 3.0}, pair="p") as run:
        log_weights(run, root, folder, "reference")
    arts = _artifacts(client, run.id)
    assert arts == {"adapter/pytorch_lora_weights.safetensors", "weights_manifest.json"}
    tags = client.get_run(run.id).data.tags
    assert tags["weights.file"] == "pytorch_lora_weights.safetensors"
    assert tags["weights.md5"] == hashlib.md5(b"lora" * 10).hexdigest()
    assert tags["weights.base_dvc_path"] == "models/base/tiny"  # the adapter applies to this


def test_log_weights_refuses_bad_mode_and_empty_folder(store):
    root, _, _ = store
    with tracking.stage_run(root, "train_scene", {"lr": 4.0}, pair="p") as run:
        with pytest.raises(ValueError, match="reference, artifact"):
            log_weights(run, root, _weights_folder(root), "everything")
        (root / "models" / "empty").mkdir(parents=True)
        with pytest.raises(FileNotFoundError, match="no weights files"):
            log_weights(run, root, root / "models" / "empty")


def test_manifest_md5_is_dvcs_file_hash(tmp_path):
    folder = _weights_folder(tmp_path)
    m = weights_manifest(tmp_path, folder)
    for f in m["files"]:
        assert f["md5"] == hashlib.md5((folder / f["path"]).read_bytes()).hexdigest()
        assert f["size"] == (folder / f["path"]).stat().st_size


def test_unchanged_rerun_supersedes_the_older_run_changed_params_do_not(store):
    root, client, exp_id = store
    ids = []
    for params in ({"a": 1}, {"a": 1}, {"a": 2}):
        with tracking.stage_run(root, "sample", params, pair="sup") as run:
            ids.append(run.id)
    runs = {r.info.run_id: r for r in client.search_runs([exp_id], "tags.dvc_stage = 'sample@sup'")}
    assert runs[ids[0]].data.tags["superseded_by"] == ids[1]
    assert "superseded_by" not in runs[ids[1]].data.tags  # other params: history, not a duplicate
    assert "superseded_by" not in runs[ids[2]].data.tags
    for rid in ids:
        tags = runs[rid].data.tags
        assert tags["stage"] == "sample" and tags["pair"] == "sup" and tags["params_hash"]
        assert tags["git_commit"] and tags["mlflow.parentRunId"] == runs[ids[0]].data.tags["mlflow.parentRunId"]
    parents = client.search_runs([exp_id], "tags.dreamsolo_parent = 'sup'")
    assert len(parents) == 1  # one parent run per pair, reused


def test_failed_stage_marks_the_run_failed(store):
    root, client, exp_id = store
    with pytest.raises(RuntimeError):
        with tracking.stage_run(root, "evaluate", {"a": 1}, pair="fail") as run:
            raise RuntimeError("boom")
    assert client.get_run(run.id).info.status == "FAILED"


def test_a_run_left_running_by_a_dead_process_is_killed_by_the_next_run(store):
    """kill -9 leaves the run RUNNING; the stage's next run ends it as KILLED (issue 26). Mutation: without
    tracking.runs._end_abandoned the first run stays RUNNING and this fails."""
    root, client, exp_id = store
    dead = client.create_run(exp_id, run_name="train_scene@dead", tags={"dvc_stage": "train_scene@dead"})
    other = client.create_run(exp_id, run_name="train_scene@dead", tags={"dvc_stage": "train_scene@dead",
                                                                        "sweep_point": "exp-1"})
    with tracking.stage_run(root, "train_scene", {"a": 1}, pair="dead") as run:
        assert client.get_run(run.id).info.status == "RUNNING"
    ended = client.get_run(dead.info.run_id)
    assert ended.info.status == "KILLED" and "process had died" in ended.data.tags["ended_by"]
    assert client.get_run(other.info.run_id).info.status == "RUNNING"  # another sweep point's workspace
    assert client.get_run(run.id).info.status == "FINISHED"


def test_pair_metrics_are_the_json_numbers():
    from dreamsolo.metrics.pair_result import PairResult, Scores, Stat

    stat = lambda v: Stat(v, 0.1, 3)  # noqa: E731
    none = Stat(None, None, 0)
    tuned = Scores(n_samples=3, metrics={"clip_t": stat(0.3), "dino": none}, by_kind={}, div=stat(0.2), pres=none)
    base = Scores(n_samples=3, metrics={"clip_t": stat(0.25)}, by_kind={}, div=stat(0.1), pres=stat(0.4))
    result = PairResult(pair="p", category="object", evaluators_pretrained=True, warning=None, tuned=tuned,
                        base=base, base_model="models/base/tiny")
    # delta is derived from the means (fine-tuned minus base), so delta_clip_t is the float 0.3 - 0.25
    assert pair_metrics(result) == {"clip_t_mean": 0.3, "div_mean": 0.2, "base_clip_t_mean": 0.25,
                                    "base_div_mean": 0.1, "base_pres_mean": 0.4, "delta_clip_t": 0.3 - 0.25,
                                    "delta_div": 0.1}


def test_report_metrics_and_artifact_folders():
    metrics = {"overall": {"clip_t": 0.3, "lpips_scene": 0.5}, "evaluators_pretrained": False,
               "base": {"overall": {"clip_t": 0.2}}, "delta": {"overall": {"clip_t": 0.1}}}
    assert report_metrics(metrics) == {"clip_t": 0.3, "lpips_scene": 0.5, "base_clip_t": 0.2, "delta_clip_t": 0.1}
    assert artifact_folder("grid_cat") == "grids" and artifact_folder("gridbase_cat") == "grids/base"
    assert artifact_folder("plot_loss") == "plots" and artifact_folder("compare_clip_t") == "compare"
    assert artifact_folder("index_html") is None
