"""The tracking server is down: a stage stops in seconds, before any work, naming the URI; or, opted in
with DREAMSOLO_TRACKING_FALLBACK=local, it logs to the study's own mlflow.db and says so."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from studykit import env, make_study

from dreamsolo import tracking
from dreamsolo.config import load_study

PAIR = "cat_grass"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(tracking.FALLBACK_ENV, raising=False)


@pytest.fixture()
def down(monkeypatch) -> str:
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def stage(root: Path, script: str, extra_env: dict[str, str], *args: str
          ) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, f"stages/{script}.py", *args], cwd=root,
                          env={**env(root), **extra_env}, capture_output=True, text=True, timeout=180)
    return proc, time.monotonic() - t0


@pytest.mark.e2e
def test_stage_script_stops_in_seconds_naming_the_uri(tmp_path):
    root = make_study(tmp_path / "study", [PAIR])
    uri = f"http://127.0.0.1:{closed_port()}"
    proc, seconds = stage(root, "train_scene", {"MLFLOW_TRACKING_URI": uri}, "--pair", PAIR)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    # the stage's inputs do not even exist: the tracking check comes before anything else
    assert lines[0].startswith(f"error: train_scene: MLflow tracking server {uri} is unreachable "
                               "(connection refused)"), lines[0]
    assert tracking.FALLBACK_ENV in lines[0]
    assert seconds < 60, f"took {seconds:.1f} s"  # seconds, not the minutes of a stage; generous for a busy CI box
    assert not (root / "models").exists() and not (root / "mlflow.db").exists()


def test_train_pair_stops_before_training(tmp_path, down, monkeypatch):
    """In-process, with every input present: the run never reaches the training loop."""
    from dreamsolo.training import loop
    from dreamsolo.stages.train import run as train_pair, stage_inputs

    root = make_study(tmp_path / "study", [PAIR])
    study = load_study(root)
    inp = stage_inputs(study, PAIR, "train_scene")
    for f in (inp.image, inp.prior_latents, inp.init_dir / "model_index.json"):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"placeholder")

    def never(*_a, **_k):
        raise AssertionError("training started although the tracking server is down")

    monkeypatch.setattr(loop, "train_stage", never)
    t0 = time.monotonic()
    with pytest.raises(tracking.TrackingUnreachable, match=rf"^MLflow tracking server {down} is unreachable"):
        train_pair(study, PAIR, "train_scene")
    assert time.monotonic() - t0 < 10
    assert not inp.out_dir.exists() and not inp.ckpt_dir.exists()


def test_a_silent_server_times_out():
    with socket.socket() as listener:  # accepts connections (kernel backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(tracking.TrackingUnreachable, match=r"no answer within 1 s"):
            tracking.check_reachable(uri, timeout=1.0)
        assert time.monotonic() - t0 < 5


def test_credentials_in_the_uri_are_not_shown():
    uri = f"http://alice:s3cret@127.0.0.1:{closed_port()}/mlflow"
    with pytest.raises(tracking.TrackingUnreachable) as err:
        tracking.check_reachable(uri)
    assert "s3cret" not in str(err.value) and "alice:***@127.0.0.1" in str(err.value)


@pytest.mark.parametrize("uri, why", [("http://nosuchhost.invalid:5000", "unknown host"),
                                      ("http://127.0.0.1:notaport", "Port could not be cast")])
def test_other_unreachable_uris(uri, why):
    with pytest.raises(tracking.TrackingUnreachable, match=why):
        tracking.check_reachable(uri, timeout=2.0)


@pytest.fixture()
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        status = 404

        def do_GET(self):  # noqa: N802
            self.send_response(self.status)
            self.end_headers()

        def log_message(self, *_a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv, Handler
    srv.shutdown()
    srv.server_close()


def test_any_http_answer_counts_but_a_gateway_error_does_not(http_server):
    srv, handler = http_server
    uri = f"http://127.0.0.1:{srv.server_port}"
    tracking.check_reachable(uri)  # 404: something answers; MLflow's own requests decide the rest
    handler.status = 401
    tracking.check_reachable(uri)
    handler.status = 502  # a reverse proxy whose MLflow is down
    with pytest.raises(tracking.TrackingUnreachable, match="it answered HTTP 502"):
        tracking.check_reachable(uri)


def test_fallback_is_not_used_while_the_server_answers(tmp_path, monkeypatch, http_server, capfd):
    srv, _ = http_server
    uri = f"http://127.0.0.1:{srv.server_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv(tracking.FALLBACK_ENV, "local")
    assert tracking.resolve_uri(tmp_path) == uri
    assert "warning" not in capfd.readouterr().err


def test_bad_fallback_value_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.FALLBACK_ENV, "sqlite")
    with pytest.raises(ValueError, match=rf"^{tracking.FALLBACK_ENV}='sqlite': expected 'local' or unset"):
        tracking.resolve_uri(tmp_path)


def _runs(root: Path, stage_name: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], f"tags.stage = '{stage_name}'")


def test_fallback_local_logs_to_the_study_store_in_process(tmp_path, down, monkeypatch, capfd):
    from dreamsolo.stages.prepare import run as prepare_stage

    root = make_study(tmp_path / "study", [PAIR])
    monkeypatch.chdir(root)  # the store's default artifact root lands in the study, not the repo
    monkeypatch.setenv(tracking.FALLBACK_ENV, "local")
    prepare_stage(load_study(root), PAIR)
    err = capfd.readouterr().err
    local = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    assert f"warning: MLflow tracking server {down} is unreachable (connection refused); " in err
    assert f"{tracking.FALLBACK_ENV}=local: logging to {local} instead" in err
    assert err.count("warning: MLflow tracking server") == 1
    assert (root / "data/prepared" / PAIR / "scene.png").is_file()
    runs = _runs(root, "prepare")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


@pytest.mark.e2e
def test_fallback_local_through_the_stage_script(tmp_path):
    root = make_study(tmp_path / "study", [PAIR])
    uri = f"http://127.0.0.1:{closed_port()}"
    proc, _ = stage(root, "prepare", {"MLFLOW_TRACKING_URI": uri, tracking.FALLBACK_ENV: "local"}, "--pair", PAIR)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: MLflow tracking server {uri} is unreachable" in proc.stderr
    assert f"logging to sqlite:///{(root / 'mlflow.db').as_posix()} instead" in proc.stderr
    assert (root / "data/prepared" / PAIR / "scene.png").is_file()
    runs = _runs(root, "prepare")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
