"""Helpers shared by the embedding evaluators: batching, seeded random init, cosine scores."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
from PIL import Image

T = TypeVar("T")

INIT_SEED = 0
"""Seed of randomly initialised evaluators, so offline numbers repeat run to run (DVC caches them)."""


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    if size <= 0:
        raise ValueError(f"batch size must be > 0, got {size}")
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextlib.contextmanager
def seeded(seed: int = INIT_SEED) -> Iterator[None]:
    """Fixed-seed random init that leaves the caller's global RNG state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


@torch.inference_mode()
def embed_images(encode: Callable[[torch.Tensor], torch.Tensor],
                 preprocess: Callable[[Image.Image], torch.Tensor],
                 images: Sequence[Image.Image], batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """(N, D) L2-normalised float32 embeddings on the CPU; one encoder call per batch."""
    out = []
    for chunk in batched(images, batch_size):
        x = torch.stack([preprocess(rgb(im)) for im in chunk]).to(device)
        out.append(torch.nn.functional.normalize(encode(x).float(), dim=-1).cpu())
    if not out:
        raise ValueError("no images to embed")
    return torch.cat(out)


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of two (N, D) L2-normalised matrices (b may be (1, D) and broadcast)."""
    return (a * b).sum(dim=-1)


def mean_cosine(samples: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """(N,) mean cosine of each L2-normalised sample embedding to every reference embedding."""
    return (samples @ refs.T).mean(dim=1)
