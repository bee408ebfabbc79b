"""Priors and samples through one batched sampler.

Image i of a prompt always uses seed `seed + i` through its own generator, so an image does not
depend on the batch size or on what else is in the batch, up to float rounding (on tiny, CPU: at most
1 grey level in a few pixels between batches of 1, 2 and 4, fp32 and bf16 alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from dreamsolo.config import ParamsError, Sampling


def use_fast_sampler(pipe) -> None:
    """DPM-Solver++ (2nd order): ~20 steps give what DDIM needs ~50 for (Lu et al., 2022)."""
    from diffusers import DPMSolverMultistepScheduler

    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16_cpu() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls/convs run natively (elsewhere oneDNN emulates them, no faster)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu, private but long-standing
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def sampling_dtype(precision: str, dev: torch.device, where: str) -> torch.dtype:
    """The dtype the sampling models run in. `auto`: fp16 on CUDA (as the reference script's class-image
    generation; every CUDA GPU has it), fp32 on a CPU. Not bf16 where the CPU happens to have native bf16:
    then the committed study's bytes followed the CPU model, not params.yaml (issue 26); `bf16` asks for it."""
    if precision == "auto":
        return torch.float16 if dev.type == "cuda" else torch.float32
    if precision == "fp16" and dev.type != "cuda":
        raise ParamsError(f"{where}.precision: fp16 is for CUDA GPUs (CPU fp16 kernels are slow or missing); "
                          f"use bf16 or fp32 on {dev}")
    return DTYPES[precision]


def to_sampling_dtype(pipe, dtype: torch.dtype) -> None:
    """Cast the UNet and text encoder for sampling (`dtype` from `sampling_dtype`, resolved before any work).

    The VAE stays fp32 (its decode is a small share of the time; upcasting it is what diffusers does
    where reduced precision hurts, as SDXL's VAE: its `force_upcast`), so latents encoded later stay exact.
    SDXL's second text encoder goes with the first."""
    from dreamsolo.models.family import text_encoders

    pipe.unet.to(dtype=dtype)
    for _, encoder in text_encoders(pipe):
        encoder.to(dtype=dtype)


def load_for_sampling(folder: Path, dtype: torch.dtype):
    """The pipeline at `folder` on this device, with the fast sampler, its UNet and text encoder in `dtype`."""
    from dreamsolo.models.loading import device, load_pipeline

    pipe = load_pipeline(folder).to(device())
    use_fast_sampler(pipe)
    to_sampling_dtype(pipe, dtype)
    return pipe


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


def generate(
    pipe, prompts: Sequence[str], seeds: Sequence[int], *, steps: int, guidance_scale: float,
    resolution: int, batch_size: int, desc: str = "sampling", quiet: bool = False, guidance_rescale: float = 0.0,
) -> list[Image.Image]:
    """One image per (prompt, seed), in order, in batches of `batch_size`. `guidance_rescale` (Lin et al. 2024;
    0 = off, the pipeline's default) tempers guidance's over-saturation under a zero-terminal-SNR schedule."""
    if len(prompts) != len(seeds):
        raise ValueError("one seed per prompt")
    dev = pipe.device
    images: list[Image.Image] = []
    with tqdm(total=len(prompts), desc=desc, unit="img", disable=quiet) as bar:
        for start in range(0, len(prompts), batch_size):
            chunk = slice(start, start + batch_size)
            gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds[chunk]]
            latents = torch.stack([_initial_latent(pipe, resolution, g) for g in gens]).to(dev)
            out = pipe(
                list(prompts[chunk]), num_inference_steps=steps, guidance_scale=guidance_scale,
                guidance_rescale=guidance_rescale, height=resolution, width=resolution,
                latents=latents.to(pipe.unet.dtype), output_type="latent",
            )
            decoded = decode(pipe, out.images)
            images.extend(decoded)
            bar.update(len(decoded))
    return images


def sample_images(pipe, prompts: Sequence[str], seeds: Sequence[int], cfg: Sampling, resolution: int,
                  desc: str) -> list[Image.Image]:
    """`generate` with a params section's sampler settings (priors, sample and ad-hoc sampling alike)."""
    with torch.inference_mode():
        return generate(pipe, prompts, seeds, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                        guidance_rescale=cfg.guidance_rescale, resolution=resolution, batch_size=cfg.batch_size,
                        desc=desc)


@torch.no_grad()  # as the pipeline call itself, for callers outside inference_mode
def decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    """Latents -> PIL images through the VAE in its own dtype (fp32 whatever the UNet ran in)."""
    vae = pipe.vae
    x = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(x, output_type="pil")


def _initial_latent(pipe, resolution: int, gen: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU from the image's own seed: the same start on CPU and GPU, for any batch size.
    scale = pipe.vae_scale_factor
    shape = (pipe.unet.config.in_channels, resolution // scale, resolution // scale)
    return torch.randn(shape, generator=gen) * pipe.scheduler.init_noise_sigma


@torch.no_grad()
def encode_latents(vae, images: Sequence[Image.Image], batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Mean and std of the VAE latent distribution of each image (unscaled), for cached training."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size]).to(vae.device, vae.dtype)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float().cpu().contiguous())
        stds.append(dist.std.float().cpu().contiguous())
    return {"mean": torch.cat(means), "std": torch.cat(stds)}


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB -> float tensor in [-1, 1], NCHW."""
    import numpy as np

    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def save_images(images: Sequence[Image.Image], folder: Path, start: int = 0) -> list[str]:
    names = []
    for i, im in enumerate(images, start):
        name = f"{i:04d}.png"
        im.save(folder / name)
        names.append(name)
    return names
