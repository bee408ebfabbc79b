"""Do a sampling's bytes follow the machine? Prints ONE JSON line.

The same images (the toy base model, the default's sampler settings, a pair's prompts, seeds 0..n-1)
are drawn in fresh processes that differ in one thing each: the thread count (OMP_NUM_THREADS), the
precision, or the instruction set torch may use. An x86-64 CPU without AVX-512 is emulated on this one:
ATen's kernels are capped by ATEN_CPU_CAPABILITY and oneDNN's (convolutions, bf16 matmuls) by
ONEDNN_MAX_CPU_ISA; `avx512_core` is AVX-512 without its bf16 instructions, where oneDNN emulates bf16.
Each row: identical PNG bytes to the reference (fp32, 2 threads, native ISA)? the share of pixel
values that differ, the largest difference in grey levels, and the mean over pixels.

    python bench/machine_bytes.py                    # every config, 8 images
    python bench/machine_bytes.py --configs fp32:1 bf16:2 --images 4
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ISA = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
       "avx512_core": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}
DEFAULT = ["fp32:2", "fp32:1", "fp32:2:avx2", "fp32:2:avx512_core", "bf16:2", "bf16:1", "bf16:2:avx512_core",
           "bf16:2:avx2"]


def child(precision: str, n: int, out: Path) -> None:
    """Draw the images in this process and save them (PNG bytes and pixels) to `out`."""
    import numpy as np
    import torch

    from dreamsolo.config import load_study
    from dreamsolo.prompts import pair_prompts
    from dreamsolo.sampling import DTYPES, load_for_sampling, sample_images

    study = load_study(REPO)
    pair_id = next(iter(study.pairs))
    pair = study.pair(pair_id)
    rows = pair_prompts(study.prompts, study.class_noun(pair.scene_class), study.class_noun(pair.instance_class))
    prompts = [rows[i % len(rows)].prompt for i in range(n)]
    pipe = load_for_sampling(REPO / "data/base" / study.preset_name, DTYPES[precision])
    images = sample_images(pipe, prompts, list(range(n)), study.sample, study.preset.resolution, "bytes")
    pngs = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pngs.append(hashlib.sha256(buf.getvalue()).hexdigest())
    np.savez(out, pixels=np.stack([np.asarray(im) for im in images]), pngs=np.array(pngs),
             threads=torch.get_num_threads())


def run(spec: str, n: int, work: Path) -> dict:
    precision, threads, *isa = spec.split(":")
    isa_name = isa[0] if isa else "native"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TQDM_DISABLE": "1",
           "CUDA_VISIBLE_DEVICES": "", "DREAMSOLO_DEVICES": "none", **ISA[isa_name]}
    out = work / f"{spec.replace(':', '_')}.npz"
    subprocess.run([sys.executable, __file__, "--child", precision, "--images", str(n), "--out", str(out)],
                   env=env, check=True, cwd=REPO)
    return {"spec": spec, "file": out}


def compare(ref: dict, row: dict) -> dict:
    import numpy as np

    a, b = np.load(ref["file"]), np.load(row["file"])
    x, y = a["pixels"].astype(np.int16), b["pixels"].astype(np.int16)
    diff = np.abs(x - y)
    return {"config": row["spec"], "threads": int(b["threads"]), "same_png_bytes": bool((a["pngs"] == b["pngs"]).all()),
            "images_same": int((a["pngs"] == b["pngs"]).sum()), "images": len(b["pngs"]),
            "pixel_values_differing": round(float((diff > 0).mean()), 5), "max_grey_levels": int(diff.max()),
            "mean_grey_levels": round(float(diff.mean()), 4)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT, help="PRECISION:THREADS[:ISA], ISA in " + " | ".join(ISA))
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(a.child, a.images, a.out)
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dreamsolo-bytes-") as tmp:
        rows = [run(spec, a.images, Path(tmp)) for spec in ["fp32:2", *[c for c in a.configs if c != "fp32:2"]]]
        result = [compare(rows[0], r) for r in rows]
    print(json.dumps({"reference": "fp32:2:native", "rows": result, "loadavg_start": load[0],
                      "loadavg_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
