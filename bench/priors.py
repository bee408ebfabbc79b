"""Images/s of class-image (prior) generation; prints ONE JSON line.

Each config is SAMPLER:STEPS:BATCH[:PRECISION]. `dpm` and `ddim` go through dreamsolo.sampling.generate exactly
as the generate_priors stage calls it (per-image seeded latents, inference_mode); `ref` is the
reference script's path: a plain StableDiffusionPipeline call with DDIM, `pipe([prompt] * batch)`,
no latents passed (diffusers examples/dreambooth/train_dreambooth.py generates class images so).
PRECISION (default --precision) is fp32 | bf16 | fp16 | auto, resolved as the stages resolve
`priors.precision` (`ref` casts the whole pipeline, as the reference script's `torch_dtype`;
the others the UNet and text encoder, as the stages); each gets its own freshly loaded copy.
All configs run in one process on the same model files, so their ratios are apples to apples.
Image PNG writing and VAE re-encoding (the stage's latents) are not included in either path.

    python bench/priors.py            # dpm:20:8:auto ddim:50:4:auto ddim:50:4:fp32 ref:50:4:fp32
    python bench/priors.py --configs dpm:20:1 dpm:20:4 dpm:20:8 --images 16 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a photo of a cat"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, help="diffusers folder (default: models/base/tiny, else built)")
    p.add_argument("--configs", nargs="+",
                   default=["dpm:20:8:auto", "ddim:50:4:auto", "ddim:50:4:fp32", "ref:50:4:fp32"],
                   help="SAMPLER:STEPS:BATCH[:PRECISION], SAMPLER in dpm | ddim | ref")
    p.add_argument("--images", type=int, default=8, help="images per timed repeat (rounded up to whole batches)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per config (after one warm-up batch)")
    p.add_argument("--resolution", type=int, help="px (default: the VAE's sample_size)")
    p.add_argument("--guidance-scale", type=float, default=7.5)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="fp32",
                   help="for configs without their own")
    p.add_argument("--threads", type=int)
    return p.parse_args(argv)


def set_sampler(pipe, kind: str, original) -> None:
    from diffusers import DDIMScheduler

    from dreamsolo.sampling import use_fast_sampler

    pipe.scheduler = original
    if kind == "dpm":
        use_fast_sampler(pipe)
    else:
        pipe.scheduler = DDIMScheduler.from_config(original.config)


def run_config(pipe, kind: str, steps: int, batch: int, n: int, res: int, cfg_scale: float) -> float:
    """Seconds for n images (whole batches) of one config."""
    import torch

    from dreamsolo.sampling import generate

    t = time.perf_counter()
    with torch.inference_mode():
        if kind == "ref":
            for _ in range(0, n, batch):
                pipe([PROMPT] * batch, num_inference_steps=steps, guidance_scale=cfg_scale,
                     height=res, width=res)
        else:
            generate(pipe, [PROMPT] * n, list(range(n)), steps=steps, guidance_scale=cfg_scale,
                     resolution=res, batch_size=batch, desc=f"{kind}:{steps}:{batch}")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def tiny_model(a: argparse.Namespace) -> tuple[Path, Path | None]:
    """(model folder, temp dir to remove or None): --model-dir, models/base/tiny, else a tiny one built."""
    model = a.model_dir or REPO / "models/base/tiny"
    if (model / "model_index.json").is_file():
        return model, None
    from dreamsolo.models.tiny import build_tiny

    work = Path(tempfile.mkdtemp(prefix="dreamsolo-priors-"))
    build_tiny(work / "tiny", 0)
    return work / "tiny", work


def load(model: Path, kind: str, precision: str) -> tuple:
    """(pipeline, its original scheduler), freshly loaded and cast for one (precision, ref?) key."""
    from dreamsolo.models.loading import device, load_pipeline
    from dreamsolo.sampling import sampling_dtype, to_sampling_dtype

    loaded = load_pipeline(model).to(device())
    dtype = sampling_dtype(precision, loaded.device, "bench")
    if kind == "ref":  # the reference casts the whole pipeline (torch_dtype), VAE included
        loaded.to(dtype=dtype)
    else:  # as the stages: UNet and text encoder; the VAE decodes in fp32
        to_sampling_dtype(loaded, dtype)
    return loaded, loaded.scheduler


def measure(a: argparse.Namespace, model: Path, spec: str, pipes: dict) -> tuple[dict, int]:
    """One config: a warm-up batch, then --repeats timed runs of --images; (result row, resolution)."""
    from dreamsolo.sampling import DTYPES, dtype_name

    kind, steps, batch, *rest = spec.split(":")
    precision = rest[0] if rest else a.precision
    if kind not in ("dpm", "ddim", "ref") or precision not in ("auto", *DTYPES):
        sys.exit(f"priors: {spec}: want SAMPLER:STEPS:BATCH[:PRECISION] (dpm|ddim|ref, auto|fp32|bf16|fp16)")
    key = (precision, kind == "ref")
    if key not in pipes:
        pipes[key] = load(model, kind, precision)
    pipe, original = pipes[key]
    res = a.resolution or pipe.vae.config.sample_size
    steps, batch = int(steps), int(batch)
    set_sampler(pipe, kind, original)
    n = -(-a.images // batch) * batch
    run_config(pipe, kind, steps, batch, batch, res, a.guidance_scale)  # warm-up batch
    secs = [run_config(pipe, kind, steps, batch, n, res, a.guidance_scale) / n for _ in range(a.repeats)]
    med = statistics.median(secs)
    print(f"priors: {spec} ({dtype_name(pipe.unet.dtype)}): {med:.4f} s/image", file=sys.stderr)
    return {"config": spec, "sampler": kind, "steps": steps, "batch": batch, "images": n,
            "dtype": dtype_name(pipe.unet.dtype),
            "s_per_image": {"median": round(med, 4), "min": round(min(secs), 4), "max": round(max(secs), 4)},
            "images_per_s": round(1 / med, 3)}, res


def main(argv=None) -> None:
    a = parse(argv)
    load_start = os.getloadavg()
    if a.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the stage's per-image bar; not what is measured
    import torch
    import diffusers

    from dreamsolo.models.loading import device

    if a.threads:
        torch.set_num_threads(a.threads)
    model, work = tiny_model(a)
    pipes: dict = {}  # (precision, ref?) -> pipeline: casting one copy back and forth would round its weights
    try:
        results = []
        for spec in a.configs:
            row, res = measure(a, model, spec, pipes)
            results.append(row)
    finally:
        if work:
            shutil.rmtree(work, ignore_errors=True)
    by = {r["config"]: r["s_per_image"]["median"] for r in results}
    ratios = {f"{c}/{r}": round(by[c] / by[r], 3) for r in by if r.startswith("ref:") for c in by if c != r}
    print(json.dumps({
        "bench": "priors", "model": str(model), "resolution": res,
        "device": str(device()), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "threads": torch.get_num_threads(), "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "results": results, "ratio_s_per_image_vs_ref": ratios,
    }), flush=True)


if __name__ == "__main__":
    main()
