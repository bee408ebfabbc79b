"""The toy world's one training loop: AdamW, warmup then linear decay, checkpoint and exact resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm


class PhasePlan(Protocol):
    seed: int
    warmup: int
    save_every_s: float


def lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warmup, then linear decay to 10% by the end of the phase (steps or time)."""
    return min(1.0, (step + 1) / warmup) * max(0.1, 1.0 - progress)


def run_phase(name: str, ckpt: Path, modules: dict, lr: float, plan: PhasePlan, steps: int | None,
              seconds: float | None, step_fn) -> dict:
    """Train `modules` with AdamW (no weight decay: unused token embeddings such as `sks` must keep
    their random init, as in a real CLIP) until `steps` or `seconds`; checkpoint, resume."""
    ckpt.mkdir(parents=True, exist_ok=True)
    path = ckpt / f"{name}.pt"
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(plan.seed * 1000 + len(name))  # a stream per phase
    state = {"step": 0, "elapsed": 0.0, "done": False, "losses": []}
    if path.is_file():
        saved = torch.load(path, weights_only=True)  # tensors and plain containers only: nothing is unpickled
        for k, m in modules.items():
            m.load_state_dict(saved["modules"][k])
        opt.load_state_dict(saved["opt"])
        gen.set_state(saved["gen"])
        state = saved["state"]
        tqdm.write(f"{name}: resuming at step {state['step']} ({state['elapsed']:.0f} s done)")
    if state["done"]:
        return state

    def save():
        torch.save({"modules": {k: m.state_dict() for k, m in modules.items()}, "opt": opt.state_dict(),
                    "gen": gen.get_state(), "state": state}, path)

    total = steps if steps else None
    last_save = time.perf_counter()
    with tqdm(total=total, initial=state["step"], desc=f"toy {name}", unit="step") as bar:
        while True:
            t0 = time.perf_counter()
            progress = max(state["step"] / steps if steps else 0.0, state["elapsed"] / seconds if seconds else 0.0)
            if progress >= 1.0:
                break
            for g in opt.param_groups:
                g["lr"] = lr * lr_factor(state["step"], progress, plan.warmup)
            loss = step_fn(gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state["step"] += 1
            state["elapsed"] += time.perf_counter() - t0
            state["losses"].append(round(loss.item(), 5))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(state['losses'][-50:]):.4f}")
            if time.perf_counter() - last_save > plan.save_every_s:
                save()
                last_save = time.perf_counter()
    state["done"] = True
    save()
    return state
