"""A throwaway study root for the process-level benches (startup, memory): one pair, real stages.

The repo's own outputs are never touched: inputs are copied from the repo when it has them
(models/base/tiny, data/prepared/<pair>, data/priors/<class>, models/<pair>/scene) and made by
running the real stages in the temp root otherwise. The root is a git repo, like a real study.
"""

from __future__ import annotations

import os
import re
import select
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
# stage -> (command-line key, tqdm description that marks the first real work; {id} = the item)
STAGES = {
    "train_scene": ("pair", r"scene {id}"),
    "train_instance": ("pair", r"instance {id}"),
    "generate_priors": ("class", r"priors {id}"),
    "sample": ("pair", r"sample {id}"),
}


def env(root: Path, extra: dict | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("DREAMSOLO_ROOT", "MLFLOW_TRACKING_URI")}
    e.update(GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b",
             PYTHONWARNINGS="ignore", DREAMSOLO_WARM="0")  # cold unless asked
    e.update(extra or {})
    return e


def stage_cmd(stage: str, item: str, pre: list[str] | None = None) -> list[str]:
    key = STAGES[stage][0] if stage in STAGES else "pair"
    return [PY, *(pre or []), f"stages/{stage}.py", f"--{key}", item]


def item_for(root: Path, stage: str, pair: str) -> str:
    if stage == "generate_priors":
        return yaml.safe_load((root / "params.yaml").read_text())["pairs"][pair]["scene_class"]
    return pair


def marker(stage: str, item: str) -> re.Pattern | None:
    return re.compile(STAGES[stage][1].format(id=re.escape(item)).encode()) if stage in STAGES else None


def _copy_or_run(root: Path, rel: str, cmd: list[str]) -> None:
    src, dst = REPO / rel, root / rel
    if (src / ".").exists() and any(src.iterdir()):
        shutil.copytree(src, dst, symlinks=False)
        return
    proc = subprocess.run(cmd, cwd=root, env=env(root), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")


def make_study(root: Path, pair: str = "cat_grass") -> Path:
    """Copy params/stages, add one pair's inputs, git-init; returns root."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    info = params["pairs"][pair]
    preset = params["model"]["preset"]
    shutil.copytree(REPO / "data/pairs" / pair, root / "data/pairs" / pair)
    _copy_or_run(root, f"models/base/{preset}", [PY, "stages/base.py"])
    _copy_or_run(root, f"data/prepared/{pair}", [PY, "stages/prepare.py", "--pair", pair])
    for c in {info["scene_class"], info["instance_class"]}:
        _copy_or_run(root, f"data/priors/{c}", [PY, "stages/generate_priors.py", "--class", c])
    _copy_or_run(root, f"models/{pair}/scene", [PY, "stages/train_scene.py", "--pair", pair])
    for cmd in (["git", "init", "-q"], ["git", "add", "params.yaml", "stages"], ["git", "commit", "-qm", "b"]):
        subprocess.run(cmd, cwd=root, env=env(root), check=True, capture_output=True)
    return root


def run_timed(cmd: list[str], root: Path, mark: re.Pattern | None, extra_env: dict | None = None,
              timeout: float = 900) -> dict:
    """Run one stage process; seconds to the first `mark` on stderr, to exit, and its peak RSS (wait4).
    A process still running after `timeout` s (e.g. a hung logger) is killed and reported as an error."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, env=env(root, extra_env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: killable whole
    buf, first = b"", None
    fd = proc.stderr.fileno()
    while True:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and any logger it forked
            proc.wait()
            raise RuntimeError(f"{' '.join(cmd)}: no exit after {timeout:.0f} s (killed):\n"
                               f"{buf[-2000:].decode(errors='replace')}")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        if first is None and mark is not None and mark.search(buf[max(0, len(buf) - len(chunk) - 256):]):
            first = time.perf_counter() - t0
    _, status, usage = os.wait4(proc.pid, 0)
    total = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{buf[-3000:].decode(errors='replace')}")
    return {"first_work_s": first, "total_s": total, "peak_rss_gb": usage.ru_maxrss / 2**20, "stderr": buf}
