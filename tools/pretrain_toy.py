"""Pretrain the toy world offline: its pool, the `toy` model (SD architecture at toy size) and its evaluators.

    python tools/pretrain_toy.py pool  --pool build/toy/pool.npz                      # the captioned pool (cached)
    python tools/pretrain_toy.py model --pool build/toy/pool.npz --out data/base/toy \\
        --vae-steps 1500 --unet-steps 6000 --decoder-steps 400                         # exact (or --seconds N)
    python tools/pretrain_toy.py clip  --pool build/toy/pool.npz --out data/evaluators/toy-clip.safetensors --steps 6000 --threads 2
    python tools/pretrain_toy.py dino  --pool build/toy/pool.npz --out data/evaluators/toy-dino.safetensors --steps 2000

Each command is deterministic from --seed, shows a progress bar and resumes from --ckpt (default
<out>.ckpt) when rerun. The pool is built once at --pool (needs Debian's openclipart-png,
fonts-noto-color-emoji and tuxpaint-stamps-default, and `pip install '.[toy]'`). One thread by default
(--threads): the machines this runs on are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    cmds = {name: sub.add_parser(name) for name in ("pool", "model", "clip", "dino")}
    for name, p in cmds.items():
        p.add_argument("--pool", type=Path, required=True, help="pool file (.npz), built there if missing")
        p.add_argument("--images", type=int, default=40000, help="pool size, when the pool is built")
        p.add_argument("--pairs", type=Path, default=Path("data/pairs"), help="the study photos the pool must not hold")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=1)
        if name != "pool":
            p.add_argument("--out", type=Path, required=True, help="diffusers folder (model) or .safetensors file")
            p.add_argument("--ckpt", type=Path, help="checkpoint folder (default: <out>.ckpt)")
    m = cmds["model"]
    m.add_argument("--seconds", type=float, help="time budget for all three phases")
    m.add_argument("--vae-steps", type=int)
    m.add_argument("--unet-steps", type=int)
    m.add_argument("--unet-restart-steps", type=int, default=0, help="a second UNet cycle after the first (warm restart)")
    m.add_argument("--decoder-steps", type=int)
    m.add_argument("--vae-share", type=float, default=0.4, help="of --seconds; UNet gets 1 - vae - decoder")
    m.add_argument("--decoder-share", type=float, default=0.1)
    m.add_argument("--init", type=Path, help="a toy pipeline folder to continue (its VAE kept: no VAE or decoder phase)")
    m.add_argument("--head", choices=("caption", "noun"), default="caption",
                   help="what the text encoder's classification term tells apart (noun: see docs/TOY_BUILDS.md, retrain 3)")
    m.add_argument("--freeze-text", action="store_true",
                   help="with --init: keep its text encoder as is (the identifiers' neighbourhood; docs/TOY_BUILDS.md)")
    m.add_argument("--identity-share", type=float, default=0.0,
                   help="share of cut-out pictures captioned `a photo of <rare word> <noun>` (docs/TOY_BUILDS.md, retrain 6)")
    m.add_argument("--only-study", action="store_true",
                   help="the UNet phase on the 11 study classes' pictures only (a probe: docs/TOY_BUILDS.md)")
    for name in ("clip", "dino"):
        cmds[name].add_argument("--steps", type=int, required=True)
    a = ap.parse_args()
    if a.what == "model" and not a.seconds and not (a.unet_steps and (a.init or a.vae_steps and a.decoder_steps)):
        m.error("give --seconds, or --vae-steps, --unet-steps and --decoder-steps (--unet-steps alone with --init)")
    if a.what == "model" and a.freeze_text and not a.init:
        m.error("--freeze-text keeps an --init's text encoder: give --init")
    return a


def study_identifiers() -> tuple[str, ...]:
    """params.yaml's identifiers (prompts.*_token), which no pool caption may use."""
    import yaml

    prompts = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["prompts"]
    return (prompts["instance_token"], prompts["scene_token"])


def main() -> None:
    a = parse()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    from dreamsolo.toyworld.pool import cached_pool

    pool = cached_pool(a.pool, a.images, a.seed, a.pairs)
    if a.what == "pool":
        print(json.dumps(pool.counts, indent=1))
        return
    ckpt = a.ckpt or a.out.with_name(a.out.name + ".ckpt")
    ckpt.mkdir(parents=True, exist_ok=True)
    if a.what == "model":
        from dreamsolo.toyworld.diffusion import Plan, pretrain_toy
        from dreamsolo.toyworld.validate import STUDY_CLASSES

        plan = Plan(seed=a.seed, images=a.images, vae_steps=a.vae_steps, unet_steps=a.unet_steps,
                    unet_restart_steps=a.unet_restart_steps,
                    decoder_steps=a.decoder_steps, seconds=a.seconds, vae_share=a.vae_share,
                    decoder_share=a.decoder_share, head=a.head, init=str(a.init) if a.init else None,
                    freeze_text=a.freeze_text, identity_share=a.identity_share,
                    identity_exclude=study_identifiers() if a.identity_share else (),
                    only=tuple(STUDY_CLASSES) if a.only_study else ())
        info = pretrain_toy(a.out, ckpt, plan, pool)
        print(json.dumps({k: info[k] for k in ("vae", "unet", "decoder", "scaling_factor", "wall_s_this_run")}))
    elif a.what == "clip":
        from dreamsolo.toyworld.clip import ClipPlan, train_clip

        print(json.dumps(train_clip(pool, a.out, ckpt, ClipPlan(seed=a.seed, steps=a.steps))))
    else:
        from dreamsolo.toyworld.dino import DinoPlan, train_dino

        print(json.dumps(train_dino(pool, a.out, ckpt, DinoPlan(seed=a.seed, steps=a.steps))))


if __name__ == "__main__":
    main()
