"""One training stage: cache the inputs once, run the DreamBooth step, checkpoint, save safetensors.

Nothing is read, decoded, tokenised or VAE-encoded per step: image latents (mean, std of the VAE
posterior) and text embeddings are computed once; each step only samples z = mean + std * eps.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file
from tqdm.auto import tqdm

from dreamsolo.config import Train
from dreamsolo.io import atomic_dir
from dreamsolo.sampling import encode_latents
from dreamsolo.training import checkpoint
from dreamsolo.training.loss import Groups, dreambooth_loss
from dreamsolo.training.setup import (autocast, check_device, grad_scaler, make_optimizer, prepare_model,
                                      save_trained)

LogFn = Callable[[int, dict[str, float]], None]


class TrainingDiverged(RuntimeError):
    pass


class Interrupted(RuntimeError):
    pass


@dataclass(frozen=True)
class StageInputs:
    init_dir: Path  # pipeline folder to start from (base model or Stage I)
    out_dir: Path  # pipeline folder this stage writes
    ckpt_dir: Path  # resumable checkpoints (outside DVC outs)
    image: Path  # the prepared photo to learn
    prompt: str
    prior_latents: Path  # latents.safetensors from generate_priors
    prior_prompt: str
    replay_image: Path | None = None  # Stage II: the Stage-I pair, replayed
    replay_prompt: str | None = None


@dataclass
class Cached:
    image: dict[str, torch.Tensor]
    prior: dict[str, torch.Tensor]
    replay: dict[str, torch.Tensor] | None
    text: torch.Tensor  # (3 or 2, 77, d): instance, prior[, replay]
    ids: torch.Tensor  # their token ids, for when the text encoder itself is trained


def cache_inputs(pipe, inp: StageInputs, dev: torch.device) -> Cached:
    """VAE posteriors and text embeddings, computed once with the frozen encoders."""
    image = encode_latents(pipe.vae, [Image.open(inp.image).convert("RGB")])
    prior = load_file(inp.prior_latents)
    replay = None
    prompts = [inp.prompt, inp.prior_prompt]
    if inp.replay_image is not None:
        replay = encode_latents(pipe.vae, [Image.open(inp.replay_image).convert("RGB")])
        prompts.append(inp.replay_prompt)
    ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(dev)
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0].float()
    move = lambda d: {k: v.to(dev) for k, v in d.items()}  # noqa: E731
    return Cached(move(image), move(prior), move(replay) if replay else None, text, ids)


def make_batch(c: Cached, batch_size: int, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[instance x B | prior x B | replay x B] latents drawn from their posteriors, and their text."""
    n_prior = c.prior["mean"].shape[0]
    idx = torch.randint(0, n_prior, (batch_size,), generator=gen, device=gen.device)
    means = [c.image["mean"].expand(batch_size, -1, -1, -1), c.prior["mean"][idx.to(c.prior["mean"].device)]]
    stds = [c.image["std"].expand(batch_size, -1, -1, -1), c.prior["std"][idx.to(c.prior["std"].device)]]
    texts = [c.text[0:1].expand(batch_size, -1, -1), c.text[1:2].expand(batch_size, -1, -1)]
    if c.replay is not None:
        means.append(c.replay["mean"].expand(batch_size, -1, -1, -1))
        stds.append(c.replay["std"].expand(batch_size, -1, -1, -1))
        texts.append(c.text[2:3].expand(batch_size, -1, -1))
    mean, std = torch.cat(means), torch.cat(stds)
    eps = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
    return (mean + std * eps) * scale, torch.cat(texts)


