"""Warm stage processes (dreamsolo.warm): a stage handed to the warm server writes the same bytes, exits
with the same status and message, and reacts to signals as the same stage run in a cold process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from studykit import edit_params, env, make_study

from dreamsolo.warm import client as warm

pytestmark = pytest.mark.skipif(not warm.enabled() and os.environ.get("DREAMSOLO_WARM") != "0",
                                reason="warm mode is off on this machine (not Linux, or a GPU)")

PAIR = "cat_grass"
STEPS = 150  # long enough to signal a stage mid-training
SHORT = 20  # the same-bytes check: a few checkpoints and a progress bar are all it needs
EDITS = {"presets.tiny.train_steps": STEPS, "train.checkpoint_every": 5, "train.log_every": 5}
IDLE = "30"  # own server for this module (the idle time is part of the server's key), gone soon after
UNET = "unet/diffusion_pytorch_model.safetensors"


def stage_env(root: Path, warm_on: bool, **extra: str) -> dict[str, str]:
    e = {**env(root), "MLFLOW_TRACKING_URI": f"sqlite:///{(root.parent / 'mlflow.db').as_posix()}",
         "DREAMSOLO_WARM": "1" if warm_on else "0", "DREAMSOLO_WARM_IDLE": IDLE, **extra}
    return e


def start(root: Path, args: list[str], warm_on: bool, **extra: str) -> subprocess.Popen:
    log = root.parent / f"stderr-{time.monotonic_ns()}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, *args], cwd=root, env=stage_env(root, warm_on, **extra),
                                stdout=subprocess.DEVNULL, stderr=fh)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, float]:
    """Exit code, stderr, and the process's largest resident size seen in MB (sampled from /proc:
    getrusage's peak would include this big test process's, which a forked child inherits)."""
    deadline = time.monotonic() + timeout
    peak = 0.0
    while True:
        peak = max(peak, rss_mb(proc.pid))
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{proc.args} did not finish in {timeout} s")
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, proc.log.read_text(), peak


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kb = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    return int(kb[0]) / 1024 if kb else 0.0


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = make_study(tmp_path_factory.mktemp("warm") / "study", [PAIR], EDITS)
    for args in (["stages/base.py"], ["stages/prepare.py", "--pair", PAIR],
                 ["stages/generate_priors.py", "--class", "grass"]):
        code, err, _ = finish(start(root, args, warm_on=True))
        assert code == 0, err[-3000:]
    return root


def out_dir(root: Path) -> Path:
    return root / "models" / PAIR / "scene"


def ckpt_steps(root: Path) -> list[int]:
    folder = root / "models" / ".checkpoints" / PAIR / "scene"
    return sorted(int(p.name[5:]) for p in folder.glob("step-*")) if folder.is_dir() else []


def clean(root: Path) -> None:
    shutil.rmtree(out_dir(root), ignore_errors=True)
    shutil.rmtree(root / "models" / ".checkpoints", ignore_errors=True)


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ckpt_steps(root):
        assert proc.poll() is None, proc.log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.mark.e2e
def test_warm_stage_writes_the_same_bytes_as_a_cold_one(study):
    args = ["stages/train_scene.py", "--pair", PAIR]
    params = (study / "params.yaml").read_text()
    edit_params(study, {"presets.tiny.train_steps": SHORT})
    try:
        clean(study)
        code, err, cold_rss = finish(start(study, args, warm_on=False))
        assert code == 0, err[-3000:]
        cold = (out_dir(study) / UNET).read_bytes()
        clean(study)
        code, err, warm_rss = finish(start(study, args, warm_on=True))
    finally:
        (study / "params.yaml").write_text(params)
    assert code == 0, err[-3000:]
    assert f"{SHORT}/{SHORT}" in err  # the progress bar reached the client's stderr
    assert (out_dir(study) / UNET).read_bytes() == cold
    # the work ran in the server's fork, not in the client: a cold stage holds torch and the model
    assert warm_rss < 150 < cold_rss, (warm_rss, cold_rss)


@pytest.mark.e2e
def test_user_error_same_message_and_status(study):
    args = ["stages/train_scene.py", "--pair", "no_such_pair"]
    cold = finish(start(study, args, warm_on=False))
    got = finish(start(study, args, warm_on=True))
    assert got[0] == cold[0] == 1
    assert got[1] == cold[1] and "no_such_pair" in got[1]


@pytest.mark.e2e
def test_sigterm_is_forwarded_to_the_stage(study):
    clean(study)
    proc = start(study, ["stages/train_scene.py", "--pair", PAIR], warm_on=True)
    wait_for_checkpoint(proc, study)
    proc.send_signal(signal.SIGTERM)
    code, err, _ = finish(proc, timeout=60)
    last = err.strip().splitlines()[-1]
    assert code == 1 and "stopped by SIGTERM at step" in last, err[-3000:]
    assert not out_dir(study).exists()
    clean(study)


@pytest.mark.e2e
def test_a_killed_client_takes_its_stage_along(study):
    clean(study)
    proc = start(study, ["stages/train_scene.py", "--pair", PAIR], warm_on=True)
    wait_for_checkpoint(proc, study)
    proc.send_signal(signal.SIGKILL)
    assert finish(proc, timeout=30)[0] == -signal.SIGKILL
    time.sleep(1.0)  # the server polls for a vanished client every 0.05 s
    seen = ckpt_steps(study)
    time.sleep(3.0)  # ~40 more steps if the stage were still training
    assert ckpt_steps(study) == seen and seen[-1] < STEPS, "the stage kept training after its client died"
    assert not out_dir(study).exists()
    clean(study)


@pytest.mark.e2e
def test_a_server_that_hangs_up_before_the_stage_starts_means_a_cold_run(study):
    import socket
    import tempfile
    import threading

    short = tempfile.mkdtemp(prefix="dsw")  # a private folder of its own (no real server there), short
    extra = {"XDG_RUNTIME_DIR": short}      # enough for an AF_UNIX path
    where = subprocess.run([sys.executable, "-c", "from dreamsolo.warm import client as warm; "
                            "print(warm._private_dir() / (warm._key() + '.sock'))"],
                           cwd=study, env=stage_env(study, True, **extra), capture_output=True, text=True, check=True)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(where.stdout.strip())
    fake.listen(8)

    def hang_up() -> None:  # accepts, then closes without an answer: like a server crashing mid-request
        while True:
            try:
                conn, _ = fake.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    shutil.rmtree(study / "data/prepared" / PAIR, ignore_errors=True)
    try:
        code, err, _ = finish(start(study, ["stages/prepare.py", "--pair", PAIR], warm_on=True, **extra))
    finally:
        fake.close()
        shutil.rmtree(short, ignore_errors=True)
    assert code == 0, err[-3000:]
    # the fake hangs up before or after reading the request: a broken pipe, or no answer
    reason = re.search(r"warm server unavailable \((.+)\); running this stage in a cold process", err)
    assert reason and reason.group(1) in ("[Errno 32] Broken pipe", "[Errno 104] Connection reset by peer",
                                          "it closed the connection before starting the stage"), err
    assert (study / "data/prepared" / PAIR / "scene.png").is_file()


@pytest.mark.e2e
def test_bad_idle_setting_is_named(study):
    code, err, _ = finish(start(study, ["stages/prepare.py", "--pair", PAIR], warm_on=True, DREAMSOLO_WARM_IDLE="1m"))
    assert code == 1 and err.strip() == "error: DREAMSOLO_WARM_IDLE='1m': expected seconds > 0 (or DREAMSOLO_WARM=0 to switch off)"


def test_off_switch_and_private_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DREAMSOLO_WARM", "0")
    assert not warm.enabled()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = warm._private_dir()
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o755)  # readable by others: a server there could be reached by another user
    with pytest.raises(OSError, match="not a private folder"):
        warm._private_dir()
