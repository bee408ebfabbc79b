"""CLIP evaluator (open_clip): image and text embeddings, CLIP-T and CLIP-I.

One loader for every source: `open_clip.create_model_and_transforms(name, pretrained=...)` takes a
known tag (downloaded), a local weights file (.safetensors / .pt, loaded strictly), or None (random
init). The toy `tiny-clip` architecture ships with the package for offline runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dreamsolo.metrics.common import batched, cosine_rows, embed_images, mean_cosine, seeded

TOY_CLIPS = {"tiny-clip": "tiny-clip.json", "toy-clip": "toy-clip.json"}
"""open_clip configs shipped with the package: `tiny-clip` (random, for the tiny preset's tests) and
`toy-clip` (the toy world's CLIP, trained by tools/pretrain_toy.py clip). File names written out in
full, so tools/code_deps.py sees the package data the evaluate stage reads."""


def register_toy_clips() -> None:
    """Make the shipped configs known open_clip model names (idempotent: the registry is module-global)."""
    import open_clip

    for name, file in TOY_CLIPS.items():
        if name not in open_clip.list_models():
            open_clip.add_model_config(Path(__file__).resolve().parent.parent / file)


@dataclass
class ClipEvaluator:
    model: Any  # open_clip.CLIP, in eval mode
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: torch.device
    name: str
    pretrained: bool

    def image_embeddings(self, images: Sequence[Image.Image], batch_size: int = 16) -> torch.Tensor:
        """(N, D) L2-normalised image embeddings, on the CPU."""
        return embed_images(self.model.encode_image, self.preprocess, images, batch_size, self.device)

    @torch.inference_mode()
    def text_embeddings(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """(N, D) L2-normalised text embeddings, on the CPU."""
        out = [torch.nn.functional.normalize(
                   self.model.encode_text(self.tokenizer(list(chunk)).to(self.device)).float(), dim=-1).cpu()
               for chunk in batched(list(texts), batch_size)]
        if not out:
            raise ValueError("no texts to embed")
        return torch.cat(out)


def _quick_gelu(name: str, pretrained: str | None) -> bool:
    """OpenAI CLIP weights were trained with QuickGELU; open_clip's plain `ViT-B-32` config uses GELU
    and only warns on the mismatch, which would silently shift CLIP-T / CLIP-I away from the
    literature. Follow the tag's own setting (a local file: name the `-quickgelu` config instead)."""
    import open_clip

    if not pretrained:
        return False
    return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))


def load_clip(name: str, pretrained: str | None, device: str | torch.device = "cpu") -> ClipEvaluator:
    """An open_clip model by name, with weights from a tag, a local file path, or random (None)."""
    import open_clip

    register_toy_clips()
    if pretrained is not None and not pretrained:
        raise ValueError("clip pretrained: empty string (use null for random init)")
    with seeded():
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=device, force_quick_gelu=_quick_gelu(name, pretrained))
    model.eval()
    return ClipEvaluator(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(name),
                         device=torch.device(device), name=name, pretrained=pretrained is not None)


def clip_t(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """(N,) CLIP-T: cosine of each sample's image embedding with its own prompt's text embedding."""
    return cosine_rows(image_emb, text_emb)


def clip_i(image_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
    """(N,) CLIP-I: mean cosine of each sample to the reference instance image embeddings (R, D)."""
    return mean_cosine(image_emb, ref_emb)
