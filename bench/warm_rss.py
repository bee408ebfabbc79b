"""Peak RSS of a warm `train_scene` (dreamsolo.warm): the stage runs in a fork of the warm server, so
the client's own peak says nothing. While the stage runs, poll VmHWM (the kernel's peak resident
size per process) of every process of the warm server (server, supervisors, the stage's fork) and
report the largest: the stage's fork, which maps everything the server preloaded plus its own work.

    python bench/warm_rss.py [--runs 3] [--pair cat_grass]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _study import PY, env, make_study  # noqa: E402


def warm_hwm_gib() -> float:
    best = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if b"dreamsolo.warm" not in (status.parent / "cmdline").read_bytes():
                continue
            kb = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:")]
        except OSError:
            continue
        best = max(best, int(kb[0]) if kb else 0)
    return best / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pair", default="cat_grass")
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dreamsolo-warmrss-"))
    try:
        make_study(root, a.pair)
        extra = {"DREAMSOLO_WARM": "1", "DREAMSOLO_WARM_IDLE": "30"}
        # one untimed run starts the server; its peak is the server's preload, not a stage's
        cmd = [PY, "stages/train_scene.py", "--pair", a.pair]
        subprocess.run(cmd, cwd=root, env=env(root, extra), check=True, capture_output=True)
        peaks = []
        for _ in range(a.runs):
            proc = subprocess.Popen(cmd, cwd=root, env=env(root, extra), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            peak = 0.0
            while proc.poll() is None:
                peak = max(peak, warm_hwm_gib())
                time.sleep(0.05)
            if proc.returncode:
                raise SystemExit(f"train_scene exited {proc.returncode}")
            peaks.append(peak)
        print(json.dumps({"bench": "warm_rss", "peak_vmhwm_gib": {"median": statistics.median(peaks),
                          "min": min(peaks), "max": max(peaks)}, "runs": peaks, "loadavg": os.getloadavg()}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
