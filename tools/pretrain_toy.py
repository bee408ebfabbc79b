"""Pretrain the `toy` preset (SD architecture at toy size) on offline captioned images.

    python tools/pretrain_toy.py --out models/base/toy --seconds 3600   # VAE 40%, UNet 50%, decoder 10%
    python tools/pretrain_toy.py --out models/base/toy --vae-steps 2300 --unet-steps 1800 --decoder-steps 500  # exact

Checkpoints go to --ckpt (default <out>.ckpt); rerunning the same command resumes there.
One thread by default (--threads): the machines this runs on are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="diffusers folder to write")
    ap.add_argument("--ckpt", type=Path, help="checkpoint folder (default: <out>.ckpt)")
    ap.add_argument("--seconds", type=float, help="time budget for all three phases")
    ap.add_argument("--vae-steps", type=int)
    ap.add_argument("--unet-steps", type=int)
    ap.add_argument("--decoder-steps", type=int)
    ap.add_argument("--vae-share", type=float, default=0.4, help="of --seconds; UNet gets 1 - vae - decoder")
    ap.add_argument("--decoder-share", type=float, default=0.1)
    ap.add_argument("--images", type=int, default=8000, help="size of the seeded image pool")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if not a.seconds and not (a.vae_steps and a.unet_steps and a.decoder_steps):
        ap.error("give --seconds, or --vae-steps, --unet-steps and --decoder-steps")
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from dreamsolo.models.toy import Plan, pretrain_toy

    plan = Plan(seed=a.seed, images=a.images, vae_steps=a.vae_steps, unet_steps=a.unet_steps,
                decoder_steps=a.decoder_steps, seconds=a.seconds, vae_share=a.vae_share,
                decoder_share=a.decoder_share)
    info = pretrain_toy(a.out, a.ckpt or a.out.with_name(a.out.name + ".ckpt"), plan)
    print(json.dumps({k: info[k] for k in ("vae", "unet", "decoder", "scaling_factor", "wall_s_this_run")}))


if __name__ == "__main__":
    main()
