"""DVC stage `prepare@<pair>`: check the pair folders against params, then write the prepared photos
(`data/pairs/<id>/` -> `data/prepared/<id>/`: both photos, the instance mask if there is one, meta.json).
Photo decoding and checks are `dreamsolo.images`, masks `dreamsolo.masks`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from dreamsolo import masks
from dreamsolo.config import Study
from dreamsolo.files import atomic_dir, write_json
from dreamsolo.images import (ROLES, show_path, check_inside, check_pair_folders, find_pair_images, load_image,
                              prepare_image, warn_if_blank)
from dreamsolo.layout import prepared_dir, raw_pairs_dir


def run(study: Study, pair_id: str | None) -> None:
    from dreamsolo import tracking

    assert pair_id is not None
    pair = study.pair(pair_id)
    check_pair_folders(raw_pairs_dir(study.root), study.pairs)
    params = {"pair": pair_id, "category": pair.category, "resolution": study.preset.resolution,
              "crop": study.prepare.crop, "min_size": study.prepare.min_size}
    with tracking.stage_run(study.root, "prepare", params, pair=pair_id) as run_:
        out = prepare_pair(study.root, pair_id, study.preset.resolution, study.prepare.crop,
                           study.prepare.min_size)
        run_.artifact(out)


def prepare_pair(root: Path, pair_id: str, resolution: int, crop: Literal["center", "none"],
                 min_size: int) -> Path:
    """data/pairs/<id>/{scene,instance}.* -> data/prepared/<id>/{scene,instance}.png + meta.json."""
    out_dir = prepared_dir(root, pair_id)  # checks the id
    src_dir = raw_pairs_dir(root) / pair_id
    # Decode and check both photos before anything is written: a bad one leaves no output at all.
    max_side = 4 * max(resolution, min_size)
    prepared: dict[str, tuple[Image.Image, dict[str, Any]]] = {}
    for role, path in zip(ROLES, find_pair_images(src_dir)):
        check_inside(root, path)
        img, load_meta = load_image(path, max_side=max_side)
        out, prep_meta = prepare_image(img, resolution, crop, min_size, name=load_meta["source"])
        source = Path("data", "pairs", pair_id, path.name).as_posix()
        warn_if_blank(out, source, load_meta["alpha_on_white"])
        prepared[role] = out, {**load_meta, **prep_meta, "source": source, "file": f"{role}.png"}
    mask, mask_meta = _instance_mask(src_dir, prepared["instance"][1], resolution, crop, min_size)
    with atomic_dir(out_dir) as tmp:
        for role, (img, _) in prepared.items():
            img.save(tmp / f"{role}.png")
        if mask is not None:
            mask.save(tmp / "instance_mask.png")
        write_json(tmp / "meta.json", {"pair": pair_id, "resolution": resolution, "crop": crop,
                                       "min_size": min_size,
                                       **{role: meta for role, (_, meta) in prepared.items()},
                                       "instance_mask": mask_meta})
    return out_dir


def _instance_mask(src_dir: Path, meta: dict[str, Any], resolution: int, crop: Literal["center", "none"],
                   min_size: int) -> tuple[Image.Image | None, dict[str, Any] | None]:
    """The prepared instance mask (dreamsolo.masks) and its record, or (None, None) without one."""
    photo = src_dir / Path(meta["source"]).name
    found = masks.raw_mask(photo, masks.find_mask_file(src_dir), show_path)
    if found is None:
        return None, None
    raw, origin = found
    mask, info = masks.prepare_mask(raw, tuple(meta["decoded_size"]), resolution, crop, min_size)
    if info["coverage"] in (0.0, 1.0):  # a fully opaque alpha, say: the arms that use it would learn nothing new
        print(f"warning: {origin}: the instance mask is {'empty' if info['coverage'] == 0 else 'the whole photo'} "
              "after cropping; the composite and masked arms need one that outlines the instance "
              "(add instance_mask.png beside the photo)", file=sys.stderr)
    return mask, {"source": origin, "file": "instance_mask.png", **info}
