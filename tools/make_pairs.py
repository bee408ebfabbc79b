"""Regenerate the eight default pairs in data/pairs/ from images shipped in installed packages.

    python tools/make_pairs.py            # needs scikit-image and matplotlib installed

Not part of the pipeline (data/pairs is raw input, committed to git); it documents exactly how
the committed files were made. Photos are saved as JPEG (quality 90), grayscale textures and
images with transparency as PNG, all at most 512 px on the long side; origins and licenses are
in data/pairs/SOURCES.md.
"""

from __future__ import annotations

import argparse
from importlib import metadata, resources
from pathlib import Path

from PIL import Image

MAX_SIDE = 512
ROLES = ("scene", "instance")

# source key -> (package, path inside the package)
SOURCES = {
    "cat": ("skimage", "data/chelsea.png"),
    "cup": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "horse": ("skimage", "data/horse.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "brick": ("skimage", "data/brick.png"),
    "moon": ("skimage", "data/moon.png"),
    "sky": ("skimage", "data/hubble_deep_field.jpg"),
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "gift": ("matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
}

# pair id -> (scene source, instance source); ids and classes match params.yaml `pairs`
PAIRS = {
    "cat_grass": ("grass", "cat"),
    "cat_brick": ("brick", "cat"),
    "horse_gravel": ("gravel", "horse"),
    "cup_brick": ("brick", "cup"),
    "rocket_moon": ("moon", "rocket"),
    "gift_grass": ("grass", "gift"),
    "astronaut_sky": ("sky", "astronaut"),
    "hopper_gravel": ("gravel", "hopper"),
}


def source_path(key: str) -> Path:
    package, rel = SOURCES[key]
    return Path(str(resources.files(package).joinpath(rel)))


def save_small(src: Path, dest_stem: Path) -> Path:
    """Long side <= MAX_SIDE; keep grayscale and alpha as they are (they exercise those load paths)."""
    with Image.open(src) as im:
        im.load()
        img = im.copy()
    if max(img.size) > MAX_SIDE:
        img.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    photo = img.mode == "RGB"
    dest = dest_stem.with_suffix(".jpg" if photo else ".png")
    if photo:
        img.save(dest, quality=90, optimize=True)
    else:
        img.save(dest, optimize=True)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                        help="study root (the folder holding params.yaml)")
    args = parser.parse_args()
    print("scikit-image", metadata.version("scikit-image"), "| matplotlib", metadata.version("matplotlib"),
          "| pillow", metadata.version("pillow"))
    for pair_id, keys in PAIRS.items():
        folder = args.root / "data" / "pairs" / pair_id
        folder.mkdir(parents=True, exist_ok=True)
        for role, key in zip(ROLES, keys):
            for old in folder.glob(f"{role}.*"):  # one file per role, whatever its old extension
                old.unlink()
            dest = save_small(source_path(key), folder / role)
            print(f"{dest.relative_to(args.root)}  <-  {SOURCES[key][0]}/{SOURCES[key][1]}  "
                  f"({dest.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
