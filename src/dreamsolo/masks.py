"""The instance mask: where the instance is in its photo, from `instance_mask.png` beside it or from the
photo's alpha channel, prepared with the photo's own crop and size. The `masked` arm weights the instance
loss by it and the `composite` arm pastes the instance into the scene through it."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps

from dreamsolo.images import ImageError, prepare_image

MASK_STEM = "instance_mask"
THRESHOLD = 128  # grey level at and above which a pixel is the instance (the prepared mask is 0 / 255)


def find_mask_file(pair_dir: Path) -> Path | None:
    """`instance_mask.<ext>` in the pair folder (one at most), else None."""
    found = sorted(p for p in Path(pair_dir).iterdir() if p.is_file() and p.stem.lower() == MASK_STEM)
    if len(found) > 1:
        raise ImageError(f"{pair_dir}/: {len(found)} instance masks ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _open(path: Path) -> Image.Image:
    """Image.open without Pillow's size warning: images.load_image has applied MAX_PIXELS already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _upright(path: Path, name: str) -> Image.Image:
    try:
        with _open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except (OSError, ValueError) as e:
        raise ImageError(f"{name}: cannot be read as a mask ({e})") from None


def _may_have_alpha(path: Path) -> bool:
    """From the header alone (nothing decoded): could the photo carry an alpha channel?"""
    try:
        with _open(path) as im:
            return im.mode in ALPHA_MODES or "transparency" in im.info
    except (OSError, ValueError):
        return True  # let the full decode say what is wrong with it


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def raw_mask(photo: Path, mask_file: Path | None, name_of) -> tuple[Image.Image, str] | None:
    """(mask in L mode at the photo's upright size, where it came from), or None when there is neither a
    mask file nor an alpha channel. A mask file wins over the alpha channel: it is the explicit one."""
    if mask_file is None and not _may_have_alpha(photo):
        return None  # the common case (a JPEG): no second decode of the photo at full size
    upright = _upright(photo, name_of(photo))
    if mask_file is not None:
        mask = _upright(mask_file, name_of(mask_file)).convert("L")
        if mask.size != upright.size:
            raise ImageError(f"{name_of(mask_file)}: {mask.size[0]}x{mask.size[1]} px, but the instance photo "
                             f"{name_of(photo)} is {upright.size[0]}x{upright.size[1]}: a mask must cover the photo pixel for pixel")
        return mask, name_of(mask_file)
    if upright.mode in ALPHA_MODES or "transparency" in upright.info:
        return upright.convert("RGBA").getchannel("A"), f"alpha channel of {name_of(photo)}"
    return None


def prepare_mask(mask: Image.Image, decoded_size: tuple[int, int], resolution: int,
                 crop: Literal["center", "none"], min_size: int) -> tuple[Image.Image, dict[str, Any]]:
    """The mask through the photo's own steps (reduce to its decoded size, square, resize), as 0 / 255.
    With crop `none` the padding is background: white padding around the photo is not the instance."""
    small = mask.resize(tuple(decoded_size), Image.Resampling.LANCZOS) if mask.size != tuple(decoded_size) else mask
    if crop == "none":  # pad with 0 (background), not with prepare_image's white
        side = max(small.size)
        square = Image.new("L", (side, side), 0)
        square.paste(small, ((side - small.width) // 2, (side - small.height) // 2))
        small = square
    grey, _ = prepare_image(small.convert("RGB"), resolution, "center", min(min_size, min(small.size)))
    binary = (np.asarray(grey.getchannel(0)) >= THRESHOLD).astype(np.uint8) * 255
    out = Image.fromarray(binary, mode="L")
    return out, {"coverage": round(float(binary.mean() / 255), 4)}


def composite(instance: Image.Image, scene: Image.Image, mask: Image.Image) -> Image.Image:
    """The instance where the mask is set, the scene elsewhere (same size, pixel for pixel)."""
    if not (instance.size == scene.size == mask.size):
        raise ValueError(f"composite: sizes differ (instance {instance.size}, scene {scene.size}, mask {mask.size})")
    return Image.composite(instance.convert("RGB"), scene.convert("RGB"), mask.convert("L"))
