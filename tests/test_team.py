"""A team's study: a shared DVC remote, an MLflow tracking server, outputs a teammate can read.

- `dvc push` after a study; a fresh clone `dvc pull`s models, samples and reports and retrains nothing.
- A fresh clone that does not pull reruns what git does not hold, and the stages whose MLflow receipt
  (`reports/runs/`, DVC-cached) it lacks: its tracking server then holds every stage's run. It reruns them
  two pairs at a time (`dreamsolo repro -j 2`), which must give the bytes of one at a time (test_parallel).
- A server that goes away in the middle of a stage fails that stage; DVC records nothing of it, and
  `dvc repro` reruns it once the server is back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from studykit import E2E_PAIRS as PAIRS, artifact_paths, edit_params, env, ran, repro_output, run

pytestmark = pytest.mark.e2e

IGNORE = "/mlflow.db\n/mlruns/\n/mlartifacts/\n/.dvc/cache/\n/.dvc/tmp/\n/.dvc/config.local\n"


def files_under(root: Path, *tops: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for t in tops for p in sorted((root / t).rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


@pytest.fixture(scope="module")
def pushed(e2e_study, tmp_path_factory):
    """The end-to-end study, consistent again, committed, with a local folder as its default remote, pushed."""
    root, _ = e2e_study
    run(["dvc", "repro"], root)  # whatever earlier tests changed in params or code: reproduced
    remote = tmp_path_factory.mktemp("remote") / "dvc-store"
    run(["dvc", "remote", "add", "-d", "-f", "team", str(remote)], root)
    (root / ".gitignore").write_text(IGNORE)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "results", "--allow-empty"], root)
    run(["dvc", "push"], root)
    return root


def clone(root: Path, dest: Path) -> Path:
    run(["git", "clone", "-q", str(root), str(dest)], root)
    return dest


def test_a_pulled_clone_is_complete_and_retrains_nothing(pushed, tmp_path):
    dest = clone(pushed, tmp_path / "clone")
    run(["dvc", "pull"], dest)
    assert json.loads(run(["dvc", "status", "--json"], dest).stdout) == {}
    assert ran(run(["dvc", "repro"], dest).stdout) == set()
    tops = ("models", "data/samples", "data/samples_base", "data/priors", "reports")
    theirs, ours = files_under(pushed, *tops), files_under(dest, *tops)
    assert sum(k.endswith(".safetensors") for k in ours) >= 4 * len(PAIRS)
    assert ours.keys() == theirs.keys() and all(ours[k] == theirs[k] for k in ours)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` on loopback: a SQLite backend and proxied artifacts (the README's team command)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        cmd = [mlflow, "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
               "--artifacts-destination", str(self.folder / "artifacts")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            assert self.proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
        raise AssertionError("mlflow server did not start in 90 s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "server")
    srv.folder.mkdir()
    srv.start()
    yield srv
    srv.kill()


def run_with(uri: str, cmd: list[str], root: Path, **extra) -> subprocess.CompletedProcess:
    e = env(root) | {"MLFLOW_TRACKING_URI": uri, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1"} | extra
    return subprocess.run(cmd, cwd=root, env=e, capture_output=True, text=True, timeout=1200)


def _outs(root: Path) -> dict:
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {(s, o["path"]): o["md5"] for s, v in stages.items() for o in v.get("outs", [])}


def test_a_fresh_clone_reproduced_two_pairs_at_a_time_logs_the_whole_study_to_the_team_server(pushed, server,
                                                                                                tmp_path):
    """The clone reruns nearly every stage, with `dreamsolo repro -j 2` (dreamsolo.parallel) on two one-core
    leases: the bytes of the plain one-pair-at-a-time `dvc repro` that built `pushed`, the pairs' chains
    overlapping, stages that ran at once on their own cores, and every stage's run on the team server. (One run for both
    properties: a second full repro of the study cost a minute and a half of the suite.)"""
    from mlflow.tracking import MlflowClient

    from dreamsolo import tracking

    dest = clone(pushed, tmp_path / "clone")
    leases = {"DREAMSOLO_DEVICES": "cpu:0,cpu:1", "DREAMSOLO_DEVICE_LOCKS": str(tmp_path / "leases")}
    proc = run_with(server.url, ["dreamsolo", "repro", "-j", "2"], dest, DREAMSOLO_NPROC="", **leases)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ran_here = ran(repro_output(dest, proc))
    assert {f"evaluate@{p}" for p in PAIRS} | {"report"} <= ran_here  # git held their outputs, not receipts
    assert {f"train_instance@{p}" for p in PAIRS} <= ran_here  # the models were not in git: retrained
    assert run(["git", "status", "--porcelain", "dvc.lock", "reports"], dest).stdout == ""  # same bytes
    assert _outs(dest) == _outs(pushed) and len(_outs(dest)) > 40  # every output, models included
    again = run_with(server.url, ["dreamsolo", "repro", "-j", "2"], dest, DREAMSOLO_NPROC="", **leases)
    assert again.returncode == 0 and not ran(repro_output(dest, again)), again.stdout[-2000:]
    assert run(["dvc", "status"], dest).stdout.strip() == "Data and pipelines are up to date."

    client = MlflowClient(server.url)
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp.tags[tracking.KIND_TAG] == "custom_model_development"  # the UI opens on its runs
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    by_stage = {r.data.tags["dvc_stage"]: r for r in runs if "dvc_stage" in r.data.tags}
    locked = set(yaml.safe_load((dest / "dvc.lock").read_text())["stages"]) - {"code"}
    assert locked <= set(by_stage), sorted(locked - set(by_stage))
    for p in PAIRS:
        ev = by_stage[f"evaluate@{p}"]
        summary = json.loads((dest / "reports/pairs" / f"{p}.json").read_text())
        assert ev.data.metrics["lpips_instance_mean"] == pytest.approx(summary["metrics"]["lpips_instance"]["mean"])
        assert ev.data.tags["mlflow.parentRunId"] == by_stage[f"train_scene@{p}"].data.tags["mlflow.parentRunId"]
        assert by_stage[f"train_instance@{p}"].data.metrics["loss"] > 0
    report = by_stage["report"]
    paths = artifact_paths(client, report.info.run_id)
    assert "pairs_table.json" in paths and any(p.endswith(".png") for p in paths)
    table = json.loads(Path(client.download_artifacts(report.info.run_id, "pairs_table.json", str(tmp_path)))
                       .read_text())
    assert sorted(r[table["columns"].index("pair")] for r in table["data"]) == sorted(PAIRS)
    grid = next(p for p in sorted(paths) if p.endswith(".png"))
    got = Path(client.download_artifacts(report.info.run_id, grid, str(tmp_path / "dl")))
    assert got.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and got.stat().st_size > 1000
    # proxied: the server stores the artifacts; the clone holds no MLflow files of its own
    assert any((server.folder / "artifacts").rglob("pairs_table.json"))
    assert not any((dest / d).exists() for d in ("mlflow.db", "mlruns", "mlartifacts"))
    span = {}  # the two pairs' chains overlap in time (whole chains: one short stage may not, on a busy box)
    for p in PAIRS:
        mine = [r for r in runs if r.data.tags.get("dvc_stage", "").endswith(f"@{p}")]
        span[p] = (min(r.info.start_time for r in mine), max(r.info.end_time for r in mine))
    (a0, a1), (b0, b1) = span.values()
    assert a0 < b1 and b0 < a1, span
    # stages that ran at once ran on their own cores (two that ran one after the other may share one: the
    # lease is free again: a busy box once ran both train_instance stages back to back, both on cpu:0)
    leased = [r for r in by_stage.values() if r.data.tags.get("device", "").startswith("cpu:")]
    assert {r.data.tags["device"] for r in leased} == {"cpu:0", "cpu:1"}
    at_once = [(a, b) for i, a in enumerate(leased) for b in leased[i + 1:]
               if a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time]
    assert at_once, "no two stages of the -j 2 repro ran at once"
    assert all(a.data.tags["device"] != b.data.tags["device"] for a, b in at_once), [
        (a.data.tags["dvc_stage"], b.data.tags["dvc_stage"]) for a, b in at_once
        if a.data.tags["device"] == b.data.tags["device"]]


def test_a_server_that_goes_away_mid_stage_fails_the_stage_and_dvc_records_nothing(pushed, server, tmp_path):
    from mlflow.tracking import MlflowClient

    dest = clone(pushed, tmp_path / "clone")
    run(["dvc", "pull"], dest)
    stage = f"train_scene@{PAIRS[0]}"
    edit_params(dest, {f"pairs.{PAIRS[0]}.train_scene": {"steps": 400}})  # long enough to stop the server in
    lock_before = (dest / "dvc.lock").read_text()
    e = env(dest) | {"MLFLOW_TRACKING_URI": server.url, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1",
                     "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.Popen(["dvc", "repro", "-s", stage], cwd=dest, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(server.url)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the stage's run is open: stop the server
        exp = client.get_experiment_by_name("dreamsolo")
        if exp and client.search_runs([exp.experiment_id], f"tags.dvc_stage = '{stage}'"):
            break
        time.sleep(0.3)
    assert proc.poll() is None, "the stage ended before its run could be seen"
    server.kill()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, out[-3000:]
    assert "MLflow logging failed" in out and server.url in out, out[-3000:]
    assert (dest / "dvc.lock").read_text() == lock_before  # DVC recorded nothing of the stage
    assert stage in json.loads(run(["dvc", "status", "--json"], dest).stdout)
    server.start()  # back: the same store, the same port
    proc = run_with(server.url, ["dvc", "repro", "-s", stage], dest)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert stage not in json.loads(run(["dvc", "status", "--json"], dest).stdout)
    statuses = {r.info.status for r in client.search_runs(
        [client.get_experiment_by_name("dreamsolo").experiment_id], f"tags.dvc_stage = '{stage}'")}
    assert "FINISHED" in statuses
