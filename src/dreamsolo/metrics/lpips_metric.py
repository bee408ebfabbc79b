"""LPIPS evaluator with cached feature maps, so a reference image goes through the network once.

`lpips.LPIPS.forward(a, b)` runs the trunk on both inputs on every call; scoring N samples against
one reference that way embeds the reference N times. Here the forward pass is split in two halves
that reproduce it exactly: `features` (scaling layer, trunk, channel-unit normalisation) and
`distance` (squared difference, learned 1x1 linear layers, spatial mean, sum over layers).
The pretrained trunk is a converted, sha256-pinned file shipped with the package (lpips_weights.py),
so pretrained AlexNet LPIPS needs no download.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamsolo.metrics.common import batched, rgb, seeded
from dreamsolo.metrics.lpips_weights import load_trunk, trunk_path

SHIPPED = ("alex",)
"""Nets whose converted trunk is committed (weights/lpips_<net>.safetensors); vgg's is made on demand."""

Features = list[torch.Tensor]
"""One normalised feature map (N, C_l, H_l, W_l) per trunk layer."""


def to_lpips_tensor(images: Sequence[Image.Image], size: tuple[int, int] | None = None) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1], the range LPIPS expects; images not of `size` are resized (bicubic)."""
    arrays = []
    for im in images:
        im = rgb(im)
        if size is not None and im.size != size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.float32))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return x / 127.5 - 1.0


@dataclass
class LpipsEvaluator:
    model: Any  # lpips.LPIPS (lpips=True, spatial=False), in eval mode
    device: torch.device
    net: str
    pretrained: bool

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> Features:
        """Normalised trunk features of a [-1, 1] batch (first half of LPIPS.forward)."""
        import lpips

        outs = self.model.net.forward(self.model.scaling_layer(x.to(self.device)))
        return [lpips.normalize_tensor(o) for o in outs]

    @torch.inference_mode()
    def distance(self, a: Features, b: Features) -> torch.Tensor:
        """(N,) LPIPS between feature sets (second half of LPIPS.forward); a (1, ...) side broadcasts."""
        total = 0
        for lin, fa, fb in zip(self.model.lins, a, b):
            total = total + lin((fa - fb) ** 2).mean(dim=(2, 3))
        return total.flatten().float().cpu()

    def distances_to(self, images: Sequence[Image.Image], refs: Sequence[Features],
                     size: tuple[int, int], batch_size: int = 16) -> list[torch.Tensor]:
        """One (N,) LPIPS vector per reference, from reference features computed beforehand;
        each image goes through the trunk once whatever the number of references."""
        per_ref: list[list[torch.Tensor]] = [[] for _ in refs]
        for chunk in batched(images, batch_size):
            feats = self.features(to_lpips_tensor(chunk, size))
            for out, ref in zip(per_ref, refs):
                out.append(self.distance(feats, ref))
        return [torch.cat(out) for out in per_ref]

    def paired(self, a: Sequence[Image.Image], b: Sequence[Image.Image], size: tuple[int, int],
               batch_size: int = 16) -> torch.Tensor:
        """(N,) LPIPS between a[i] and b[i]."""
        if len(a) != len(b):
            raise ValueError(f"paired LPIPS: {len(a)} images against {len(b)}")
        out = [self.distance(self.features(to_lpips_tensor(ca, size)), self.features(to_lpips_tensor(cb, size)))
               for ca, cb in zip(batched(a, batch_size), batched(b, batch_size))]
        return torch.cat(out) if out else torch.zeros(0)

    def mean_pairwise(self, images: Sequence[Image.Image], size: tuple[int, int],
                      batch_size: int = 16) -> float:
        """Mean LPIPS over all unordered pairs of `images` (each embedded once); NaN for < 2 images."""
        if len(images) < 2:
            return float("nan")
        feats = [self.features(to_lpips_tensor(chunk, size)) for chunk in batched(images, batch_size)]
        layers = [torch.cat(per_layer) for per_layer in zip(*feats)]
        i, j = torch.triu_indices(len(images), len(images), offset=1)
        dists = [self.distance([f[ii] for f in layers], [f[jj] for f in layers])
                 for ii, jj in zip(i.split(batch_size), j.split(batch_size))]
        return torch.cat(dists).mean().item()


def load_lpips(net: str, pretrained: bool, device: str | torch.device = "cpu",
               trunk: str | Path | None = None) -> LpipsEvaluator:
    """LPIPS with its shipped (human-calibrated) linear layers. `pretrained` picks the ImageNet trunk
    over a randomly initialised one (seeded, for offline runs): the converted, sha256-pinned file of
    `net` (`trunk`, else the packaged one: always for alex, so alex never downloads), or, for a net
    with no converted file, torchvision's weights (from the torch hub cache, else a download)."""
    import lpips

    state = None
    if pretrained and (trunk is not None or net in SHIPPED or trunk_path(net).is_file()):
        state = load_trunk(net, trunk)
    with seeded(), warnings.catch_warnings():
        # lpips still passes torchvision's deprecated `pretrained=` argument
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        # pnet_rand builds the trunk without torchvision's download; the converted weights replace it
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained or state is not None,
                            verbose=False)
    if state is not None:
        model.net.load_state_dict(state, strict=True)
    model = model.to(device).eval()
    return LpipsEvaluator(model=model, device=torch.device(device), net=net, pretrained=pretrained)
