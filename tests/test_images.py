"""Image input: every odd photo we accept comes out upright 8-bit RGB; every bad one is refused by name."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dreamsolo.images import MAX_PIXELS, ImageError, load_image, prepare_image

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def close(pixel, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# --- accepted inputs -------------------------------------------------------------------------

def _gray(p: Path) -> None:
    Image.new("L", (80, 60), 128).save(p)


def _gray16(p: Path) -> None:
    # 30000/65535 of full scale: must come out mid-gray, not clipped to white
    Image.fromarray(np.full((60, 80), 30000, np.uint16)).save(p)


def _rgba(p: Path) -> None:
    img = Image.new("RGBA", (80, 60), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((60, 40, 79, 59), fill=(*RED, 255))
    img.save(p)


def _la(p: Path) -> None:
    Image.new("LA", (80, 60), (0, 0)).save(p)


def _palette(p: Path) -> None:
    img = Image.new("P", (80, 60), 0)
    img.putpalette([0, 0, 0, *RED] + [0] * 762)
    ImageDraw.Draw(img).rectangle((60, 40, 79, 59), fill=1)
    img.save(p, transparency=0)


def _cmyk(p: Path) -> None:
    img = Image.new("CMYK", (80, 60), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((60, 40, 79, 59), fill=(255, 0, 0, 0))  # pure cyan ink
    img.save(p, quality=95)


def _gif(p: Path) -> None:
    frames = [Image.new("RGB", (80, 60), c).convert("P") for c in (RED, BLUE, (0, 255, 0))]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)


def _bilevel(p: Path) -> None:
    Image.new("1", (80, 60), 1).save(p)


ACCEPTED = {  # file name: writer, mode Pillow opens it in, expected color of the bottom-right corner
    "gray.png": (_gray, "L", (128, 128, 128)),
    "gray16.png": (_gray16, "I;16", (117, 117, 117)),
    "rgba.png": (_rgba, "RGBA", RED),
    "la.png": (_la, "LA", WHITE),  # fully transparent: composited on white, not black
    "palette.png": (_palette, "P", RED),
    "cmyk.jpg": (_cmyk, "CMYK", (0, 255, 255)),
    "anim.gif": (_gif, "P", RED),
    "bilevel.png": (_bilevel, "1", WHITE),
}


@pytest.mark.parametrize("fname", ACCEPTED)
def test_accepted_inputs_become_rgb(tmp_path, fname):
    write, mode, corner = ACCEPTED[fname]
    path = tmp_path / fname
    write(path)
    img, meta = load_image(path)
    assert meta["mode"] == mode and img.mode == "RGB" and img.size == (80, 60)
    assert close(img.getpixel((79, 59)), corner), img.getpixel((79, 59))
    assert meta["source"].endswith(fname) and meta["original_size"] == [80, 60]
    out, _ = prepare_image(img, 32, "center", 16)
    assert out.mode == "RGB" and out.size == (32, 32)


def test_transparent_areas_are_white(tmp_path):
    _rgba(tmp_path / "a.png")
    img, meta = load_image(tmp_path / "a.png")
    assert img.getpixel((0, 0)) == WHITE and meta["alpha_on_white"]


def test_animated_gif_takes_first_frame_and_says_so(tmp_path):
    _gif(tmp_path / "a.gif")
    img, meta = load_image(tmp_path / "a.gif")
    assert close(img.getpixel((40, 30)), RED)
    assert meta["frames"] == 3 and meta["first_frame_only"] is True


# EXIF orientation -> where a marker drawn at the stored top-left corner must land when upright
ORIENTATION_CORNER = {1: "tl", 2: "tr", 3: "br", 4: "bl", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("orientation", sorted(ORIENTATION_CORNER))
def test_exif_rotated_photo_comes_out_upright(tmp_path, orientation, fmt):
    stored = Image.new("RGB", (120, 80), WHITE)
    ImageDraw.Draw(stored).rectangle((0, 0, 19, 19), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rot.{fmt}"
    stored.save(path, exif=exif.tobytes(), **({"quality": 95} if fmt == "jpg" else {}))
    img, meta = load_image(path)
    assert meta["exif_orientation"] == orientation
    assert img.size == ((80, 120) if orientation >= 5 else (120, 80))
    w, h = img.size
    corners = {"tl": (5, 5), "tr": (w - 6, 5), "bl": (5, h - 6), "br": (w - 6, h - 6)}
    for name, xy in corners.items():
        expected = RED if name == ORIENTATION_CORNER[orientation] else WHITE
        assert close(img.getpixel(xy), expected), (name, img.getpixel(xy))


@pytest.mark.parametrize("fmt", ["jpg", "png"])  # JPEG: DCT draft; PNG: integer reduce, then LANCZOS
def test_max_side_bounds_the_decode_and_keeps_orientation(tmp_path, fmt):
    stored = Image.new("RGB", (1600, 1200), WHITE)
    ImageDraw.Draw(stored).rectangle((0, 0, 199, 199), fill=RED)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / f"big.{fmt}", exif=exif.tobytes())
    img, meta = load_image(tmp_path / f"big.{fmt}", max_side=256)
    assert img.size == (192, 256) and meta["original_size"] == [1600, 1200]
    assert close(img.getpixel((186, 5)), RED) and close(img.getpixel((5, 5)), WHITE)


@pytest.mark.parametrize("size", [(4000, 400), (4001, 397), (397, 4001), (12345, 1001)])
def test_panorama_keeps_enough_short_side(tmp_path, size):
    Image.new("RGB", size, WHITE).save(tmp_path / "pano.png")
    img, _ = load_image(tmp_path / "pano.png", max_side=256)
    assert min(img.size) == 64  # max_side // 4: still enough to center-crop at 64 px


def test_huge_jpeg_is_decoded_small_without_blowing_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("L", (12000, 9000), 100).save(path, quality=50)  # 108 Mpx, ~1 MB on disk
    code = (
        "import resource, sys; from dreamsolo.images import load_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "img, meta = load_image(sys.argv[1], max_side=256)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(img.size[0], img.size[1], (after - before) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    w, h, grown_mb = map(int, out.stdout.split())
    assert (w, h) == (256, 192)
    assert grown_mb < 50  # a full decode would need >= 108 MB


# --- refused inputs --------------------------------------------------------------------------

def _png_with_size(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header claims width x height: only the header check may look at it."""
    Image.new("1", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    path.write_bytes(bytes(data))


def _truncated_jpeg(p: Path) -> None:
    full = p.with_suffix(".full.jpg")
    Image.effect_noise((200, 200), 50).convert("RGB").save(full, quality=90)
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])


