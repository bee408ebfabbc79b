"""Wall time of the pairs' stages (step 2 of `dreamsolo repro -j N`, dreamsolo.parallel), one pair at a
time on every device against N at a time on the default split (`devices.default_for`: on a CPU box,
all cores against the cores split in N).

Each run is a fresh `git clone` of HEAD in a temporary folder: the shared stages (code, base, priors,
...) run once, untimed; then every pair's stages run forced (`dvc repro --single-item --force`), once per
configuration, and the order of the configurations alternates between runs (the box drifts).
Usage: python bench/pairs_parallel.py [--runs 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP2 = ("import sys; from pathlib import Path; from dreamsolo.parallel import plan, run_pairs; "
         "from dreamsolo.config import load_study; s = load_study(Path('.').resolve()); "
         "run_pairs(s.root, plan(s.root, list(s.pairs)), int(sys.argv[1]), force=True)")


def configs(jobs: int) -> list[tuple[int, str]]:
    """(pairs at a time, DREAMSOLO_DEVICES): 1 on every core, then `jobs` on the default split."""
    from dreamsolo.devices import default_for

    return [(1, default_for(1)), (jobs, default_for(jobs))]


def sh(cmd: list[str], cwd: Path, env: dict) -> None:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def one_run(i: int, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "study"
        sh(["git", "clone", "-q", str(REPO), str(root)], REPO, dict(os.environ))
        env = {**os.environ, "PYTHONPATH": str(root / "src"), "DREAMSOLO_DEVICE_LOCKS": str(Path(tmp) / "leases"),
               "PYTHONWARNINGS": "ignore", "DVC_NO_ANALYTICS": "1"}
        shared = subprocess.run([sys.executable, "-c", "from pathlib import Path; from dreamsolo.parallel import plan;"
                                 "from dreamsolo.config import load_study; s = load_study(Path('.').resolve());"
                                 "print(' '.join(plan(s.root, list(s.pairs)).shared))"],
                                cwd=root, env=env, capture_output=True, text=True, check=True).stdout.split()
        sh(["dvc", "repro", "-f", *shared], root, {**env, "DREAMSOLO_DEVICES": configs(jobs)[0][1]})
        times = {}
        order = configs(jobs) if i % 2 == 0 else configs(jobs)[::-1]
        for n, slots in order:
            t0 = time.monotonic()
            sh([sys.executable, "-c", STEP2, str(n)], root, {**env, "DREAMSOLO_DEVICES": slots})
            times[slots] = time.monotonic() - t0
            print(f"run {i + 1}: {n} at a time on {slots}: {times[slots]:.1f} s "
                  f"(load {open('/proc/loadavg').read().split()[0]})", flush=True)
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"pairs in parallel at {head.strip()}")
    results = [one_run(i, args.jobs) for i in range(args.runs)]
    medians = []
    for (n, slots) in configs(args.jobs):
        vals = [r[slots] for r in results]
        medians.append(statistics.median(vals))
        print(f"{n} at a time on {slots}: median {medians[-1]:.1f} s of {[round(v, 1) for v in vals]}")
    print(f"speed-up of {args.jobs} at a time: {medians[0] / medians[1]:.2f}x")


if __name__ == "__main__":
    main()
