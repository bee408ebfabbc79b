"""The MLflow run of one DVC stage instance: experiment, parent run, tags, params, receipt."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dreamsolo.tracking.server import TrackingLost, resolve_uri

EXPERIMENT = os.environ.get("DREAMSOLO_EXPERIMENT", "dreamsolo")
KIND_TAG = "mlflow.experimentKind"  # the experiment's type in MLflow 3: model training, not GenAI
# A saved view of the runs table (MLflow's "share view" state, opened by `view_path`): the eight pair
# runs, each with its evaluate numbers and the random-evaluator warning as columns.
VIEW_KEY = "study"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_COLUMNS = ["tags.`warning`", *(f"metrics.`{m}`" for m in (
    "lpips_instance_mean", "base_lpips_instance_mean", "lpips_scene_mean", "base_lpips_scene_mean",
    "clip_t_mean", "clip_i_mean", "dino_mean", "div_mean"))]
VIEW = {"searchFilter": "tags.dreamsolo_parent LIKE '%'", "orderByKey": "tags.`dreamsolo_parent`",
        "orderByAsc": True, "selectedColumns": VIEW_COLUMNS}


def view_path(exp_id: str) -> str:
    """The UI path (after `mlflow ui`'s address) of the runs table in the study's saved view."""
    return f"/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"



def dvc_stage_name(stage: str, key: str | None) -> str:
    """`train_scene@cat_grass`, `evaluate_arm@cat_grass-joint`, `report`: as dvc.yaml names the instance."""
    return f"{stage}@{key}" if key else stage


def params_hash(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep_tags(root: Path) -> dict[str, str]:
    """`sweep` / `sweep_point` tags from params.yaml's tracking section, which `dreamsolo sweep` sets in
    each experiment it queues (no stage depends on them: a point's stages can come from the run cache)."""
    from dreamsolo.params import read_yaml

    try:
        tracking = read_yaml(root / "params.yaml").get("tracking") or {}
    except (OSError, ValueError, AttributeError):
        return {}  # the stage's own params check reports a broken file; tags are not worth a second error
    return {k: str(tracking[k]) for k in ("sweep", "sweep_point") if tracking.get(k)}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{key}."))
        else:
            out[key] = v if not isinstance(v, (list, tuple, dict)) else json.dumps(v)
    return out


class Run:
    """A thin handle over an active MLflow run; the library never imports mlflow itself."""

    def __init__(self, mlflow, run) -> None:
        self._m = mlflow
        self.id = run.info.run_id
        self.parent = run.data.tags.get("mlflow.parentRunId")

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        self._m.log_metrics({k: float(v) for k, v in values.items()}, step=step)

    def parent_metrics(self, values: dict[str, float], tags: dict[str, str]) -> None:
        """The same values (and the evaluator warning) on the pair's parent run too: its row in the runs
        table shows the pair."""
        import time

        from mlflow.entities import Metric, RunTag

        if self.parent:
            now = int(time.time() * 1000)
            self._m.tracking.MlflowClient().log_batch(
                self.parent, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                tags=[RunTag(k, v) for k, v in tags.items()])

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if path.is_dir():
            self._m.log_artifacts(str(path), artifact_path=folder)
        else:
            self._m.log_artifact(str(path), artifact_path=folder)

    def table(self, df, name: str) -> None:
        self._m.log_table(data=df, artifact_file=name)

    def dict(self, data: dict, name: str) -> None:
        self._m.log_dict(data, name)

    def tags(self, values: dict[str, str]) -> None:
        self._m.set_tags(values)


def _parent(client, exp_id: str, pair: str, tags: dict) -> str:
    found = client.search_runs([exp_id], f"tags.dreamsolo_parent = '{pair}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=f"pair {pair}", tags={**tags, "dreamsolo_parent": pair})
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _open(root: Path, uri: str, stage: str, params: dict, pair: str | None, warning: str | None,
          argv: list[str], item: str | None = None) -> Run:
    """Start the MLflow run of one DVC stage instance (experiment, parent, tags, params)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    exp = mlflow.set_experiment(EXPERIMENT)
    exp_id = exp.experiment_id
    client = MlflowClient()
    if KIND_TAG not in exp.tags:  # (3.17's UI picks the page by the browser's workflow toggle: tracking.ui)
        client.set_experiment_tag(exp_id, KIND_TAG, "custom_model_development")
    if exp.tags.get(VIEW_TAG) != json.dumps(VIEW):  # kept as this code defines it
        client.set_experiment_tag(exp_id, VIEW_TAG, json.dumps(VIEW))
    dvc_stage = dvc_stage_name(stage, item or pair)  # an arm's stage: <pair>-<arm>
    phash = params_hash(params)
    tags = {"pair": pair or "", "stage": stage, "dvc_stage": dvc_stage, "params_hash": phash,
            "git_commit": git_commit(root), "dreamsolo_cmd": " ".join(argv), **sweep_tags(root)}
    if pair:
        tags["mlflow.parentRunId"] = _parent(client, exp_id, pair, {"pair": pair})
    if warning:
        tags["warning"] = warning
    older = client.search_runs(
        [exp_id], f"tags.dvc_stage = '{dvc_stage}' and tags.params_hash = '{phash}' "
        "and attributes.status = 'FINISHED'")
    # an experiment's stage (a sweep point) replaces only the runs of that same point: the same
    # stage params with another point's upstream settings is another result, not an older one
    older = [r for r in older if r.data.tags.get("sweep_point") == tags.get("sweep_point")]
    _end_abandoned(client, exp_id, dvc_stage, tags.get("sweep_point"))
    run = mlflow.start_run(experiment_id=exp_id, run_name=dvc_stage, tags=tags)
    for r in older:  # same stage, same params: this run replaces them
        client.set_tag(r.info.run_id, "superseded_by", run.info.run_id)
    mlflow.log_params(_flat(params))
    return Run(mlflow, run)


def _end_abandoned(client, exp_id: str, dvc_stage: str, point: str | None) -> None:
    """Runs of this stage instance still RUNNING belong to a process that died (kill -9, power loss):
    DVC lets one instance run at a time per workspace, and a sweep point is its own workspace. MLflow's
    own terminal status for them is KILLED; the tag says who ended them."""
    stale = client.search_runs([exp_id], f"tags.dvc_stage = '{dvc_stage}' and attributes.status = 'RUNNING'")
    for r in stale:
        if r.data.tags.get("sweep_point") == point:
            client.set_tag(r.info.run_id, "ended_by", "the next run of this stage (its process had died)")
            client.set_terminated(r.info.run_id, "KILLED")


class NullRun:
    """The `Run` interface that logs nothing (the other ranks of a data-parallel stage)."""

    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def stage_run(root: Path, stage: str, params: dict, pair: str | None = None,
              warning: str | None = None, item: str | None = None, receipt: bool = False) -> Iterator[Run]:
    """Open the run of one DVC stage instance; FAILED if the stage raises.

    Given a forked logger (`log_through`), the MLflow calls run there, so MLflow's import and store
    set-up overlap the stage's own work; otherwise they run in-process. `receipt`: once the run is
    FINISHED, write `layout.run_receipt` (a DVC output of the stages whose other outputs are in git).
    """
    from dreamsolo.distributed import world

    if not world().main:  # a data-parallel stage's other ranks: rank 0 logs the run
        yield NullRun()
        return
    from dreamsolo.devices import held

    uri = resolve_uri(root)  # reachable, or the local fallback, or TrackingUnreachable
    slot = {"device": held().name} if held() else {}  # which lease of DREAMSOLO_DEVICES ran it
    if _logger is not None:
        with _logger.run(root, uri, stage, params, pair, warning, item) as proxy:
            if slot:
                proxy.tags(slot)
            yield proxy
    else:
        run = _open(root, uri, stage, params, pair, warning, sys.argv, item)
        if slot:
            run.tags(slot)
        try:
            yield run
        except BaseException:
            with contextlib.suppress(Exception):  # the server may be what failed
                run._m.end_run("FAILED")
            raise
        try:
            run._m.end_run("FINISHED")
        except Exception as e:  # noqa: BLE001 - the server went away: a user error, not a traceback
            raise TrackingLost(uri, e) from e
    if receipt:
        _write_receipt(root, stage, params, item or pair)


def _write_receipt(root: Path, stage: str, params: dict, key: str | None) -> None:
    """The same bytes every time the run is logged with these params (no run id, no URI): the receipt
    says the run exists, and rerunning the stage does not change dvc.lock."""
    from dreamsolo.files import write_json
    from dreamsolo.layout import run_receipt

    dvc_stage = dvc_stage_name(stage, key)
    phash = params_hash(params)
    write_json(run_receipt(root, dvc_stage), {
        "dvc_stage": dvc_stage, "experiment": EXPERIMENT, "params_hash": phash,
        "find": f"tags.dvc_stage = '{dvc_stage}' and tags.params_hash = '{phash}'"})


_logger = None


def log_through(logger) -> None:
    """Send this process's runs through `logger` (a `dreamsolo.warm.logger.Worker`: its `run(...)`
    yields a `Run`-like proxy); None logs in-process. Only the stage wrapper calls this."""
    global _logger
    _logger = logger
