"""Decode, validate and crop the raw photos of a pair (the `prepare` stage's library)."""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps


# Our own decompression-bomb policy, checked from the header before any pixel is decoded.
# 120 Mpx admits 100-Mpx camera files and 12000x9000 scans; it stays below 2x Pillow's
# MAX_IMAGE_PIXELS, so Pillow's own hard limit never refuses a file this policy accepts.
# Pillow's global setting is left alone (no import side effects).
MAX_PIXELS = 120_000_000
ROLES = ("scene", "instance")
WHITE = (255, 255, 255)
# Exceptions Pillow raises on corrupt or truncated data; anything else is a bug, not bad input.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


class ImageError(ValueError):
    """A bad input photo or pair folder; the message names the file or folder."""


def show_path(path: Path) -> str:
    """The path relative to the cwd (the study root when DVC runs us), else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_image(path: Path, max_side: int | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """Decode `path` to upright 8-bit RGB, or raise ImageError naming the file and the problem.

    With `max_side`, the image is decoded small (JPEG draft) and reduced so its long side is
    at most `max_side`, yet its short side not below max_side // 4: memory stays bounded and
    a wide panorama keeps enough pixels for a center crop.
    """
    path = Path(path)
    name = show_path(path)
    _check_file(path, name)
    with warnings.catch_warnings():
        # Pillow warns above its own limit; MAX_PIXELS below is the policy that decides.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as src:
                return _decode(src, name, max_side)
        except ImageError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageError(f"{name}: refused as a possible decompression bomb, over the "
                             f"{MAX_PIXELS / 1e6:.0f} Mpx limit (images.MAX_PIXELS): {e}") from None
        except Image.UnidentifiedImageError:
            raise ImageError(f"{name}: {_what_is_it(path)}") from None
        except DECODE_ERRORS as e:
            raise ImageError(f"{name}: truncated or corrupt image data ({e})") from None


def _check_file(path: Path, name: str) -> None:
    if not path.exists():
        raise ImageError(f"{name}: file not found")
    if not path.is_file():
        raise ImageError(f"{name}: not a regular file")
    if path.stat().st_size == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")


def _what_is_it(path: Path) -> str:
    """Why Pillow could not identify the file: say 'text' when it plainly is (HTML, notes)."""
    with path.open("rb") as f:
        head = f.read(1024)
    try:
        if b"\0" not in head:
            head.decode("utf-8")
            return "a text file, not an image"
    except UnicodeDecodeError:
        pass
    return "not an image format Pillow can decode"


def _decode(src: Image.Image, name: str, max_side: int | None) -> tuple[Image.Image, dict[str, Any]]:
    w, h = src.size
    if w * h > MAX_PIXELS:
        raise ImageError(f"{name}: {w}x{h} px ({w * h / 1e6:.0f} Mpx) exceeds the "
                         f"{MAX_PIXELS / 1e6:.0f} Mpx limit (images.MAX_PIXELS); downscale it first")
    frames = getattr(src, "n_frames", 1)
    if frames > 1:
        src.seek(0)  # animated GIF/APNG/WebP, multi-page TIFF: the first frame is the photo
    meta: dict[str, Any] = {"source": name, "format": src.format, "original_size": [w, h],
                            "mode": src.mode, "frames": frames, "first_frame_only": frames > 1}
    target = _target_size((w, h), max_side)
    if target != (w, h) and src.format == "JPEG":
        src.draft(None, target)  # DCT scaling: decodes at 1/2, 1/4 or 1/8 size, never below target
    src.load()
    img = _reduce(src, target)
    meta["exif_orientation"] = _orientation(img)
    img = ImageOps.exif_transpose(img)  # always a new image: independent of the closed file
    had_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in img.info
    try:
        img = _to_rgb(img)
    except ValueError as e:
        raise ImageError(f"{name}: color mode {src.mode} cannot be converted to RGB ({e})") from None
    if max(img.size) > max(target):
        # exactly `target` (no second rounding that could cost the short side a pixel), turned
        # the way the EXIF rotation turned the image
        upright = target if (img.width >= img.height) == (target[0] >= target[1]) else target[::-1]
        img = img.resize(upright, Image.Resampling.LANCZOS)
    meta.update(alpha_on_white=had_alpha, decoded_size=list(img.size))
    return img, meta


def _target_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size whose long side is max_side, unless that would take the short side below max_side // 4."""
    w, h = size
    if not max_side:
        return size
    factor = min(max(w, h) / max_side, min(w, h) / max(1, max_side // 4))
    if factor <= 1:
        return size
    return max(1, round(w / factor)), max(1, round(h / factor))


def _reduce(img: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Cheap integer box reduction to >= 2x target before the costly mode conversion and LANCZOS."""
    factor = min(img.size[0] // target[0], img.size[1] // target[1]) // 2
    if factor < 2:
        return img
    try:
        return img.reduce(factor)  # keeps info (EXIF) so the orientation still applies
    except ValueError:  # P, 1, I;16 have no reduce; they are converted first, then resized
        return img


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except DECODE_ERRORS:
        return 1


def _to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB; transparency is composited on white (the pad colour), not dropped to black."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _gray_to_8bit(img)
    if img.mode == "P" or "transparency" in img.info:
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK (Adobe inversion handled by Pillow), YCbCr, RGBX


def _gray_to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit grayscale to L by scaling (Pillow's convert('L') would clip at 255)."""
    arr = np.asarray(img).astype(np.float64)
    top = float(arr.max()) if arr.size else 0.0
    if img.mode.startswith("I;16"):
        top = 65535.0
    elif img.mode == "F" and top <= 1.0:
        top = 1.0
    elif img.mode == "I" and top <= 255:
        top = 255.0
    scaled = np.clip(arr * (255.0 / max(top, 1e-12)) + 0.5, 0, 255).astype(np.uint8)
    out = Image.fromarray(scaled)
    out.info = dict(img.info)
    return out


def prepare_image(img: Image.Image, resolution: int, crop: Literal["center", "none"], min_size: int,
                  *, name: str = "image") -> tuple[Image.Image, dict[str, Any]]:
    """Square it (center crop, or pad on white), then LANCZOS-resize to resolution x resolution."""
    img = img if img.mode == "RGB" else _to_rgb(img)
    w, h = img.size
    if min(w, h) < min_size:
        raise ImageError(f"{name}: {w}x{h} px is smaller than prepare.min_size = {min_size} px "
                         "on its short side (upscaling would invent detail)")
    if crop == "center":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        square = img
    elif crop == "none":
        side = max(w, h)
        square = Image.new("RGB", (side, side), WHITE)
        left, top = (side - w) // 2, (side - h) // 2
        square.paste(img, (left, top))
        box = (0, 0, side, side)
    else:
        raise ValueError(f"prepare.crop: {crop!r} is not one of: center, none")
    out = square.resize((resolution, resolution), Image.Resampling.LANCZOS, box=box)
    meta = {"input_size": [w, h], "crop": crop, "crop_box": list(box) if crop == "center" else None,
            "pad_offset": [left, top] if crop == "none" else None,
            "resolution": resolution, "upscaled": side < resolution}
    return out, meta


BLANK_STD = 1.0
"""Pixel std (grey levels, over all channels) below which a prepared photo is one flat colour."""


def warn_if_blank(img: Image.Image, source: str, had_alpha: bool) -> bool:
    """Say so on stderr (naming the file) when the prepared photo is one flat colour: an all-white photo,
    or a fully transparent one (composited on white). It is accepted, but there is nothing to learn."""
    import sys

    std = float(np.asarray(img, dtype=np.float32).std())
    if std >= BLANK_STD:
        return False
    what = "fully transparent (or one flat colour under its alpha)" if had_alpha else "one flat colour"
    print(f"warning: {source}: the prepared photo is {what} (pixel std {std:.2f} grey levels); "
          "the model has nothing to learn from it", file=sys.stderr)
    return True


def find_pair_images(pair_dir: Path) -> tuple[Path, Path]:
    """The (scene, instance) photos of a pair folder: scene.<ext> and instance.<ext>, any case."""
    pair_dir = Path(pair_dir)
    if not pair_dir.is_dir():
        raise ImageError(f"{show_path(pair_dir)}/: pair folder not found")
    scene, instance = (_role_file(pair_dir, role) for role in ROLES)
    return scene, instance


def _role_file(pair_dir: Path, role: str) -> Path:
    named = sorted(p for p in pair_dir.iterdir() if p.is_file() and p.stem.lower() == role)
    known = Image.registered_extensions()
    images = [p for p in named if p.suffix.lower() in known]
    where = f"{show_path(pair_dir)}/"
    if len(images) > 1:
        files = ", ".join(p.name for p in images)
        raise ImageError(f"{where}: {len(images)} {role} images ({files}); keep one")
    if not images:
        others = ", ".join(p.name for p in named)
        found = f"; found {others}, not an image extension Pillow reads" if named else ""
        raise ImageError(f"{where}: no {role} image (expected {role}.jpg, {role}.png, ...){found}")
    return images[0]


def check_inside(root: Path, path: Path) -> None:
    """A photo must be a file of the study: a symlink to a file outside it would be read, but git and
    DVC's lock would not know what the study was trained on (a link inside the study is followed)."""
    real = path.resolve()
    if not real.is_relative_to(Path(root).resolve()):
        shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        raise ImageError(f"{shown}: a link to {real}, outside the study; copy the photo into its pair "
                         "folder instead (git and dvc.lock must hold what the study reads)")


def check_pair_folders(pairs_dir: Path, pair_ids: Iterable[str]) -> None:
    """Every pair in params has a folder and every folder has a pair: a typo never goes unnoticed."""
    pairs_dir = Path(pairs_dir)
    ids = list(pair_ids)
    folders = set()
    if pairs_dir.is_dir():
        folders = {p.name for p in pairs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    shown = show_path(pairs_dir)
    problems = [f"pairs.{pid}: no folder {shown}/{pid}/" for pid in ids if pid not in folders]
    problems += [f"{shown}/{f}/: no entry under pairs in params.yaml" for f in sorted(folders - set(ids))]
    if problems:
        raise ImageError("\n".join(problems))


