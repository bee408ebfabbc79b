"""What a training stage learns from, prepared once: VAE posteriors of the photos and priors, and the
text embeddings. Nothing is read, decoded, tokenised or VAE-encoded per step; each step only draws
z = mean + std * eps from the cached posteriors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from dreamsolo.models import family
from dreamsolo.models.family import Cond
from dreamsolo.models.position import PatchPosition, install
from dreamsolo.sampling import encode_latents
from dreamsolo.training.patches import PatchSpec, crop_patches, draw_boxes


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
    # the arms (stages.train_arm): a second class's priors (joint), a composite term, a mask on the instance term
    replay_prior_latents: Path | None = None
    replay_prior_prompt: str | None = None
    composite_image: Path | None = None
    composite_prompt: str | None = None
    composite_weight: float = 0.0
    mask: Path | None = None  # L image at the photo's size: the instance loss is weighted by it
    keep: tuple[Path, ...] = ()  # files copied into the written folder (what the arm learned from)
    patches: PatchSpec | None = None  # the sine arm: the instance term learns random patches of the photo

    def files(self) -> list[Path]:
        """Every input file, for the resume fingerprint."""
        extra = (self.replay_image, self.replay_prior_latents, self.composite_image, self.mask)
        return [self.image, self.prior_latents, *(f for f in extra if f is not None)]


@dataclass
class Cached:
    image: dict[str, torch.Tensor]
    prior: dict[str, torch.Tensor]
    replay: dict[str, torch.Tensor] | None
    text: Cond  # (n, 77, d): instance, prior[, replay][, composite][, replay prior]; SDXL: models.family.XLCond
    ids: torch.Tensor  # their token ids, for when the text encoder itself is trained (SDXL: (2, n, 77), per tokenizer)
    composite: dict[str, torch.Tensor] | None = None
    replay_prior: dict[str, torch.Tensor] | None = None
    mask: torch.Tensor | None = None  # (1, 1, h, w) weights at latent resolution
    rows: dict[str, int] = field(default_factory=lambda: {"instance": 0, "prior": 1})  # block -> row of `text`
    patches: dict[str, torch.Tensor] | None = None  # the sine arm: mean, std (n, c, h, w) and boxes (n, 4)
    position: PatchPosition | None = None  # its hook on the UNet: make_batch sets each row's box


def cache_inputs(pipe, inp: StageInputs, dev: torch.device) -> Cached:
    """VAE posteriors and text embeddings, computed once with the frozen encoders."""
    image = encode_latents(pipe.vae, [Image.open(inp.image).convert("RGB")])
    prior = load_file(inp.prior_latents)
    prompts = [inp.prompt, inp.prior_prompt]
    photos: list[Path | None] = [inp.image, None]  # per row: the photo it learns, None for generated images
    rows = {"instance": 0, "prior": 1}
    blocks: dict[str, dict[str, torch.Tensor]] = {}
    extra = (("replay", inp.replay_image, inp.replay_prompt), ("composite", inp.composite_image, inp.composite_prompt))
    for name, path, prompt in extra:
        if path is not None:
            blocks[name] = encode_latents(pipe.vae, [Image.open(path).convert("RGB")])
            rows[name] = len(prompts)
            prompts.append(prompt)
            photos.append(path)
    if inp.replay_prior_latents is not None:
        blocks["replay_prior"] = load_file(inp.replay_prior_latents)
        rows["replay_prior"] = len(prompts)
        prompts.append(inp.replay_prior_prompt)
        photos.append(None)
    if family.is_xl(pipe):
        ids, text = _xl_text(pipe, prompts, photos, image["mean"].shape[-1] * pipe.vae_scale_factor, dev)
    else:
        ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(dev)
        with torch.no_grad():
            text = pipe.text_encoder(ids)[0].float()
    move = lambda d: {k: v.to(dev) for k, v in d.items()} if d is not None else None  # noqa: E731
    mask = _latent_mask(inp.mask, image["mean"].shape[-2:], dev) if inp.mask is not None else None
    cached = Cached(move(image), move(prior), move(blocks.get("replay")), text, ids, move(blocks.get("composite")),
                    move(blocks.get("replay_prior")), mask, rows)
    if inp.patches is not None:
        cached.patches, cached.position = _patches(pipe, inp, image["mean"].shape[-1], dev)
    return cached


def _xl_text(pipe, prompts: list[str], photos: list[Path | None], resolution: int,
             dev: torch.device) -> tuple[torch.Tensor, family.XLCond]:
    """SDXL: token ids of both tokenizers and the conditioning of each row, its micro-conditioning included:
    a photo's from its prepare record, a generated prior's (res, res) with no crop (how the pipeline drew it;
    diffusers' script gives class images the instance photo's sizes, a shortcut of its data loader)."""
    ids = family.tokenize_xl(pipe, prompts, dev)
    sizes = [family.photo_time_ids(p, resolution) if p is not None
             else family.time_ids((resolution, resolution), (0, 0), (resolution, resolution)) for p in photos]
    time_ids = torch.tensor(sizes, dtype=torch.float32, device=dev)
    with torch.no_grad():
        return ids, family.encode_xl(pipe.text_encoder, pipe.text_encoder_2, ids, time_ids)


def _patches(pipe, inp: StageInputs, latent: int, dev: torch.device) -> tuple[dict[str, torch.Tensor], PatchPosition]:
    """The sine arm's patches, drawn once (seeded), VAE-encoded like the photo, and the position hook on
    the UNet; the grid is twice the latent size, as SINE's 128 cells for 64 x 64 latents."""
    size = inp.patches.grid
    if size != 2 * latent:
        raise ValueError(f"patch grid {size} for {latent}-cell latents: expected {2 * latent}")
    gen = torch.Generator().manual_seed(0)
    boxes = draw_boxes(inp.patches, size, gen)
    photo = Image.open(inp.image).convert("RGB")
    enc = encode_latents(pipe.vae, crop_patches(photo, boxes, size))
    return {"mean": enc["mean"].to(dev), "std": enc["std"].to(dev), "boxes": boxes}, install(pipe.unet, size)


