"""Random-weight builds of known architectures, offline and seeded: `tiny` (the test model), `tiny-sdxl` (its
SDXL counterpart) and the real SD 1.5 / SD 2.1-base / SDXL base architectures (configs/*.json: the published
configs' fields), so the real-size path can be rehearsed with no download (bench/rehearsal.py). A preset asks
for one with `source: build` (tiny) or `source: build:<arch>`. A config naming `"pipeline":
"StableDiffusionXLPipeline"` also has `text_encoder_2` (with projection) and `tokenizer_2`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

BUILD = "build"
ARCH_FILES = {"sd15": "sd15.json", "sd21-base": "sd21-base.json",  # named here: tools/code_deps.py sees them
              "sdxl": "sdxl.json", "tiny-sdxl": "tiny-sdxl.json"}
ARCHS = ("tiny", *ARCH_FILES)


def arch_of(source: str) -> str | None:
    """`build` -> tiny, `build:<arch>` -> arch, anything else -> None (not a build)."""
    if source == BUILD:
        return "tiny"
    if source.startswith(BUILD + ":"):
        return source.split(":", 1)[1]
    return None


def check_arch(arch: str, where: str) -> None:
    if arch not in ARCHS:
        raise ValueError(f"{where}: unknown architecture {arch!r} to build; one of {', '.join(ARCHS)}")


def arch_config(arch: str) -> dict:
    """The architecture's configs: unet, vae, text_encoder, scheduler (with _class_name), tokenizer."""
    check_arch(arch, "build")
    if arch == "tiny":
        from dreamsolo.models import tiny

        return {"unet": tiny.UNET, "vae": tiny.VAE, "text_encoder": tiny.TEXT,
                "scheduler": {"_class_name": "DDIMScheduler", **tiny.SCHEDULER},
                "tokenizer": {"model_max_length": 77}, "resolution": 64}
    text = resources.files("dreamsolo.models").joinpath("configs", ARCH_FILES[arch]).read_text()
    return json.loads(text)


def build_modules(arch: str, seed: int, device: str | torch.device = "cpu"):
    """(unet, vae, text_encoder) with seeded random weights; `device` may be `meta` (sizes only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = arch_config(arch)
    torch.manual_seed(seed)
    with torch.device(device):  # init on a GPU when there is one: seconds instead of a minute at SD size
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"]))
    return unet, vae, text_encoder


def build_text_encoder_2(arch: str, device: str | torch.device = "cpu"):
    """SDXL's second text encoder (CLIPTextModelWithProjection: its pooled, projected output is the UNet's
    `text_embeds`), seeded from the generator state build_modules left: the same build gives the same weights."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    with torch.device(device):
        return CLIPTextModelWithProjection(CLIPTextConfig(**arch_config(arch)["text_encoder_2"]))


def build_scheduler(arch: str):
    """The published scheduler config through from_config, as from_pretrained reads it: keys the class
    does not take (PNDM and `clip_sample`) are ignored, not an error."""
    import diffusers

    sched = dict(arch_config(arch)["scheduler"])
    return getattr(diffusers, sched.pop("_class_name")).from_config(sched)


def build(dest: Path, arch: str, seed: int, device: str | torch.device = "cpu") -> None:
    """Build the architecture deterministically and save it like a hub model (safetensors, fp32)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from dreamsolo.models.tiny import write_clip_bpe

    cfg = arch_config(arch)
    if cfg.get("pipeline") == "StableDiffusionXLPipeline":
        return _build_xl(dest, arch, seed, device)
    if not (dest / "tokenizer" / "vocab.json").is_file():  # a caller without open_clip may have put it there
        write_clip_bpe(dest / "tokenizer")
    unet, vae, text_encoder = build_modules(arch, seed, device)
    tokenizer = CLIPTokenizer.from_pretrained(dest / "tokenizer", **cfg["tokenizer"])
    scheduler = build_scheduler(arch)
    pipe = StableDiffusionPipeline(
        unet=unet.to("cpu"), vae=vae.to("cpu"), text_encoder=text_encoder.to("cpu"), tokenizer=tokenizer,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(dest, safe_serialization=True)


def _build_xl(dest: Path, arch: str, seed: int, device: str | torch.device = "cpu") -> None:
    """As `build`, for SDXL: both tokenizers from OpenAI CLIP's BPE (SDXL's second pads with `!`)."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from dreamsolo.models.tiny import write_clip_bpe

    cfg = arch_config(arch)
    if not (dest / "tokenizer" / "vocab.json").is_file():
        write_clip_bpe(dest / "tokenizer")
    unet, vae, text_encoder = build_modules(arch, seed, device)
    text_encoder_2 = build_text_encoder_2(arch, device)
    tokenizer = CLIPTokenizer.from_pretrained(dest / "tokenizer", **cfg["tokenizer"])
    tokenizer_2 = CLIPTokenizer.from_pretrained(dest / "tokenizer", **cfg["tokenizer_2"])
    pipe = StableDiffusionXLPipeline(
        unet=unet.to("cpu"), vae=vae.to("cpu"), text_encoder=text_encoder.to("cpu"),
        text_encoder_2=text_encoder_2.to("cpu"), tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        scheduler=build_scheduler(arch), force_zeros_for_empty_prompt=True, add_watermarker=False,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
