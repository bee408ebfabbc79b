"""`dreamsolo ui`: MLflow's UI on the study's store, opened on the study's runs view."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlparse

from dreamsolo.errors import UserError
from dreamsolo.tracking import EXPERIMENT, tracking_uri, view_path
from dreamsolo.tracking.server import _redact


def ui_command(root: Path, host: str, port: int) -> tuple[str, list[str] | None]:
    """`dreamsolo ui`: the link to the study's runs view, and the `mlflow ui` command that serves the study's
    store (None when the study logs to a tracking server: the link points there).

    MLflow 3.17 opens an experiment on the page of the browser's workflow toggle (GenAI | Model training,
    kept in its localStorage, GenAI by default), not of the experiment's kind: the link sets it."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():  # MLflow would create it
        raise UserError(f"no MLflow store at {uri[len('sqlite:///'):]}: run `dvc repro` first")
    exp = MlflowClient(uri).get_experiment_by_name(EXPERIMENT)
    if exp is None:
        raise UserError(f"no MLflow experiment {EXPERIMENT!r} in {_redact(urlparse(uri))}: run `dvc repro` first")
    if urlparse(uri).scheme in ("http", "https"):
        return uri.rstrip("/") + view_path(exp.experiment_id), None
    shown = f"[{host}]" if ":" in host else host
    # one worker: one person browses one study; MLflow's default of 4 workers imports MLflow 4 times
    cmd = [str(Path(sys.executable).with_name("mlflow")), "ui", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    return f"http://{shown}:{port}{view_path(exp.experiment_id)}", cmd
