"""One training stage in three parts: `setup` (model, cached inputs, optimizer), `train_step` (one
optimizer step of the DreamBooth loss: the loop, the benches and the tests all run this one), and
`train_stage` (resume, loop, checkpoint, save the weights atomically)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dreamsolo import distributed
from dreamsolo.config import Train
from dreamsolo.errors import UserError
from dreamsolo.files import atomic_dir
from dreamsolo.machine import record as machine_record
from dreamsolo.models.family import encode_xl
from dreamsolo.training import checkpoint
from dreamsolo.training.evals import EVAL_FIELDS, StepEvaluator, adaptive_stop
from dreamsolo.training.inputs import Cached, StageInputs, cache_inputs, make_batch
from dreamsolo.training.loss import Groups, dreambooth_loss
from dreamsolo.training.trainable import (autocast, check_device, grad_scaler, make_optimizer, prepare_model,
                                      save_trained)

LogFn = Callable[[int, dict[str, float]], None]
FIELDS = ["step", "loss", "loss_instance", "loss_prior", "loss_replay", "lr", *EVAL_FIELDS]
# Summary keys that describe this run, not its result: returned and logged to MLflow, kept out of the
# DVC out (train_meta.json), so the same inputs write the same bytes however it ran; what of the machine
# still shapes them is its `machine` record (dreamsolo.machine.record).
RUN_ONLY = ("seconds", "s_per_step", "resumed_from")


class TrainingDiverged(UserError, RuntimeError):
    """The loss or the weights became non-finite: nothing is saved; the message names the settings."""


class Interrupted(UserError, RuntimeError):
    """SIGTERM / SIGINT: a checkpoint was saved and the next run resumes there."""


@dataclass
class Session:
    """Everything a step touches, built once by `setup`."""

    desc: str
    dev: torch.device
    pipe: object
    noise_scheduler: object
    trainable: dict[str, torch.nn.Parameter]
    cached: Cached
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    scaler: torch.amp.GradScaler
    gen: torch.Generator
    groups: Groups
    scale: float  # the VAE's latent scaling factor
    world: distributed.World  # one process, or this rank of DREAMSOLO_NPROC (dreamsolo.distributed)
    unet: object  # what the step calls: pipe.unet, or its DDP wrapper
    text_encoder: object
    rows: torch.Tensor | None  # this rank's rows of the global batch (None: one process, every row)
    last_finite: float | None = None  # the last finite loss, named when training diverges
    text_encoder_2: object = None  # SDXL's second text encoder (or its DDP wrapper); None for SD


def setup(inp: StageInputs, cfg: Train, desc: str = "train") -> Session:
    """Load the start weights, choose what trains, cache the inputs, build the optimizer (seeded: the
    order of these calls is part of what makes a run reproducible)."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    from dreamsolo.models.loading import device, load_pipeline

    dev = device()
    check_device(cfg, dev, desc)
    world = distributed.init(dev)
    distributed.check(cfg.batch_size, bool(cfg.eval_every), world, desc)
    if inp.patches is not None and world.size > 1:  # the hook's boxes are the global batch's, not a rank's rows
        raise UserError(f"{desc}: the sine arm trains in one process; unset DREAMSOLO_NPROC")
    torch.manual_seed(cfg.seed)
    pipe = load_pipeline(inp.init_dir).to(dev)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    trainable = prepare_model(pipe, cfg, dev)
    cached = cache_inputs(pipe, inp, dev)
    optimizer = make_optimizer(list(trainable.values()), cfg, dev)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                                 num_training_steps=cfg.steps)
    b = cfg.batch_size // world.size  # this process's share of the global batch
    groups = Groups(b, b, b if cached.replay else 0, cfg.prior_weight, cfg.replay_weight,
                    b if cached.composite else 0, inp.composite_weight, b if cached.replay_prior else 0,
                    cached.mask)
    unet, text_encoder, rows = pipe.unet, pipe.text_encoder, None
    text_encoder_2 = getattr(pipe, "text_encoder_2", None)  # SDXL (models.family)
    if world.size > 1:
        unet = distributed.wrap(pipe.unet, dev)
        text_encoder = distributed.wrap(pipe.text_encoder, dev) if cfg.train_text_encoder else text_encoder
        if text_encoder_2 is not None and cfg.train_text_encoder:
            text_encoder_2 = distributed.wrap(text_encoder_2, dev)
        blocks = sum(1 for n in (groups.n_instance, groups.n_prior, groups.n_replay, groups.n_composite,
                                 groups.n_replay_prior) if n)  # the blocks make_batch stacks
        rows = distributed.rows(blocks, b, world).to(dev)
    return Session(desc, dev, pipe, noise_scheduler, trainable, cached, optimizer, lr_scheduler,
                   grad_scaler(cfg, dev), torch.Generator(device=dev).manual_seed(cfg.seed), groups,
                   pipe.vae.config.scaling_factor, world, unet, text_encoder, rows, text_encoder_2=text_encoder_2)


