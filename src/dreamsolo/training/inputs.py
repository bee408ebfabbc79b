"""What a training stage learns from, prepared once: VAE posteriors of the photos and priors, and the
text embeddings. Nothing is read, decoded, tokenised or VAE-encoded per step; each step only draws
z = mean + std * eps from the cached posteriors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from dreamsolo.sampling import encode_latents


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
