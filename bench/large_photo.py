"""Peak memory of the prepare stage's work on one large photo (issue 26: a 12000x9000 JPEG).

    python bench/large_photo.py [--size 12000x9000] [--runs 3]

Each run is a fresh process (its VmHWM, Linux) that prepares a pair whose instance is
the large photo; prints the peak RSS of each run and their median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys
from pathlib import Path
from dreamsolo.stages.prepare import prepare_pair
prepare_pair(Path(sys.argv[1]), "p", 64, "center", 64)
# VmHWM: this process image's own peak (ru_maxrss would carry the parent's peak across fork + exec)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(int(hwm.split()[1]) / 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="12000x9000")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    w, h = (int(v) for v in a.size.split("x"))
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        pair = Path(tmp) / "data/pairs/p"
        pair.mkdir(parents=True)
        shutil.copy(ROOT / "data/pairs/cat_grass/scene.png", pair / "scene.png")
        small = Image.open(ROOT / "data/pairs/cat_grass/instance.jpg").convert("RGB")
        noise = np.random.default_rng(0).integers(0, 24, (h, w, 3), dtype=np.uint8)
        big = np.asarray(small.resize((w, h), Image.Resampling.BILINEAR)) // 2 + noise
        Image.fromarray(big).save(pair / "instance.jpg", quality=90)
        del big, noise
        peaks = []
        for _ in range(a.runs):
            out = subprocess.run([sys.executable, "-c", CHILD, tmp], capture_output=True, text=True, check=True,
                                 env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""})
            peaks.append(float(out.stdout.strip().splitlines()[-1]))
            shutil.rmtree(Path(tmp) / "data/prepared", ignore_errors=True)
        print(f"{a.size} JPEG, prepare_pair peak RSS (MiB): {', '.join(f'{p:.0f}' for p in peaks)}; "
              f"median {statistics.median(peaks):.0f}")


if __name__ == "__main__":
    main()