@contextlib.contextmanager
def stop_signals():
    """SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step."""
    flag = {"sig": None}
    handler = lambda signum, _frame: flag.__setitem__("sig", signum)  # noqa: E731
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train_stage(inp: StageInputs, cfg: Train, *, log: LogFn | None = None, desc: str = "train") -> dict:
    """Fine-tune the UNet of `inp.init_dir`; write `inp.out_dir` atomically. Returns a summary."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from dreamsolo.models.loading import device, load_pipeline

    dev = device()
    check_device(cfg, dev, desc)
    torch.manual_seed(cfg.seed)
    pipe = load_pipeline(inp.init_dir).to(dev)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    trainable = prepare_model(pipe, cfg, dev)
    cached = cache_inputs(pipe, inp, dev)
    unet = pipe.unet
    optimizer = make_optimizer(list(trainable.values()), cfg, dev)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                                 num_training_steps=cfg.steps)
    scaler = grad_scaler(cfg, dev)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    groups = Groups(cfg.batch_size, cfg.batch_size, cfg.batch_size if cached.replay else 0,
                    cfg.prior_weight, cfg.replay_weight)
    scale = pipe.vae.config.scaling_factor
    fp = checkpoint.fingerprint(
        {"cfg": dataclasses.asdict(cfg), "prompt": inp.prompt, "prior": inp.prior_prompt,
         "replay": inp.replay_prompt},
        [inp.image, inp.prior_latents, *([inp.replay_image] if inp.replay_image else []),
         *sorted(inp.init_dir.rglob("*.safetensors"))],  # full or LoRA start weights, text encoder too
    )
    start = 0
    found = checkpoint.latest(inp.ckpt_dir, fp)
    if found:
        start = checkpoint.restore(found, trainable, optimizer, lr_scheduler, gen, scaler=scaler)
        tqdm.write(f"{desc}: resuming from {found} (step {start}/{cfg.steps})")
    history = checkpoint.history(found)  # the rows up to `start`, saved with the checkpoint
    last_finite = history[-1]["loss"] if history else None
    t0 = time.perf_counter()
    with stop_signals() as stop, tqdm(total=cfg.steps, initial=start, desc=desc, unit="step") as bar:
        for step in range(start + 1, cfg.steps + 1):
            sums = {}
            for _ in range(cfg.grad_accum):
                if cfg.train_text_encoder:  # the encoder is trained: its embeddings change every step
                    cached.text = pipe.text_encoder(cached.ids)[0]
                latents, text = make_batch(cached, cfg.batch_size, scale, gen)
                with autocast(cfg, dev):
                    parts = dreambooth_loss(unet, noise_scheduler, latents, text, groups, gen)
                scaler.scale(parts["loss"] / cfg.grad_accum).backward()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.item() / cfg.grad_accum
            if not math.isfinite(sums["loss"]):
                raise TrainingDiverged(
                    f"{desc}: loss became {sums['loss']} at step {step} (last finite loss: {last_finite}); "
                    f"nothing was saved. Look at lr={cfg.lr}, prior_weight={cfg.prior_weight}, "
                    f"max_grad_norm={cfg.max_grad_norm} and the mixed-precision setting."
                )
            last_finite = sums["loss"]
            scaler.unscale_(optimizer)
            if cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable.values(), cfg.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            row = {"step": step, **{k: round(v, 6) for k, v in sums.items()}, "lr": lr_scheduler.get_last_lr()[0]}
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss']:.4f}")
            if log and (step % cfg.log_every == 0 or step == cfg.steps):
                log(step, {k: v for k, v in row.items() if k != "step"})
            due = step % cfg.checkpoint_every == 0 and step < cfg.steps
            if due or stop["sig"]:
                checkpoint.save(inp.ckpt_dir, step, fp, trainable, optimizer, lr_scheduler, gen,
                                cfg.keep_checkpoints, history=history, scaler=scaler)
            if stop["sig"]:
                raise Interrupted(f"{desc}: stopped by {signal.Signals(stop['sig']).name} at step {step}; "
                                  f"checkpoint saved in {inp.ckpt_dir}, the next run resumes there")
    bad = [k for k, p in trainable.items() if not torch.isfinite(p).all()]
    if bad:  # a finite last loss does not prove the last optimizer step kept the weights finite
        raise TrainingDiverged(
            f"{desc}: {len(bad)} trained tensors are not finite after step {cfg.steps} (e.g. {bad[0]}; "
            f"last finite loss: {last_finite}); nothing was saved. Look at lr={cfg.lr}, "
            f"prior_weight={cfg.prior_weight}, max_grad_norm={cfg.max_grad_norm} and the mixed-precision setting."
        )
    seconds = time.perf_counter() - t0
    summary = {"steps": cfg.steps, "resumed_from": start, "seconds": round(seconds, 3),
               "s_per_step": round(seconds / max(cfg.steps - start, 1), 5), "device": str(dev),
               "final": history[-1] if history else {}, "settings": dataclasses.asdict(cfg),
               "init": str(inp.init_dir), "prompt": inp.prompt, "prior_prompt": inp.prior_prompt,
               "replay_prompt": inp.replay_prompt}
    unet.eval()
    with atomic_dir(inp.out_dir) as tmp:
        save_trained(pipe, cfg, inp.init_dir, tmp, inp.out_dir)
        _write_log(tmp / "train_log.csv", history)
        (tmp / "train_meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    import shutil

    shutil.rmtree(inp.ckpt_dir, ignore_errors=True)  # finished: the stage's outs hold the result
    return summary


FIELDS = ["step", "loss", "loss_instance", "loss_prior", "loss_replay", "lr"]


def _write_log(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)