def _diverged(s: Session, cfg: Train, what: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"{s.desc}: {what} (last finite loss: {s.last_finite}); nothing was saved. Look at lr={cfg.lr}, "
        f"prior_weight={cfg.prior_weight}, max_grad_norm={cfg.max_grad_norm} and the mixed-precision setting.")


def train_step(s: Session, cfg: Train, step: int) -> dict[str, float]:
    """One optimizer step: `grad_accum` micro-batches of the DreamBooth loss, clipping, the optimizer and
    lr-scheduler steps. Returns the loss terms (means over the micro-batches); a non-finite loss stops
    training before the weights are touched."""
    sums: dict[str, float] = {}
    for _ in range(cfg.grad_accum):
        if cfg.train_text_encoder:  # the encoder is trained: its embeddings change every step
            if s.text_encoder_2 is None:
                s.cached.text = s.text_encoder(s.cached.ids)[0]
            else:  # SDXL: both encoders; the rows' size conditioning stays what was cached
                s.cached.text = encode_xl(s.text_encoder, s.text_encoder_2, s.cached.ids, s.cached.text.time_ids)
        # the global batch: every rank draws all of it (the same generator), then trains on s.rows
        latents, text = make_batch(s.cached, cfg.batch_size, s.scale, s.gen)
        with autocast(cfg, s.dev):
            parts = dreambooth_loss(s.unet, s.noise_scheduler, latents, text, s.groups, s.gen, rows=s.rows)
        s.scaler.scale(parts["loss"] / cfg.grad_accum).backward()
        if s.cached.position is not None:  # this batch's boxes (after backward: gradient checkpointing reruns
            s.cached.position.boxes = None  # the forward there); evaluations and samples see the whole grid
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.item() / cfg.grad_accum
    if s.world.size > 1:  # every rank sees the same numbers (and stops on the same non-finite loss)
        sums = distributed.mean_over_ranks(sums, s.dev)
    if not math.isfinite(sums["loss"]):
        raise _diverged(s, cfg, f"loss became {sums['loss']} at step {step}")
    s.last_finite = sums["loss"]
    s.scaler.unscale_(s.optimizer)
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(s.trainable.values(), cfg.max_grad_norm)
    s.scaler.step(s.optimizer)
    s.scaler.update()
    s.lr_scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    return sums


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


def fingerprint(inp: StageInputs, cfg: Train) -> str:
    """What a checkpoint must match to be resumed: the settings, the prompts and every input file."""
    return checkpoint.fingerprint(
        {"cfg": dataclasses.asdict(cfg), "prompt": inp.prompt, "prior": inp.prior_prompt,
         "replay": inp.replay_prompt, **_arm_fields(inp)},
        [*inp.files(), *sorted(inp.init_dir.rglob("*.safetensors"))],  # full or LoRA start weights, text encoder too
    )


def _arm_fields(inp: StageInputs) -> dict:
    """The arms' extra settings, only where set: the method's fingerprints stay what they were."""
    extra = {"replay_prior": inp.replay_prior_prompt, "composite": inp.composite_prompt,
             "composite_weight": inp.composite_weight or None, "masked": inp.mask is not None or None,
             "patches": dataclasses.asdict(inp.patches) if inp.patches else None}
    return {k: v for k, v in extra.items() if v is not None}


def _resume(s: Session, inp: StageInputs, cfg: Train, fp: str) -> tuple[int, list[dict]]:
    """(step to continue after, loss rows so far) from the newest matching checkpoint, or (0, [])."""
    found = checkpoint.latest(inp.ckpt_dir, fp)
    if not found:
        return 0, []
    start = checkpoint.restore(found, s.trainable, s.optimizer, s.lr_scheduler, s.gen, scaler=s.scaler)
    tqdm.write(f"{s.desc}: resuming from {found} (step {start}/{cfg.steps})")
    history = checkpoint.history(found)  # the rows up to `start`, saved with the checkpoint
    s.last_finite = history[-1]["loss"] if history else None
    return start, history


