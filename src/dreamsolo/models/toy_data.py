"""Captioned 64 px pretraining images for the `toy` preset, assembled offline and deterministically.

Sources (SOURCES in toy.py records their licenses): Tux Paint's stamp cut-outs (Debian package
tuxpaint-stamps-default, with a caption per stamp), scikit-image / scikit-learn sample photos that
are *not* study photos, and procedural textures drawn here (grass, bricks, gravel, craters, stars),
because every grass/brick/gravel/moon/sky photo those packages ship is already a study photo.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STAMPS = Path("/usr/share/tuxpaint/stamps")
SIZE = 64
OBJECTS = ("cat", "cup of coffee", "person", "horse", "rocket", "gift box")
SCENES = ("grass field", "brick wall", "gravel path", "lunar surface", "night sky")
# Stamp path pattern -> study class: the study's classes get the class prompt, not the stamp caption.
CLASS_RULES = [
    (r"mammals/cats/|blackcat", "cat"), (r"equines/horse", "horse"), (r"space/(rocket|toyrocket)", "rocket"),
    (r"dishes/(mug|coffeecup|expresso)", "cup of coffee"), (r"christmas/(present|gift)", "gift box"),
    (r"people/fireman|people/cartoon/(wo)?man_|people/cartoon/(girl|woman)", "person"),
]
# Sample photos that are not study photos (chelsea, coffee, rocket, astronaut, ... are left out).
PHOTOS = {"china.jpg": "temple", "flower.jpg": "flower", "camera.png": "man with a camera",
          "coins.png": "pile of coins", "retina.jpg": "retina"}


class _Dims(ctypes.Structure):  # librsvg's RsvgDimensionData
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("em", ctypes.c_double), ("ex", ctypes.c_double)]


def render_svg(path: Path, size: int) -> Image.Image | None:
    """Rasterise an SVG stamp with the system librsvg through ctypes (no extra Python package);
    None where librsvg/cairo are missing, so the data set then has only the PNG stamps."""
    try:
        rsvg, cairo = ctypes.CDLL("librsvg-2.so.2"), ctypes.CDLL("libcairo.so.2")
    except OSError:
        return None
    vp, dbl = ctypes.c_void_p, ctypes.c_double
    rsvg.rsvg_handle_new_from_file.restype, rsvg.rsvg_handle_new_from_file.argtypes = vp, [ctypes.c_char_p, vp]
    rsvg.rsvg_handle_get_dimensions.argtypes = [vp, ctypes.POINTER(_Dims)]
    rsvg.rsvg_handle_render_cairo.argtypes = [vp, vp]
    cairo.cairo_image_surface_create.restype = cairo.cairo_create.restype = vp
    cairo.cairo_create.argtypes = cairo.cairo_surface_flush.argtypes = [vp]
    cairo.cairo_destroy.argtypes = cairo.cairo_surface_destroy.argtypes = [vp]
    cairo.cairo_scale.argtypes = [vp, dbl, dbl]
    cairo.cairo_image_surface_get_data.restype, cairo.cairo_image_surface_get_data.argtypes = vp, [vp]
    handle = rsvg.rsvg_handle_new_from_file(str(path).encode(), None)
    if not handle:
        return None
    dim = _Dims()
    rsvg.rsvg_handle_get_dimensions(handle, ctypes.byref(dim))
    s = size / max(dim.width, dim.height, 1)
    w, h = max(1, round(dim.width * s)), max(1, round(dim.height * s))
    surf = cairo.cairo_image_surface_create(0, w, h)  # CAIRO_FORMAT_ARGB32, premultiplied BGRA
    cr = cairo.cairo_create(surf)
    cairo.cairo_scale(cr, s, s)
    rsvg.rsvg_handle_render_cairo(handle, cr)
    cairo.cairo_surface_flush(surf)
    buf = np.ctypeslib.as_array(ctypes.cast(cairo.cairo_image_surface_get_data(surf),
                                            ctypes.POINTER(ctypes.c_ubyte)), (h, w, 4)).astype(np.float32)
    cairo.cairo_destroy(cr)
    cairo.cairo_surface_destroy(surf)
    ctypes.CDLL("libgobject-2.0.so.0").g_object_unref(ctypes.c_void_p(handle))
    alpha = buf[..., 3:]
    rgb = buf[..., [2, 1, 0]] * 255 / np.maximum(alpha, 1)
    return Image.fromarray(np.concatenate([rgb, alpha], -1).clip(0, 255).astype(np.uint8), "RGBA")


def stamp_caption(png: Path) -> str:
    """`a photo of <class>` for the study's classes, else the stamp's own English caption, shortened."""
    rel = png.relative_to(STAMPS).as_posix()
    for pattern, noun in CLASS_RULES:
        if re.search(pattern, rel):
            return f"a photo of a {noun}"
    txt = png.with_suffix(".txt")
    first = txt.read_text(errors="ignore").split("\n")[0] if txt.is_file() else png.stem.replace("_", " ")
    words = re.split(r"[.,;:!?(]", first)[0].strip().lower().split()[:6]
    return "a photo of " + " ".join(words or [png.stem])


def load_stamps(root: Path = STAMPS, size: int = 96) -> list[tuple[Image.Image, str]]:
    """Every stamp as RGBA (long side `size`) with its caption, in sorted path order (deterministic)."""
    out = []
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".svg"))
    pngs = {p.with_suffix("") for p in files if p.suffix == ".png"}
    for p in files:
        if p.suffix == ".svg" and p.with_suffix("") in pngs:
            continue  # the PNG twin is the same drawing
        im = render_svg(p, size) if p.suffix == ".svg" else Image.open(p).convert("RGBA")
        if im is None or im.getchannel("A").getbbox() is None:
            continue
        im = im.crop(im.getchannel("A").getbbox())
        im.thumbnail((size, size), Image.LANCZOS)
        out.append((im, stamp_caption(p)))
    return out


def load_photos() -> list[tuple[Image.Image, str]]:
    """Non-study sample photos, as RGB with captions. (No LFW faces: their licence is not stated.)"""
    import skimage
    import sklearn.datasets

    sk = Path(skimage.__file__).parent / "data"
    skl = Path(sklearn.datasets.__file__).parent / "images"
    photos = [(Image.open(sk / n if (sk / n).is_file() else skl / n).convert("RGB"), f"a photo of a {c}")
              for n, c in PHOTOS.items()]
    return photos


def texture(kind: str, rng: np.random.Generator) -> Image.Image:
    """A procedural 64 px scene: the study's scene classes (their packaged photos are all study photos)."""
    n = SIZE * 2  # drawn at 2x, then shrunk: anti-aliased edges like a photo's
    base = {"grass field": (60, 120, 40), "brick wall": (150, 70, 50), "gravel path": (120, 110, 95),
            "lunar surface": (125, 125, 120), "night sky": (8, 10, 30)}[kind]
    grey = kind in ("gravel path", "lunar surface")  # colour noise per channel would tint them
    jit = rng.normal(0, 15, 1 if grey else 3)
    col = lambda c, s=20: tuple(int(v) for v in np.clip(  # noqa: E731
        np.array(c) + jit + rng.normal(0, s, 1 if grey else 3), 0, 255))
    im = Image.new("RGB", (n, n), col(base, 0))
    d = ImageDraw.Draw(im)
    if kind == "grass field":
        for _ in range(900):  # blades: short slanted strokes, darker low, lighter high
            x, y = rng.uniform(0, n, 2)
            d.line([(x, y), (x + rng.normal(0, 3), y - rng.uniform(6, 16))], fill=col((70, 140, 45), 25), width=2)
    elif kind == "brick wall":
        bh, bw, off = rng.integers(10, 18), rng.integers(24, 40), rng.uniform(0, 40)
        d.rectangle([0, 0, n, n], fill=col((190, 185, 175), 10))  # mortar
        for r in range(-1, n // bh + 2):
            for c in range(-1, n // bw + 2):
                x = c * bw + (bw // 2 if r % 2 else 0) + off % bw - bw
                d.rectangle([x + 2, r * bh + 2, x + bw - 2, r * bh + bh - 2], fill=col(base, 18))
    elif kind == "gravel path":
        for _ in range(700):  # pebbles: small grey-brown ellipses with a dark rim
            x, y, r = *rng.uniform(0, n, 2), rng.uniform(2, 6)
            d.ellipse([x - r, y - r * 0.8, x + r, y + r * 0.8], fill=col(base, 30), outline=col((50, 45, 40), 10))
    elif kind == "lunar surface":
        for _ in range(int(rng.integers(15, 50))):  # craters: dark bowl with a light rim
            x, y, r = *rng.uniform(0, n, 2), rng.uniform(3, 20)
            d.ellipse([x - r, y - r, x + r, y + r], fill=col((90, 90, 88), 8), outline=col((170, 170, 165), 8))
    else:
        for _ in range(int(rng.integers(40, 160))):  # stars: white specks, some bigger
            x, y, r = *rng.uniform(0, n, 2), rng.choice([0.6, 1, 1.5, 2.5], p=[.5, .3, .15, .05])
            d.ellipse([x - r, y - r, x + r, y + r], fill=col((235, 235, 250), 15))
    arr = np.asarray(im.filter(ImageFilter.GaussianBlur(0.6)), np.float32)
    arr += rng.normal(0, 6, arr.shape)  # sensor-like grain
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8)).resize((SIZE, SIZE), Image.LANCZOS)


def gift_box(rng: np.random.Generator) -> Image.Image:
    """A procedural wrapped box with a ribbon cross (there are only two gift stamps)."""
    im = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    paper, ribbon = (tuple(int(v) for v in rng.integers(20, 235, 3)) for _ in range(2))
    w, h = rng.integers(50, 90), rng.integers(40, 80)
    x0, y0 = (96 - w) // 2, 96 - h - 4
    d.rectangle([x0, y0, x0 + w, y0 + h], fill=paper + (255,))
    d.rectangle([x0 + w // 2 - 5, y0, x0 + w // 2 + 5, y0 + h], fill=ribbon + (255,))
    d.rectangle([x0, y0 + h // 3 - 4, x0 + w, y0 + h // 3 + 4], fill=ribbon + (255,))
    d.ellipse([x0 + w // 2 - 16, y0 - 12, x0 + w // 2, y0 + 2], outline=ribbon + (255,), width=5)
    d.ellipse([x0 + w // 2, y0 - 12, x0 + w // 2 + 16, y0 + 2], outline=ribbon + (255,), width=5)
    return im


def background(rng: np.random.Generator, photos) -> Image.Image:
    """A neutral backdrop: flat or gradient colour, or a random crop of a non-study photo."""
    u = rng.random()
    if u < 0.4:
        return Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(0, 256, 3)))
    if u < 0.7:
        a, b = rng.integers(0, 256, (2, 3))
        t = np.linspace(0, 1, SIZE)[:, None, None]
        return Image.fromarray((a * (1 - t) + b * t).repeat(SIZE, 1).astype(np.uint8))
    return crop(photos[rng.integers(0, len(PHOTOS))][0], rng, 0.2, 0.6)


def crop(im: Image.Image, rng: np.random.Generator, lo: float, hi: float) -> Image.Image:
    """A random square crop covering lo..hi of the short side, resized to 64 px, maybe mirrored."""
    s = int(min(im.size) * rng.uniform(lo, hi))
    x, y = rng.integers(0, im.width - s + 1), rng.integers(0, im.height - s + 1)
    out = im.crop((x, y, x + s, y + s)).resize((SIZE, SIZE), Image.LANCZOS)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def paste(bg: Image.Image, obj: Image.Image, rng: np.random.Generator, lo=0.55, hi=0.95) -> Image.Image:
    """Composite a cut-out at a random scale and place (close-ups, as the study's instance photos)."""
    obj = obj.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else obj
    s = rng.uniform(lo, hi) * SIZE / max(obj.size)
    obj = obj.resize((max(1, round(obj.width * s)), max(1, round(obj.height * s))), Image.LANCZOS)
    x = int(rng.integers(0, SIZE - obj.width + 1))
    y = int(rng.integers(0, SIZE - obj.height + 1))
    out = bg.convert("RGBA")
    out.alpha_composite(obj, (x, y))
    return out.convert("RGB")


def example(rng: np.random.Generator, by_class: dict, others: list, photos: list) -> tuple[Image.Image, str]:
    """One captioned image: a class object (close-up) on a scene or backdrop, a scene alone, another
    stamp, or a non-study photo crop. The mix keeps every study class frequent."""
    u = rng.random()
    if u < 0.45:
        noun = OBJECTS[rng.integers(0, len(OBJECTS))]
        pool = by_class[noun]
        obj = gift_box(rng) if noun == "gift box" and rng.random() < 0.6 else pool[rng.integers(0, len(pool))]
        if rng.random() < 0.5:
            scene = SCENES[rng.integers(0, len(SCENES))]
            prep = "in" if scene == "night sky" else "on"
            caption = f"a photo of a {noun} {prep} a {scene}" if rng.random() < 0.6 else f"a photo of a {noun}"
            return paste(texture(scene, rng), obj, rng), caption
        return paste(background(rng, photos), obj, rng), f"a photo of a {noun}"
    if u < 0.75:
        scene = SCENES[rng.integers(0, len(SCENES))]
        return texture(scene, rng), f"a photo of a {scene}"
    if u < 0.92:
        obj, caption = others[rng.integers(0, len(others))]
        return paste(background(rng, photos), obj, rng, 0.4, 0.95), caption
    im, caption = photos[rng.integers(0, len(PHOTOS))]
    return crop(im, rng, 0.3, 1.0), caption


def build_dataset(n: int, seed: int) -> tuple[np.ndarray, list[str], dict]:
    """`n` captioned 64 px RGB images (uint8 NHWC) from a seed, and counts of what went in."""
    stamps, photos = load_stamps(), load_photos()
    by_class = {noun: [im for im, c in stamps if c == f"a photo of a {noun}"] for noun in OBJECTS}
    others = [(im, c) for im, c in stamps if c not in {f"a photo of a {noun}" for noun in OBJECTS}]
    rng = np.random.default_rng(seed)
    images, captions = [], []
    for _ in range(n):
        im, caption = example(rng, by_class, others, photos)
        images.append(np.asarray(im.convert("RGB"), np.uint8))
        captions.append(caption)
    counts = {"stamps": len(stamps), "photos": len(PHOTOS),
              **{f"stamps_{k}": len(v) for k, v in by_class.items()}}
    return np.stack(images), captions, counts
