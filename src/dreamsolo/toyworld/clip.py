"""The toy CLIP: open_clip's CLIP at toy size, trained contrastively on the pool's training split.

Architecture (`toy-clip.json`, registered with open_clip beside `tiny-clip`): a ModifiedResNet image tower
(open_clip's RN50 design at width 16, 64 px) and a 3-layer text transformer with CLIP's BPE vocabulary
and 32 positions (the study's prompts without identifiers are under 20 tokens). Conv towers learn faster
than ViTs from ~12k cut-outs. Saved as safetensors, it loads through `evaluate.clip_pretrained` like any
local open_clip weights file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamsolo.toyworld.pool import Pool
from dreamsolo.toyworld.train import run_phase

TOY_CLIP = "toy-clip"
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)  # open_clip's (OpenAI) defaults:
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)  # what its eval transform applies


@dataclass(frozen=True)
class ClipPlan:
    seed: int = 0
    steps: int = 3000
    batch: int = 128
    lr: float = 1e-3
    warmup: int = 100
    min_scale: float = 0.6  # random-resized-crop area; mirrored half the time (captions never say left/right)
    save_every_s: float = 60.0


def augment(x: torch.Tensor, gen: torch.Generator, min_scale: float, mean: torch.Tensor = MEAN,
            std: torch.Tensor = STD) -> torch.Tensor:
    """uint8 NCHW -> normalised float: per image a random square crop of min_scale..1 of the area (anywhere
    inside the picture), resized back by one batched affine resample, mirrored half the time."""
    n = len(x)
    side = torch.empty(n).uniform_(min_scale, 1.0, generator=gen).sqrt()
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - side)[:, None]  # keeps the crop inside
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = side * flip, side, shift
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(x.float() / 255.0, grid, mode="bilinear", align_corners=False)
    return (out - mean) / std


def soft_clip_loss(img: torch.Tensor, txt: torch.Tensor, cap: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE where every image whose caption is the same counts as a match: in a batch of 128 from
    a pool where `a photo of a cat` recurs, one-hot targets would push true pairs apart."""
    logits = scale * img @ txt.T
    same = (cap[:, None] == cap[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())


def train_clip(pool: Pool, dest: Path, ckpt: Path, plan: ClipPlan) -> dict:
    """Train the toy CLIP on the pool's non-held-out images and write `dest` (safetensors)."""
    import open_clip
    from safetensors.torch import save_file

    from dreamsolo.metrics.clip import register_toy_clips

    register_toy_clips()
    torch.manual_seed(plan.seed)
    model = open_clip.create_model(TOY_CLIP)
    tokenizer = open_clip.get_tokenizer(TOY_CLIP)
    train = np.flatnonzero(~pool.heldout)
    images = torch.from_numpy(pool.images[train]).permute(0, 3, 1, 2)
    uniq = sorted({pool.captions[i] for i in train})
    index = {c: i for i, c in enumerate(uniq)}
    cap = torch.tensor([index[pool.captions[i]] for i in train])
    ids = tokenizer(uniq)

    def step(gen):
        idx = torch.randint(0, len(train), (plan.batch,), generator=gen)
        caps, inverse = torch.unique(cap[idx], return_inverse=True)  # each distinct caption encoded once
        img = model.encode_image(augment(images[idx], gen, plan.min_scale), normalize=True)
        txt = model.encode_text(ids[caps], normalize=True)[inverse]
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)  # at most 100, as open_clip's training clamps it
        return soft_clip_loss(img, txt, cap[idx], model.logit_scale.exp())

    model.train()
    state = run_phase("clip", ckpt, {"clip": model}, plan.lr, plan, plan.steps, None, step)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest))
    return {"steps": state["step"], "seconds": round(state["elapsed"], 1),
            "final_loss": float(np.mean(state["losses"][-50:])), "train_images": int(len(train)),
            "train_captions": len(uniq)}
