"""Seconds per DreamBooth training step of the library's real loop; prints ONE JSON line.

Harness `stage` (default) runs dreamsolo.training.loop.train_stage on synthetic inputs with
log_every=1 and times the interval between calls of its public `log` callback: one whole optimizer
step as the stage runs it (batch, forward/backward, clipping, optimizer, lr step, bookkeeping, tqdm);
the callback stops it before the last step and the save. Harness `step` runs the library's own
`setup` and then `train_step` per step: the same step without the loop's bookkeeping. Options go
into the library's Train config as they are. Nothing in the library is patched.
Models: --preset tiny (temp dir) | --model-dir DIR | --sd15-random (SD 1.5's architecture from the
configs in src/dreamsolo/models/configs, random weights, no download; 512 px).

    python bench/train_step.py --preset tiny --warmup 5 --steps 30
    python bench/train_step.py --sd15-random --model-cache /tmp/sd15 --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# CLI flag -> (Train field, value that means "off"); a flag set to a non-default value needs the field.
OPTIONS = {"method": ("method", "full"), "mixed_precision": ("mixed_precision", "fp32"),
           "gradient_checkpointing": ("gradient_checkpointing", False), "use_8bit_adam": ("use_8bit_adam", False)}


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    m = p.add_mutually_exclusive_group()
    m.add_argument("--preset", choices=["tiny"], default=None)
    m.add_argument("--model-dir", type=Path, help="an existing diffusers folder (e.g. models/base/tiny)")
    m.add_argument("--sd15-random", action="store_true", help="SD 1.5 architecture, random weights, 512 px")
    p.add_argument("--model-cache", type=Path, help="build the model here once and reuse it (default: temp dir)")
    p.add_argument("--build-only", action="store_true", help="build the model into --model-cache and exit")
    p.add_argument("--resolution", type=int, help="px (default: 64 tiny, 512 sd15, or --model-dir's VAE size)")
    p.add_argument("--harness", choices=["stage", "step"], default="stage")
    p.add_argument("--method", choices=["full", "lora"], default="full")
    p.add_argument("--mixed-precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--use-8bit-adam", action="store_true")
    p.add_argument("--set", action="append", default=[], metavar="KEY=YAML",
                   help="any other Train field, e.g. --set lora_rank=8 (repeatable)")
    p.add_argument("--batch-size", type=int, default=1, help="instance examples per step (+ as many priors)")
    p.add_argument("--replay", action="store_true", help="Stage II shape: add the scene-replay term (3 groups)")
    p.add_argument("--warmup", type=int, default=5, help="steps run before timing")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if not (a.preset or a.model_dir or a.sd15_random):
        a.preset = "tiny"
    if a.build_only and not a.model_cache:
        p.error("--build-only needs --model-cache DIR")
    return a


def train_config(a: argparse.Namespace, steps: int):
    """The library's Train with the requested options, or SystemExit naming the missing field."""
    from dreamsolo.config import ParamsError, Train, build
    import yaml

    fields = {f.name for f in dataclasses.fields(Train)}
    data = dict(steps=steps, lr=5e-6, prior_weight=1.0, replay_weight=0.5 if a.replay else 0.0, seed=a.seed,
                batch_size=a.batch_size, grad_accum=1, warmup_steps=0, log_every=1,
                checkpoint_every=10**6, keep_checkpoints=1)
    for flag, (field, off) in OPTIONS.items():
        value = getattr(a, flag)
        if field in fields:
            data[field] = value
        elif value != off:
            sys.exit(f"train_step: --{flag.replace('_', '-')} {value}: dreamsolo.config.Train has no field "
                     f"'{field}' yet (fields: {', '.join(sorted(fields))}); the library does not support it")
    for item in a.set:
        key, _, raw = item.partition("=")
        if key not in fields:
            sys.exit(f"train_step: --set {key}: dreamsolo.config.Train has no field '{key}'")
        if key == "log_every":  # the stage harness times each step through the log callback
            sys.exit("train_step: --set log_every: the bench keeps it at 1")
        data[key] = yaml.safe_load(raw)
    try:
        return build(Train, data, "bench")
    except ParamsError as e:
        sys.exit(f"train_step: {e}")


def build_sd15(dest: Path, seed: int, dev: str) -> None:
    """SD 1.5's architecture (dreamsolo/models/configs/sd15.json), random weights, as `source: build:sd15`."""
    from dreamsolo.models.build import build

    try:
        import open_clip  # noqa: F401 - the CLIP BPE comes from it
    except ImportError:  # no open_clip (e.g. a bare GPU box): the tiny base model's copy is the same BPE
        src = Path(__file__).resolve().parents[1] / "models/base/tiny/tokenizer"
        if not (src / "vocab.json").is_file():
            raise SystemExit("train_step: neither open_clip nor models/base/tiny/tokenizer for the CLIP BPE")
        shutil.copytree(src, dest / "tokenizer", dirs_exist_ok=True)
    build(dest, "sd15", seed, dev)


