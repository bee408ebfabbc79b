"""Make the instance masks of the default pairs (data/pairs/<id>/instance_mask.png) reproducibly.

    python tools/make_masks.py          # Pillow only
    python tools/make_masks.py --check  # redraw and compare with the committed masks (exit 1 on a difference)

Each mask is an outline recorded below (a polygon, vertices as fractions of the photo's width and height,
traced by eye once on a 10 % grid), filled at the photo's own size; the horse, a black silhouette on white,
is thresholded instead (grey < 128). A classical segmentation (scikit-image's
random walker, seeded at the border and centre) was tried first and drew the cat's face only, half the
cup and a band around the rocket, so the outlines are the method. A pair whose instance has an alpha
channel (the gift) needs no mask file: prepare reads the alpha (the horse's alpha is fully opaque, so it
gets a file). Not part of the pipeline (data/pairs is raw input in git); the method is in
data/pairs/SOURCES.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
CAT = [(0, 0), (0.80, 0), (0.88, 0.15), (0.88, 0.75), (1, 0.85), (1, 1), (0, 1)]
OUTLINES = {  # pair id -> polygon of the instance, (x, y) fractions; the two cat pairs share one photo
    "cat_grass": CAT,
    "cat_brick": CAT,
    "cup_brick": [(0.32, 0.10), (0.40, 0.03), (0.60, 0.03), (0.68, 0.12), (0.70, 0.30), (0.80, 0.40), (0.85, 0.55),
                  (0.80, 0.75), (0.68, 0.92), (0.50, 0.98), (0.30, 0.98), (0.10, 0.85), (0.02, 0.65), (0.05, 0.45),
                  (0.15, 0.32), (0.30, 0.28)],
    "rocket_moon": [(0.485, 0.30), (0.515, 0.30), (0.53, 0.36), (0.53, 0.93), (0.57, 0.95), (0.57, 1), (0.43, 1),
                    (0.43, 0.95), (0.47, 0.93), (0.47, 0.36)],
    "astronaut_sky": [(0.38, 0.03), (0.55, 0.03), (0.60, 0.12), (0.60, 0.27), (0.65, 0.33), (0.70, 0.45),
                      (0.72, 0.65), (0.85, 0.65), (0.95, 0.75), (0.98, 1), (0, 1), (0, 0.70), (0.05, 0.55),
                      (0.12, 0.45), (0.27, 0.35), (0.32, 0.28), (0.30, 0.12)],
    "hopper_gravel": [(0.35, 0.05), (0.50, 0.02), (0.68, 0.06), (0.72, 0.20), (0.70, 0.35), (0.68, 0.52),
                      (0.78, 0.58), (0.95, 0.62), (1, 0.70), (1, 1), (0.05, 1), (0.08, 0.68), (0.15, 0.60),
                      (0.33, 0.55), (0.30, 0.35), (0.30, 0.20)],
}


THRESHOLD = {  # pair id -> grey level below which a pixel is the instance (a dark silhouette on white)
    "horse_gravel": 128,  # its PNG has an alpha channel, but a fully opaque one: the alpha says nothing
}


def threshold(photo: Image.Image, level: int) -> Image.Image:
    grey = np.asarray(photo.convert("L"))
    return Image.fromarray(((grey < level) * 255).astype(np.uint8), mode="L")


def draw(size: tuple[int, int], outline: list[tuple[float, float]]) -> Image.Image:
    """The filled outline (L, 0 / 255) at `size`."""
    w, h = size
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).polygon([(x * (w - 1), y * (h - 1)) for x, y in outline], fill=255)
    return mask


def instance_photo(pair: str) -> Path:
    (path,) = [p for p in (ROOT / "data" / "pairs" / pair).iterdir() if p.stem == "instance"]
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed masks, write nothing")
    args = parser.parse_args()
    bad = 0
    for pair in [*OUTLINES, *THRESHOLD]:
        with Image.open(instance_photo(pair)) as im:
            mask = draw(im.size, OUTLINES[pair]) if pair in OUTLINES else threshold(im, THRESHOLD[pair])
        out = ROOT / "data" / "pairs" / pair / "instance_mask.png"
        coverage = np.asarray(mask).mean() / 255
        if args.check:
            same = out.is_file() and np.array_equal(np.asarray(Image.open(out)), np.asarray(mask))
            bad += not same
            print(f"{pair}: {'same' if same else 'DIFFERS'} (coverage {coverage:.3f})")
            continue
        mask.save(out, optimize=True)
        print(f"{out.relative_to(ROOT)}: {mask.size[0]}x{mask.size[1]}, coverage {coverage:.3f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
