"""The instance mask through `prepare`: from instance_mask.png or the photo's alpha, cropped like the photo."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dreamsolo.images import ImageError
from dreamsolo.stages.prepare import prepare_pair


def _pair(root, instance: Image.Image, name="instance.png", mask: Image.Image | None = None):
    d = root / "data" / "pairs" / "p"
    d.mkdir(parents=True)
    Image.new("RGB", (96, 96), (20, 120, 40)).save(d / "scene.png")
    instance.save(d / name)
    if mask is not None:
        mask.save(d / "instance_mask.png")
    return d


def _meta(root):
    return json.loads((root / "data/prepared/p/meta.json").read_text())


def test_mask_from_the_alpha_channel_is_cropped_like_the_photo(tmp_path):
    rgba = np.zeros((64, 128, 4), dtype=np.uint8)  # wide: the center crop keeps columns 32..95
    rgba[..., :3] = 200
    rgba[:, 40:60, 3] = 255  # the instance: columns 40..59 -> 8..27 of the 64 px square
    _pair(tmp_path, Image.fromarray(rgba, "RGBA"))
    out = prepare_pair(tmp_path, "p", 64, "center", 32)
    mask = np.asarray(Image.open(out / "instance_mask.png"))
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
    assert (mask[:, 10:26] == 255).all() and (mask[:, :6] == 0).all() and (mask[:, 30:] == 0).all()
    meta = _meta(tmp_path)["instance_mask"]
    assert meta["source"] == "alpha channel of data/pairs/p/instance.png" or meta["source"].startswith("alpha channel")
    assert meta["coverage"] == pytest.approx(20 / 64, abs=0.05)


def test_a_mask_file_wins_over_the_alpha_and_must_match_the_photo(tmp_path):
    rgba = Image.new("RGBA", (80, 80), (10, 10, 10, 255))  # alpha: all instance
    m = np.zeros((80, 80), dtype=np.uint8)
    m[:40] = 255  # the file: the top half
    _pair(tmp_path, rgba, mask=Image.fromarray(m))
    out = prepare_pair(tmp_path, "p", 64, "center", 32)
    mask = np.asarray(Image.open(out / "instance_mask.png"))
    assert (mask[:30] == 255).all() and (mask[34:] == 0).all()
    assert _meta(tmp_path)["instance_mask"]["source"].endswith("instance_mask.png")


def test_a_mask_of_another_size_is_refused_naming_the_file(tmp_path):
    _pair(tmp_path, Image.new("RGB", (80, 80), "white"), mask=Image.new("L", (40, 80), 255))
    with pytest.raises(ImageError, match=r"instance_mask.png: 40x80 px, but the instance photo .* is 80x80"):
        prepare_pair(tmp_path, "p", 64, "center", 32)
    assert not (tmp_path / "data/prepared/p").exists()  # nothing half-written


def test_without_mask_or_alpha_there_is_no_mask(tmp_path):
    _pair(tmp_path, Image.new("RGB", (80, 80), (200, 30, 30)))
    out = prepare_pair(tmp_path, "p", 64, "center", 32)
    assert not (out / "instance_mask.png").exists()
    assert _meta(tmp_path)["instance_mask"] is None


def test_a_mask_covering_the_whole_photo_is_warned_about(tmp_path, capsys):
    _pair(tmp_path, Image.new("RGBA", (80, 80), (10, 10, 10, 255)))  # an alpha channel, fully opaque
    prepare_pair(tmp_path, "p", 64, "center", 32)
    err = capsys.readouterr().err
    assert "alpha channel of data/pairs/p/instance.png" in err or "alpha channel of" in err
    assert "the whole photo" in err
