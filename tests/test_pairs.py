"""Pair folders: finding a pair's two photos, matching folders with params, preparing a pair
atomically, and the committed default pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from dreamsolo.images import ImageError, check_pair_folders, find_pair_images
from dreamsolo.stages.prepare import prepare_pair

REPO = Path(__file__).resolve().parents[1]
RED = (255, 0, 0)


# --- pair folders ----------------------------------------------------------------------------

def _pair(root: Path, pair_id: str, scene: str = "scene.png", instance: str = "instance.jpg") -> Path:
    folder = root / "data" / "pairs" / pair_id
    folder.mkdir(parents=True)
    Image.new("L", (100, 120), 90).save(folder / scene)
    Image.new("RGB", (120, 100), RED).save(folder / instance)
    return folder


def test_find_pair_images_any_extension_any_case(tmp_path):
    folder = _pair(tmp_path, "p", "SCENE.JPG", "Instance.Png")
    (folder / "scene.txt").write_text("notes about the scene")  # not an image: ignored
    assert find_pair_images(folder) == (folder / "SCENE.JPG", folder / "Instance.Png")


def test_find_pair_images_missing_role(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    Image.new("RGB", (80, 80)).save(folder / "scene.jpg")
    with pytest.raises(ImageError, match=r"p/: no instance image"):
        find_pair_images(folder)


def test_find_pair_images_names_an_unreadable_extension(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "scene.txt").write_text("not a photo")
    Image.new("RGB", (80, 80)).save(folder / "instance.jpg")
    with pytest.raises(ImageError, match=r"p/: no scene image .*found scene.txt, not an image extension"):
        find_pair_images(folder)


def test_find_pair_images_two_candidates(tmp_path):
    folder = _pair(tmp_path, "p")
    Image.new("RGB", (80, 80)).save(folder / "scene.webp")
    with pytest.raises(ImageError, match=r"p/: 2 scene images \(scene.png, scene.webp\)"):
        find_pair_images(folder)


def test_check_pair_folders_both_ways(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pairs = tmp_path / "data" / "pairs"
    for name in ("a", "c", ".git-like"):
        (pairs / name).mkdir(parents=True)
    (pairs / "SOURCES.md").write_text("origins")
    check_pair_folders(pairs, ["a", "c"])  # files and hidden folders are not pairs
    with pytest.raises(ImageError) as e:
        check_pair_folders(pairs, ["a", "b"])
    lines = str(e.value).splitlines()
    assert lines == ["pairs.b: no folder data/pairs/b/", "data/pairs/c/: no entry under pairs in params.yaml"]


# --- prepare_pair ----------------------------------------------------------------------------

def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_pair_writes_images_and_meta(tmp_path):
    raw = _pair(tmp_path, "p1")
    before = _digest(raw)
    out = prepare_pair(tmp_path, "p1", 64, "center", 64)
    assert out == (tmp_path / "data" / "prepared" / "p1").resolve()
    assert sorted(p.name for p in out.iterdir()) == ["instance.png", "meta.json", "scene.png"]
    for role in ("scene", "instance"):
        with Image.open(out / f"{role}.png") as img:
            assert img.mode == "RGB" and img.size == (64, 64)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["scene"]["source"] == "data/pairs/p1/scene.png"
    assert meta["instance"]["original_size"] == [120, 100] and meta["instance"]["crop_box"] == [10, 0, 110, 100]
    assert _digest(raw) == before  # raw data is never modified


def test_prepare_pair_bad_instance_leaves_nothing(tmp_path):
    raw = _pair(tmp_path, "p1")
    (raw / "instance.jpg").write_text("this is not a photo")
    with pytest.raises(ImageError, match="instance.jpg"):
        prepare_pair(tmp_path, "p1", 64, "center", 64)
    prepared = tmp_path / "data" / "prepared"
    assert not (prepared / "p1").exists()
    assert not prepared.exists() or not any(prepared.iterdir())  # no temp folder either


def test_prepare_pair_refuses_unsafe_id(tmp_path):
    with pytest.raises(ValueError, match="safe folder name"):
        prepare_pair(tmp_path, "../p1", 64, "center", 64)


# --- the committed default pairs --------------------------------------------------------------

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_default_pair_folders_match_params():
    check_pair_folders(REPO / "data" / "pairs", PARAMS["pairs"])


@pytest.mark.parametrize("pair_id", sorted(PARAMS["pairs"]))
def test_default_pair_prepares_at_64(tmp_path, pair_id):
    src = REPO / "data" / "pairs" / pair_id
    dest = tmp_path / "data" / "pairs" / pair_id
    dest.mkdir(parents=True)
    for p in src.iterdir():
        dest.joinpath(p.name).write_bytes(p.read_bytes())
    out = prepare_pair(tmp_path, pair_id, 64, PARAMS["prepare"]["crop"], PARAMS["prepare"]["min_size"])
    for role in ("scene", "instance"):
        with Image.open(out / f"{role}.png") as img:
            assert img.mode == "RGB" and img.size == (64, 64)
        assert (src / find_pair_images(src)[role == "instance"].name).stat().st_size < 400_000