def _latent_mask(path: Path, size: torch.Size, dev: torch.device) -> torch.Tensor:
    """The mask as loss weights at latent resolution: the share of each latent cell's pixels that are instance."""
    import numpy as np
    import torch.nn.functional as F

    pixels = torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)
    return F.interpolate(pixels[None, None], size=tuple(size), mode="area").to(dev)


def _draw_prior(pool: dict[str, torch.Tensor], batch_size: int, gen: torch.Generator):
    idx = torch.randint(0, pool["mean"].shape[0], (batch_size,), generator=gen, device=gen.device)
    return pool["mean"][idx.to(pool["mean"].device)], pool["std"][idx.to(pool["std"].device)]


def make_batch(c: Cached, batch_size: int, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, Cond]:
    """[instance | prior | replay | composite | replay prior] x B latents drawn from their posteriors (the
    blocks a stage has), and their text."""
    prior_mean, prior_std = _draw_prior(c.prior, batch_size, gen)
    means = [c.image["mean"].expand(batch_size, -1, -1, -1), prior_mean]
    stds = [c.image["std"].expand(batch_size, -1, -1, -1), prior_std]
    boxes = None
    if c.patches is not None:  # the sine arm: the instance rows are patches, each with its box
        idx = torch.randint(0, len(c.patches["boxes"]), (batch_size,), generator=gen, device=gen.device).cpu()
        on = idx.to(c.patches["mean"].device)
        means[0], stds[0] = c.patches["mean"][on], c.patches["std"][on]
        boxes = c.patches["boxes"][idx]
    texts = [family.rows(c.text, 0, batch_size), family.rows(c.text, 1, batch_size)]
    for name, block in (("replay", c.replay), ("composite", c.composite)):
        if block is not None:
            means.append(block["mean"].expand(batch_size, -1, -1, -1))
            stds.append(block["std"].expand(batch_size, -1, -1, -1))
            texts.append(family.rows(c.text, c.rows[name], batch_size))
    if c.replay_prior is not None:
        m, s = _draw_prior(c.replay_prior, batch_size, gen)
        means.append(m)
        stds.append(s)
        texts.append(family.rows(c.text, c.rows["replay_prior"], batch_size))
    mean, std = torch.cat(means), torch.cat(stds)
    if c.position is not None:  # every other row shows the whole photo (SINE's reg rows: the full box)
        rest = c.position.whole().expand(len(mean) - batch_size, -1)
        c.position.boxes = torch.cat([boxes, rest]) if boxes is not None else None
    eps = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
    return (mean + std * eps) * scale, family.cat(texts)
