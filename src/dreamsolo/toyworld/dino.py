"""The toy DINO: a small ViT trained by self-distillation (Caron et al., ICCV 2021) on the pool's training split.

DreamBooth scores subject fidelity with DINO because its features tell two instances of one class apart,
where CLIP's embed the class. This is the same method at toy size (timm's VisionTransformer, 64 px,
8 px patches; `metrics.dino.TOY_DINO`): a student matches an EMA teacher's centred, sharpened output
on another view of the same image. Its views are two of the pool's pictures of the *same cut-out*
(another background, place, size or style) where the pool has one, else two crops of one picture, so
what it learns to ignore is everything but the object: the invariance the DINO metric is used for.
Multi-crop is left out (cost); two 64 px views per image.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dreamsolo.toyworld.clip import augment
from dreamsolo.metrics.dino import IMAGENET_MEAN, IMAGENET_STD, toy_dino
from dreamsolo.toyworld.pool import Pool
from dreamsolo.toyworld.train import run_phase


@dataclass(frozen=True)
class DinoPlan:
    seed: int = 0
    steps: int = 2000
    batch: int = 64
    lr: float = 5e-4
    warmup: int = 100
    out_dim: int = 1024  # prototypes: DINO's 65536 is for ImageNet; the pool has ~12k objects
    student_temp: float = 0.1
    teacher_temp: tuple[float, float] = (0.04, 0.07)  # warmed up linearly over the first 30% of steps
    momentum: float = 0.996  # teacher EMA, raised to 1 on a cosine by the end
    center_momentum: float = 0.9
    min_scale: float = 0.4  # random-resized-crop area of each view
    same_object: float = 0.75  # share of pairs that are two pictures of one cut-out (where it has several)
    save_every_s: float = 60.0


class Head(nn.Module):
    """DINO's projection head: 3-layer MLP to a bottleneck, L2-normalised, then weight-normalised prototypes."""

    def __init__(self, dim: int, out_dim: int, hidden: int = 256, bottleneck: int = 64):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False  # fixed norm, as DINO's norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(nn.functional.normalize(self.mlp(x), dim=-1))


class State(nn.Module):
    """The teacher's output centre and the step count (for the schedules): buffers, so checkpoints keep them."""

    def __init__(self, out_dim: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, t_s: float, t_t: float) -> torch.Tensor:
    """Cross-entropy of the student on each view against the teacher on the *other* view (2 views, stacked)."""
    s = (student / t_s).log_softmax(-1).chunk(2)
    t = ((teacher - center) / t_t).softmax(-1).detach().chunk(2)
    return -0.5 * ((t[0] * s[1]).sum(-1).mean() + (t[1] * s[0]).sum(-1).mean())


def partners(pool: Pool, rows: np.ndarray) -> list[np.ndarray]:
    """For each training row, the other training rows that show the same cut-out."""
    by_key = defaultdict(list)
    for r in rows:
        if pool.keys[r]:
            by_key[pool.keys[r]].append(r)
    return [np.array([o for o in by_key.get(pool.keys[r], []) if o != r], dtype=np.int64) for r in rows]


def train_dino(pool: Pool, dest: Path, ckpt: Path, plan: DinoPlan) -> dict:
    """Train on the pool's non-held-out images; write the teacher's backbone to `dest` (safetensors)."""
    from safetensors.torch import save_file

    torch.manual_seed(plan.seed)
    student, teacher = toy_dino(), toy_dino()
    head, t_head = Head(student.embed_dim, plan.out_dim), Head(student.embed_dim, plan.out_dim)
    teacher.load_state_dict(student.state_dict())
    t_head.load_state_dict(head.state_dict())
    for p in [*teacher.parameters(), *t_head.parameters()]:
        p.requires_grad = False  # no gradient, so AdamW leaves them alone: the EMA moves them
    state = State(plan.out_dim)
    rows = np.flatnonzero(~pool.heldout)
    others = partners(pool, rows)
    images = torch.from_numpy(pool.images).permute(0, 3, 1, 2)

    def step(gen):
        k = int(state.step)
        with torch.no_grad():  # the EMA after the previous optimizer step (exact on resume: the state is saved)
            m = 1 - (1 - plan.momentum) * (math.cos(math.pi * k / plan.steps) + 1) / 2
            for t, s in zip([*teacher.parameters(), *t_head.parameters()], [*student.parameters(), *head.parameters()]):
                t.mul_(m).add_(s.detach(), alpha=1 - m)
        pick = torch.randint(0, len(rows), (plan.batch,), generator=gen).numpy()
        u = torch.rand(plan.batch, generator=gen).numpy()
        second = [int(others[i][int(v * 1e6) % len(others[i])]) if len(others[i]) and v < plan.same_object
                  else int(rows[i]) for i, v in zip(pick, u)]
        norm = (plan.min_scale, IMAGENET_MEAN, IMAGENET_STD)
        views = torch.cat([augment(images[rows[pick]], gen, *norm), augment(images[second], gen, *norm)])
        t_t = plan.teacher_temp[0] + (plan.teacher_temp[1] - plan.teacher_temp[0]) * min(1.0, k / (0.3 * plan.steps))
        with torch.no_grad():
            t_out = t_head(teacher(views))
        loss = dino_loss(head(student(views)), t_out, state.center, plan.student_temp, t_t)
        with torch.no_grad():
            state.center.mul_(plan.center_momentum).add_(t_out.mean(0, keepdim=True), alpha=1 - plan.center_momentum)
            state.step += 1
        return loss

    modules = {"student": student, "head": head, "teacher": teacher, "teacher_head": t_head, "state": state}
    done = run_phase("dino", ckpt, modules, plan.lr, plan, plan.steps, None, step)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(dest))
    return {"steps": done["step"], "seconds": round(done["elapsed"], 1),
            "final_loss": float(np.mean(done["losses"][-50:])), "train_images": int(len(rows)),
            "pairs_of_one_cutout": int(sum(len(o) > 0 for o in others))}
