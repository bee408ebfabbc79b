"""Are the study's two identifiers interchangeable, on every pair? (docs/TOY.md: the judge of a toy base.)

    python bench/crossed_identifiers.py [--pairs cat_grass,cup_brick] [--out bench/out/crossed]

Run after `dvc repro`: for each pair, samples `<S> noun` and `<V> noun` for the instance's and the scene's
class noun from the pair's Stage II weights (the study's sampler and seeds; the study is not written) and
writes <out>/crossed.json and <out>/crossed.md: per pair and side, the mean over seeds of LPIPS(own
identifier) - LPIPS(the other) to that side's photo, its spread, and whether it is < 0 (each identifier
binds its own photo). tests/test_method.py checks one pair; this shows whether a result there is the pair
or the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", help="comma-separated pair ids (default: every pair of params.yaml)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/crossed")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from dreamsolo.config import load_study
    from dreamsolo.metrics.crossed import crossed_identifiers
    from dreamsolo.metrics.lpips_metric import load_lpips

    study, lp = load_study(ROOT), load_lpips("alex", pretrained=True)
    pairs = a.pairs.split(",") if a.pairs else list(study.pairs)
    res = {pid: crossed_identifiers(study, pid, lp) for pid in pairs}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "crossed.json").write_text(json.dumps(res, indent=1) + "\n")
    rows = ["| pair | instance: <S> vs <V> | scene: <V> vs <S> |", "| --- | --- | --- |"]
    holds = {"instance": 0, "scene": 0}
    for pid, r in res.items():
        cells = []
        for side in ("instance", "scene"):
            m, s = statistics.mean(r[side]), statistics.stdev(r[side]) if len(r[side]) > 1 else 0.0
            holds[side] += m < 0
            cells.append(f"{m:+.3f} ± {s:.3f} {'✓' if m < 0 else '✗'}")
        rows.append(f"| {pid} | {' | '.join(cells)} |")
    n = len(res)
    mean = {side: statistics.mean(statistics.mean(r[side]) for r in res.values()) for side in holds}
    rows.append(f"| **holds on** | {holds['instance']}/{n}, mean {mean['instance']:+.3f} | "
                f"{holds['scene']}/{n}, mean {mean['scene']:+.3f} |")
    (a.out / "crossed.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
