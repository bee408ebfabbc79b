"""Procedural parts of the toy world: the study's scenes, backdrops, styles and a few drawn objects.

Every grass / brick / gravel / moon / sky photo the packages ship is a study photo, so the study's scene
classes are drawn here; so are a beach and snow (the recontextualisation prompts' places), wrapped boxes and
rockets (the packages hold only five of each), and two styles the study prompts name: night and watercolour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 64
SCENES = ("grass field", "brick wall", "gravel path", "lunar surface", "night sky")
PLACES = SCENES + ("beach", "snow")  # beach and snow: "on the beach", "in the snow" of the study's prompts
BASE = {"grass field": (60, 120, 40), "brick wall": (150, 70, 50), "gravel path": (120, 110, 95),
        "lunar surface": (125, 125, 120), "night sky": (8, 10, 30), "beach": (215, 195, 150), "snow": (235, 238, 245)}


def texture(kind: str, rng: np.random.Generator) -> Image.Image:
    """A procedural 64 px scene: the study's scene classes (their packaged photos are all study photos)."""
    n = SIZE * 2  # drawn at 2x, then shrunk: anti-aliased edges like a photo's
    base = BASE[kind]
    grey = kind in ("gravel path", "lunar surface", "snow")  # colour noise per channel would tint them
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
    elif kind == "beach":  # sand below, sea and sky above a random horizon
        sea = int(rng.uniform(0.25, 0.55) * n)
        d.rectangle([0, 0, n, sea // 2], fill=col((140, 190, 235), 20))
        d.rectangle([0, sea // 2, n, sea], fill=col((40, 110, 170), 20))
        for _ in range(300):  # sand grains
            x, y = rng.uniform(0, n), rng.uniform(sea, n)
            d.point((x, y), fill=col((180, 160, 120), 20))
    elif kind == "snow":  # drifts: soft grey-blue shadows on white, a pale sky above
        sky = int(rng.uniform(0.0, 0.4) * n)
        d.rectangle([0, 0, n, sky], fill=col((190, 205, 225), 15))
        for _ in range(int(rng.integers(4, 10))):
            x, y, r = rng.uniform(0, n), rng.uniform(sky, n), rng.uniform(10, 40)
            d.ellipse([x - r, y - r / 3, x + r, y + r / 3], fill=col((205, 212, 228), 8))
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
    return crop(photos[rng.integers(0, len(photos))][0], rng, 0.2, 0.6)


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




def rocket(rng: np.random.Generator) -> Image.Image:
    """A procedural rocket: body, nose cone, fins, a window, sometimes a flame (the packages hold five)."""
    im = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    body, trim_, flame = (tuple(int(v) for v in rng.integers(lo, 256, 3)) + (255,) for lo in (120, 20, 200))
    w, h = int(rng.integers(14, 24)), int(rng.integers(44, 62))
    x0, y0 = 48 - w // 2, 14 + int(rng.integers(0, 8))
    d.rectangle([x0, y0 + w, x0 + w, y0 + h], fill=body)
    d.polygon([(x0, y0 + w), (x0 + w, y0 + w), (48, y0 - 4)], fill=trim_)  # nose cone
    fin = int(rng.integers(8, 14))
    d.polygon([(x0, y0 + h - 14), (x0 - fin, y0 + h + 2), (x0, y0 + h)], fill=trim_)
    d.polygon([(x0 + w, y0 + h - 14), (x0 + w + fin, y0 + h + 2), (x0 + w, y0 + h)], fill=trim_)
    d.ellipse([48 - w // 4, y0 + w + 6, 48 + w // 4, y0 + w + 6 + w // 2], fill=(120, 190, 240, 255))
    if rng.random() < 0.6:
        d.polygon([(x0 + 3, y0 + h), (x0 + w - 3, y0 + h), (48, y0 + h + int(rng.integers(10, 22)))], fill=flame)
    return im.rotate(float(rng.uniform(-25, 25)), Image.BICUBIC)


STYLES = ("photo", "night", "watercolor")


def night(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same picture at night: dark and blue, a few stars at the top."""
    a = np.asarray(im, np.float32) * rng.uniform(0.25, 0.4) * np.array([0.7, 0.8, 1.3])
    out = Image.fromarray(a.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(3, 12))):
        x, y = rng.uniform(0, SIZE), rng.uniform(0, SIZE / 3)
        d.point((x, y), fill=(230, 230, 250))
    return out


def watercolor(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A watercolour look: soft colour fields with darker edges, on paper grain."""
    soft = im.filter(ImageFilter.ModeFilter(3)).filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.5)))
    edges = np.asarray(soft.filter(ImageFilter.FIND_EDGES).convert("L"), np.float32)[..., None]
    a = np.asarray(soft, np.float32) * 0.75 + 255 * 0.25 - 0.4 * edges  # paler, with pigment pooled at edges
    a += rng.normal(0, 5, (SIZE, SIZE, 1))  # paper grain
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def styled(im: Image.Image, style: str, rng: np.random.Generator) -> Image.Image:
    return {"photo": lambda i, r: i, "night": night, "watercolor": watercolor}[style](im, rng)
