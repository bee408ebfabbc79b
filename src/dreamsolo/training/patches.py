"""SINE's patch-based fine-tuning data (Zhang et al., CVPR 2023; github.com/zhang-zx/SINE:
SinImageHighResDataset) for the `sine` arm: random patches of the photo, each resized to the training
resolution, with its box on the position grid (models.position) that tells the UNet where the patch lies."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image


@dataclass(frozen=True)
class PatchSpec:
    """arms.sine: SINE's per-axis patch side, a share of the photo drawn uniformly in [min_crop, max_crop]."""

    min_crop: float
    max_crop: float
    count: int  # patches drawn once and VAE-encoded with the other inputs; each step draws from them
    grid: int  # cells of the position grid per side: twice the latent size


def draw_boxes(spec: PatchSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """(count, 4) boxes in grid cells, as SinImageHighResDataset._random_crop (height and width apart)."""
    boxes = []
    for _ in range(spec.count):
        u = torch.rand(2, generator=gen).tolist()
        sy, sx = (max(1, int(size * (v * (spec.max_crop - spec.min_crop) + spec.min_crop))) for v in u)
        y0 = int(torch.randint(0, size - sy + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, size - sx + 1, (1,), generator=gen))
        boxes.append([y0, x0, y0 + sy, x0 + sx])
    return torch.tensor(boxes)


def crop_patches(photo: Image.Image, boxes: torch.Tensor, size: int) -> list[Image.Image]:
    """Each box's pixels of the photo, resized (bicubic, as SINE) to the photo's own size."""
    cell = photo.width / size
    return [photo.crop((x0 * cell, y0 * cell, x1 * cell, y1 * cell)).resize(photo.size, Image.Resampling.BICUBIC)
            for y0, x0, y1, x1 in boxes.tolist()]