def _loop(s: Session, inp: StageInputs, cfg: Train, fp: str, start: int, history: list[dict],
          log: LogFn | None, evaluate: StepEvaluator | None = None) -> str | None:
    """Train from `start`; returns the adaptive rule's reason when it stopped early, else None."""
    main = s.world.main
    with stop_signals() as stop, tqdm(total=cfg.steps, initial=start, desc=s.desc, unit="step",
                                      disable=not main) as bar:
        for step in range(start + 1, cfg.steps + 1):
            sums = train_step(s, cfg, step)
            row = {"step": step, **{k: round(v, 6) for k, v in sums.items()}, "lr": s.lr_scheduler.get_last_lr()[0]}
            if evaluate and (step % cfg.eval_every == 0 or step == cfg.steps):
                row.update(evaluate())
            history.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss']:.4f}")
            if log and main and (step % cfg.log_every == 0 or step == cfg.steps or "eval_fidelity" in row):
                log(step, {k: v for k, v in row.items() if k != "step"})
            reason = adaptive_stop(history, cfg) if cfg.stop == "adaptive" and "eval_fidelity" in row else None
            if reason:
                tqdm.write(f"{s.desc}: adaptive stop: {reason}")
                return reason
            if main and ((step % cfg.checkpoint_every == 0 and step < cfg.steps) or stop["sig"]):
                checkpoint.save(inp.ckpt_dir, step, fp, s.trainable, s.optimizer, s.lr_scheduler, s.gen,
                                cfg.keep_checkpoints, history=history, scaler=s.scaler)
            if stop["sig"]:
                raise Interrupted(f"{s.desc}: stopped by {signal.Signals(stop['sig']).name} at step {step}; "
                                  f"checkpoint saved in {inp.ckpt_dir}, the next run resumes there")
    return None


def train_stage(inp: StageInputs, cfg: Train, *, log: LogFn | None = None, desc: str = "train") -> dict:
    """Fine-tune the UNet of `inp.init_dir`; write `inp.out_dir` atomically. Returns a summary."""
    s = setup(inp, cfg, desc)
    fp = fingerprint(inp, cfg)
    start, history = _resume(s, inp, cfg, fp)
    evaluate, at_start = None, {}
    if cfg.eval_every:
        evaluate = StepEvaluator.build(s.pipe, inp.image, inp.prompt, inp.prior_latents, inp.prior_prompt, cfg)
        at_start = evaluate() if start == 0 else {}  # the start weights: where the curves begin (and the dtype floor of the drift)
        if log:
            log(0, at_start)
    t0 = time.perf_counter()
    reason = _loop(s, inp, cfg, fp, start, history, log, evaluate)
    done = history[-1]["step"] if history else cfg.steps
    bad = [k for k, p in s.trainable.items() if not torch.isfinite(p).all()]
    if bad:  # a finite last loss does not prove the last optimizer step kept the weights finite
        raise _diverged(s, cfg, f"{len(bad)} trained tensors are not finite after step {done} (e.g. {bad[0]})")
    seconds = time.perf_counter() - t0
    summary = {"steps": done, "resumed_from": start, "seconds": round(seconds, 3),
               "s_per_step": round(seconds / max(cfg.steps - start, 1), 5), "device": str(s.dev),
               "final": history[-1] if history else {}, "settings": dataclasses.asdict(cfg),
               "init": str(inp.init_dir), "prompt": inp.prompt, "prior_prompt": inp.prior_prompt,
               "replay_prompt": inp.replay_prompt}
    if cfg.eval_every:
        summary["evaluation"] = {"at_start": at_start, "stop": cfg.stop, "stopped_at": done,
                                 "reason": reason or f"ran all {cfg.steps} steps"}
    distributed.finish(s.world)
    if not s.world.main:  # rank 0 writes the outputs
        return summary
    s.pipe.unet.eval()
    with atomic_dir(inp.out_dir) as tmp:
        save_trained(s.pipe, cfg, inp.init_dir, tmp, inp.out_dir)
        _write_log(tmp / "train_log.csv", history)
        for f in inp.keep:  # what an arm learned from (its composite), beside the weights
            shutil.copyfile(f, tmp / f.name)
        record = {k: v for k, v in summary.items() if k not in RUN_ONLY}
        record["init"] = os.path.relpath(inp.init_dir, inp.out_dir)  # as dreamsolo_model.json: no machine path
        record["machine"] = machine_record(str(s.dev))  # what of the machine still shapes the weights' bytes
        (tmp / "train_meta.json").write_text(json.dumps(record, indent=2) + "\n")
    shutil.rmtree(inp.ckpt_dir, ignore_errors=True)  # finished: the stage's outs hold the result
    return summary


def _write_log(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # an arm's own terms (loss_composite) after the method's columns: the method's log is unchanged
    extra = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in FIELDS]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS + extra, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