def _truncated_png(p: Path) -> None:
    full = p.with_suffix(".full.png")
    Image.effect_noise((200, 200), 50).save(full)
    p.write_bytes(full.read_bytes()[: full.stat().st_size // 2])


REFUSED = {  # file name, writer (None = leave missing), words the message must contain
    "missing.jpg": (None, "file not found"),
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "truncated.jpg": (_truncated_jpeg, "truncated or corrupt"),
    "truncated.png": (_truncated_png, "truncated or corrupt"),
    "notes.jpg": (lambda p: p.write_text("<html>not a photo</html>\n"), "text file"),
    "noise.png": (lambda p: p.write_bytes(bytes(np.random.default_rng(0).integers(1, 255, 4096, np.uint8))),
                  "not an image format"),
    "garbage.png": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50), "corrupt"),
    "folder.jpg": (lambda p: p.mkdir(), "not a regular file"),
    "toolarge.png": (lambda p: _png_with_size(p, 11000, 11000), "images.MAX_PIXELS"),
    "bomb.png": (lambda p: _png_with_size(p, 30000, 30000), "decompression bomb"),
}


@pytest.mark.parametrize("fname", REFUSED)
def test_bad_inputs_are_refused_by_name(tmp_path, fname):
    write, words = REFUSED[fname]
    path = tmp_path / fname
    if write:
        write(path)
    with pytest.raises(ImageError) as e:
        load_image(path)
    assert fname in str(e.value) and words in str(e.value)


def test_max_pixels_policy_admits_a_12000x9000_photo():
    assert 12000 * 9000 <= MAX_PIXELS < 2 * Image.MAX_IMAGE_PIXELS


# --- prepare_image ---------------------------------------------------------------------------

def _stripes() -> Image.Image:
    img = Image.new("RGB", (300, 100), RED)
    ImageDraw.Draw(img).rectangle((100, 0, 199, 99), fill=(0, 255, 0))
    ImageDraw.Draw(img).rectangle((200, 0, 299, 99), fill=BLUE)
    return img


def test_center_crop_keeps_the_middle():
    out, meta = prepare_image(_stripes(), 64, "center", 64)
    assert out.size == (64, 64) and meta["crop_box"] == [100, 0, 200, 100]
    assert close(out.getpixel((2, 32)), (0, 255, 0)) and close(out.getpixel((61, 32)), (0, 255, 0))
    assert meta["upscaled"] is False


def test_pad_puts_the_whole_photo_on_white():
    out, meta = prepare_image(_stripes(), 60, "none", 64)
    assert out.size == (60, 60) and meta["pad_offset"] == [0, 100]
    assert out.getpixel((30, 2)) == WHITE and out.getpixel((30, 57)) == WHITE
    assert close(out.getpixel((3, 30)), RED) and close(out.getpixel((56, 30)), BLUE)


def test_small_photo_is_upscaled_and_flagged():
    out, meta = prepare_image(Image.new("RGB", (80, 90), RED), 128, "center", 64)
    assert out.size == (128, 128) and meta["upscaled"] is True


