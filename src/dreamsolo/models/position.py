"""The patch position grid of SINE (Zhang et al., CVPR 2023; github.com/zhang-zx/SINE: UNetModelPatch and
SinusoidalPositionalEmbedding), for the `sine` arm: a fixed 2-D sinusoidal grid (per axis half the channels of
the UNet's first convolution, sin and cos at 10000^(-i/(d/2-1)) of positions 1..G) over the whole photo, G =
twice the latent size. A training row adds the grid's crop at its patch box, bilinearly resized to the latent
size, to the first convolution's output (SINE: `h += head_grid` after input block 0); a row that shows the whole
image (a prior, the replay, every sample) adds the whole grid resized. The grid has no weights: a model folder
trained with it says so in `patch_position.json`, and load_pipeline puts it back (so it lives with the models,
not with training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

POSITION_FILE = "patch_position.json"


def sinusoidal_grid(channels: int, size: int) -> torch.Tensor:
    """(channels, size, size): the first half of the channels encode x (the column), the second half y."""
    if channels % 4:
        raise ValueError(f"the patch position grid needs channels divisible by 4, got {channels}")
    half = channels // 4  # sin and cos per axis
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000.0) / max(half - 1, 1)))
    pos = torch.arange(1, size + 1, dtype=torch.float64)[:, None] * freq[None]  # 0 is SINE's padding index
    emb = torch.cat([pos.sin(), pos.cos()], dim=1).T.float()  # (channels / 2, size)
    x = emb[:, None, :].expand(-1, size, -1)
    y = emb[:, :, None].expand(-1, -1, size)
    return torch.cat([x, y], dim=0).contiguous()


class PatchPosition:
    """A forward hook on the UNet's conv_in that adds the position grid. `boxes` (rows, 4: y0, x0, y1, x1 in
    grid cells) is set for one training forward and cleared after it; None means the whole photo."""

    def __init__(self, channels: int, size: int):
        self.size = size
        self.grid = sinusoidal_grid(channels, size)
        self.boxes: torch.Tensor | None = None
        self._whole: dict[tuple, torch.Tensor] = {}  # the whole grid resized, per (size, device, dtype): every
        # sampling step of a whole image would otherwise resize the same grid again

    def whole(self) -> torch.Tensor:
        return torch.tensor([0, 0, self.size, self.size])

    def embedding(self, like: torch.Tensor) -> torch.Tensor:
        hw = tuple(like.shape[-2:])
        if self.boxes is None:
            key = (hw, like.device, like.dtype)
            if key not in self._whole:
                whole = F.interpolate(self.grid.to(like.device)[None], hw, mode="bilinear", align_corners=True)
                self._whole[key] = whole.to(like.dtype)
            return self._whole[key].expand(like.shape[0], -1, -1, -1)
        if len(self.boxes) != like.shape[0]:
            raise RuntimeError(f"patch boxes for {len(self.boxes)} rows, the batch has {like.shape[0]}")
        grid = self.grid.to(like.device)
        out = torch.cat([F.interpolate(grid[None, :, y0:y1, x0:x1], hw, mode="bilinear", align_corners=True)
                         for y0, x0, y1, x1 in self.boxes.tolist()])
        return out.to(like.dtype)

    def __call__(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        return output + self.embedding(output)


def install(unet, size: int) -> PatchPosition:
    pos = PatchPosition(unet.conv_in.out_channels, size)
    unet.conv_in.register_forward_hook(pos)
    return pos


def write_marker(folder: Path, size: int) -> Path:
    path = folder / POSITION_FILE
    path.write_text(json.dumps({"method": "SINE patch position (sinusoidal, added after conv_in)",
                                "grid": size}, indent=2) + "\n")
    return path


def restore(pipe, folder: Path) -> None:
    """Put the position grid back on a model trained with it (load_pipeline calls this)."""
    path = folder / POSITION_FILE
    if path.is_file():
        install(pipe.unet, int(json.loads(path.read_text())["grid"]))