def model_folder(a: argparse.Namespace, work: Path, dev: str) -> tuple[Path, str]:
    if a.model_dir:
        return a.model_dir, str(a.model_dir)
    name = "sd15-random" if a.sd15_random else "tiny"
    dest = a.model_cache or work / "model"
    if not (dest / "model_index.json").is_file():
        t = time.perf_counter()
        if a.sd15_random:
            build_sd15(dest, a.seed, dev)
        else:
            from dreamsolo.models.tiny import build_tiny

            build_tiny(dest, a.seed)
        print(f"train_step: built {name} in {dest} ({time.perf_counter() - t:.1f} s)", file=sys.stderr)
    return dest, name


def synthetic_inputs(model: Path, work: Path, res: int, seed: int, replay: bool):
    """A random photo and 4 random prior latents of the model's latent shape, like generate_priors writes."""
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from dreamsolo.training.inputs import StageInputs

    vae = json.loads((model / "vae" / "config.json").read_text())
    lat = res // 2 ** (len(vae["block_out_channels"]) - 1)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (res, res, 3), dtype=np.uint8)).save(work / "photo.png")
    g = torch.Generator().manual_seed(seed)
    shape = (4, vae.get("latent_channels", 4), lat, lat)
    save_file({"mean": torch.randn(shape, generator=g), "std": torch.full(shape, 0.05)}, work / "prior.safetensors")
    return StageInputs(
        init_dir=model, out_dir=work / "out", ckpt_dir=work / "ckpt", image=work / "photo.png",
        prompt="a photo of olis grass field", prior_latents=work / "prior.safetensors",
        prior_prompt="a photo of a grass field", replay_image=work / "photo.png" if replay else None,
        replay_prompt="a photo of olis grass field" if replay else None)


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class _Stop(Exception):
    """Raised from the log callback: ends train_stage before its last step and the save."""


def run_stage(inp, cfg) -> tuple[list[float], float]:
    """train_stage as the DVC stage runs it, timed through its public `log` callback (log_every=1):
    each call marks the end of a step, so the interval between two calls is one whole step of the
    loop. The call after step cfg.steps - 1 raises _Stop: no last step, no save (not timed anyway)."""
    from dreamsolo.training.loop import train_stage

    marks: list[float] = []

    def log(step: int, _row: dict) -> None:
        _sync()
        marks.append(time.perf_counter())
        if step >= cfg.steps - 1:
            raise _Stop

    t0 = time.perf_counter()
    try:
        train_stage(inp, cfg, log=log, desc="bench")
    except _Stop:
        pass
    return [b - a for a, b in zip(marks, marks[1:])], marks[0] - t0


def run_step(inp, cfg, n: int) -> tuple[list[float], float]:
    """The library's own setup + train_step, n times, none of the loop's bookkeeping (tqdm, history,
    log, checkpoints): stage - step is that bookkeeping."""
    from dreamsolo.training.loop import setup, train_step

    t0 = time.perf_counter()
    session = setup(inp, cfg, "bench")
    first, times = None, []
    for step in range(1, n + 1):
        _sync()
        t = time.perf_counter()
        first = first if first is not None else t - t0
        train_step(session, cfg, step)
        _sync()
        times.append(time.perf_counter() - t)
    return times, first


def main(argv=None) -> None:
    a = parse(argv)
    load_start = os.getloadavg()
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: the library picks cuda whenever it sees one
    import torch
    import diffusers

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("train_step: --device cuda but torch sees no GPU")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    total = a.warmup + a.steps + (2 if a.harness == "stage" else 0)  # stage: +1 mark, +1 step never run
    cfg = train_config(a, total)
    out = {"bench": "train_step", "harness": a.harness, "model": None, "resolution": a.resolution,
           "device": dev, "device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
           "torch": torch.__version__, "diffusers": diffusers.__version__, "threads": torch.get_num_threads(),
           "settings": {**{k: getattr(a, k) for k in OPTIONS}, "batch_size": a.batch_size, "replay": a.replay,
                        "extra": a.set}, "loadavg_start": [round(x, 2) for x in load_start]}
    work = Path(tempfile.mkdtemp(prefix="dreamsolo-bench-"))
    try:
        t = time.perf_counter()
        model, out["model"] = model_folder(a, work, dev)
        if a.build_only:
            print(json.dumps({"bench": "build", "model": out["model"], "dir": str(model), "device": dev,
                              "seconds": round(time.perf_counter() - t, 2)}), flush=True)
            return
        vae_size = json.loads((model / "vae" / "config.json").read_text()).get("sample_size", 64)
        out["resolution"] = a.resolution or (512 if a.sd15_random else vae_size)
        inp = synthetic_inputs(model, work, out["resolution"], a.seed, a.replay)
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times, first = (run_stage(inp, cfg) if a.harness == "stage" else run_step(inp, cfg, total))
    except Exception as e:  # noqa: BLE001 - one JSON line either way; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        print(json.dumps({**out, "error": f"{type(e).__name__}: {e}"[:2000]}), flush=True)
        sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timed = times[a.warmup : a.warmup + a.steps]
    med = statistics.median(timed)
    out |= {
        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "warmup": a.warmup, "steps": len(timed),
        "s_per_step": {"median": round(med, 5), "min": round(min(timed), 5), "max": round(max(timed), 5),
                       "mean": round(statistics.fmean(timed), 5)},
        "steps_per_s": round(1 / med, 3), "load_to_first_step_s": round(first, 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),  # KiB -> GiB
        "peak_cuda_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3) if dev == "cuda" else None,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