def test_too_small_photo_names_file_size_and_key():
    with pytest.raises(ImageError) as e:
        prepare_image(Image.new("RGB", (50, 80)), 64, "center", 64, name="data/pairs/x/scene.jpg")
    msg = str(e.value)
    assert "data/pairs/x/scene.jpg" in msg and "50x80" in msg and "prepare.min_size" in msg


def test_prepare_image_accepts_non_rgb_input():
    out, _ = prepare_image(Image.new("LA", (80, 80), (0, 0)), 64, "center", 64)
    assert out.mode == "RGB" and out.getpixel((0, 0)) == WHITE


def test_unknown_crop_mode_is_refused():
    with pytest.raises(ValueError, match="prepare.crop"):
        prepare_image(Image.new("RGB", (80, 80)), 64, "left", 64)  # type: ignore[arg-type]


# --- blank photos: accepted, with a warning naming the file ------------------------------------

def _prepare_one(tmp_path, monkeypatch, make_instance):
    """prepare_pair on a pair whose instance photo `make_instance` writes; returns the stderr text."""
    import io
    import shutil

    from dreamsolo.stages.prepare import prepare_pair

    pair = tmp_path / "data/pairs/p"
    pair.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "data/pairs/cat_grass/scene.png", pair / "scene.png")
    make_instance(pair / "instance.png")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.chdir(tmp_path)
    out = prepare_pair(tmp_path, "p", 64, "center", 64)
    assert (out / "instance.png").is_file()  # accepted: a warning, not a refusal
    return err.getvalue()


@pytest.mark.parametrize("make, what", [
    (lambda p: Image.new("RGB", (96, 96), WHITE).save(p), "one flat colour"),
    (lambda p: Image.new("RGBA", (96, 96), (200, 30, 30, 0)).save(p), "fully transparent"),
])
def test_blank_photo_is_accepted_with_a_warning_naming_the_file(tmp_path, monkeypatch, make, what):
    err = _prepare_one(tmp_path, monkeypatch, make)
    lines = err.strip().splitlines()
    # a fully transparent photo's alpha is also an empty instance mask: a second warning says so
    assert len(lines) == (2 if what == "fully transparent" else 1), err
    assert lines[0].startswith("warning: data/pairs/p/instance.png: the prepared photo is "), err
    assert what in lines[0] and "nothing to learn" in lines[0]
    assert lines[1:] == [] or "the instance mask is empty" in lines[1]


def test_a_real_photo_gets_no_blank_warning(tmp_path, monkeypatch):
    src = Path(__file__).resolve().parents[1] / "data/pairs/cat_grass/instance.jpg"
    err = _prepare_one(tmp_path, monkeypatch, lambda p: Image.open(src).save(p))
    assert "warning" not in err


def test_a_photo_linked_from_outside_the_study_is_refused_one_inside_is_followed(tmp_path, monkeypatch):
    """Issue 26, point 4. Mutation: without images.check_inside the outside link is prepared and this fails."""
    import shutil

    from dreamsolo.images import ImageError
    from dreamsolo.stages.prepare import prepare_pair

    study, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    pair = study / "data/pairs/p"
    pair.mkdir(parents=True)
    elsewhere.mkdir()
    repo_pairs = Path(__file__).resolve().parents[1] / "data/pairs/cat_grass"
    shutil.copy(repo_pairs / "scene.png", study / "scene-photo.png")
    shutil.copy(repo_pairs / "instance.jpg", elsewhere / "cat.jpg")
    (pair / "scene.png").symlink_to(study / "scene-photo.png")  # inside the study: followed
    (pair / "instance.jpg").symlink_to(elsewhere / "cat.jpg")
    monkeypatch.chdir(study)
    with pytest.raises(ImageError, match=r"^data/pairs/p/instance.jpg: a link to .*elsewhere/cat.jpg, outside the study"):
        prepare_pair(study, "p", 64, "center", 64)
    assert not (study / "data/prepared/p").exists()
    (pair / "instance.jpg").unlink()
    shutil.copy(elsewhere / "cat.jpg", pair / "instance.jpg")
    assert (prepare_pair(study, "p", 64, "center", 64) / "scene.png").is_file()


def test_a_large_jpeg_is_prepared_without_pillow_s_raw_warning(tmp_path, monkeypatch, recwarn):
    """Issue 26, point 4: 108 Mpx is within MAX_PIXELS; the mask step no longer reopens the photo with
    Pillow's DecompressionBombWarning (bench/large_photo.py: peak 866 -> 49 MiB without its full decode)."""
    import shutil

    from dreamsolo.stages.prepare import prepare_pair

    pair = tmp_path / "data/pairs/p"
    pair.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "data/pairs/cat_grass/scene.png", pair / "scene.png")
    Image.new("RGB", (12000, 9000), (120, 60, 30)).save(pair / "instance.jpg", quality=50)
    monkeypatch.chdir(tmp_path)
    out = prepare_pair(tmp_path, "p", 64, "center", 64)
    assert (out / "instance.png").is_file() and not (out / "instance_mask.png").exists()
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]
