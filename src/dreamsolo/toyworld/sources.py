"""The toy world's captioned cut-outs, read offline from installed packages, in a fixed order.

| source | package | licence (as the package states it) |
| --- | --- | --- |
| clip art | Debian `openclipart-png` (`/usr/share/openclipart/png`, 8,121 PNGs in a category tree) | public domain dedication |
| emoji | Debian `fonts-noto-color-emoji`, rendered by Pillow; names from PyPI `emoji` | images Apache-2.0, font OFL-1.1 |
| stamps | Debian `tuxpaint-stamps-default` (`/usr/share/tuxpaint/stamps`) | GPL-2 or later |
| photos | scikit-image / scikit-learn sample photos that are not study photos | CC0, CC BY 2.0 (SOURCES) |

Every cut-out gets a noun: a study class noun where its name or folder says so (the study's classes get
the class prompt's words), else the folder's noun (clip art), the emoji's Unicode name, or the stamp's
caption. None of the 16 study photos may enter: `drop_study_photos` compares every cut-out with them.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CLIPART = Path("/usr/share/openclipart/png")
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
STAMPS = Path("/usr/share/tuxpaint/stamps")
CUT = 96  # long side of a stored cut-out, px (the pool pastes them at up to 64 px)

SOURCES = [  # what the pool is made of, with the licence its package states
    {"source": "Debian openclipart-png 0.18 (/usr/share/openclipart/png)",
     "license": "public domain (Creative Commons Public Domain Dedication, debian/copyright)"},
    {"source": "Debian fonts-noto-color-emoji (NotoColorEmoji.ttf), names from PyPI emoji",
     "license": "emoji images Apache-2.0, font SIL OFL-1.1 (debian/copyright); emoji package BSD-3-Clause"},
    {"source": "Debian tuxpaint-stamps-default (Tux Paint stamps, /usr/share/tuxpaint/stamps)",
     "license": "GPL-2 (or later), Copyright 2002-2022 Bill Kendrick (debian/copyright)"},
    {"source": "scikit-image data: camera.png (Lav Varshney), retina.jpg (Wikimedia)", "license": "CC0"},
    {"source": "scikit-image data: coins.png (Brooklyn Museum)", "license": "no known copyright restrictions"},
    {"source": "scikit-learn datasets/images: china.jpg, flower.jpg (Flickr, danielbuechele / vultilion)",
     "license": "CC BY 2.0, attribution required (sklearn/datasets/images/README.txt)"},
    {"source": "procedural scenes, gift boxes and styles drawn by dreamsolo.toyworld.scenes", "license": "MIT (this repo)"},
]

OBJECTS = ("cat", "cup of coffee", "person", "horse", "rocket", "gift box")
# Words (of a file name, folder or emoji name) that make a cut-out one of the study's object classes.
# Italian and Polish words occur in openclipart's file names (gatto, cavallo, tazza, kubek).
CLASS_WORDS = {
    "cat": {"cat", "cats", "kitten", "kitty", "gatto", "gattina", "housecats", "blackcat"},
    "horse": {"horse", "horses", "cavallo", "pony", "equines"},
    "rocket": {"rocket", "toyrocket", "razzo"},
    "cup of coffee": {"coffee", "mug", "teacup", "tazza", "kubek", "cuppa", "coffeecup", "expresso"},
    "gift box": {"gift", "gifts", "present", "regalo"},
    "person": {"person", "people", "man", "woman", "men", "women", "boy", "girl", "fireman", "astronaut",
               "child", "adult", "prince", "princess", "family", "superhero", "supervillain"},
}
# Words that make a name something else than the class it also names (a beer mug, a cat bowl, a road sign).
NOT_CLASS = {"cup of coffee": {"beer"}, "cat": {"scodella", "bowl"}, "horse": {"roadsigns", "sign", "carousel"}}
# A person word next to one of these is a thing, not a person (woman's hat, man's shoe, raised hand).
NOT_PERSON = {"hat", "shoe", "boot", "sandal", "dress", "clothes", "clothing", "kimono", "bikini", "hand", "hands",
              "fist", "finger", "thumbs", "foot", "leg", "ear", "nose", "eye", "eyes", "mouth", "tongue", "lips",
              "tooth", "bone", "heart", "kiss", "bodypart", "mannequin", "cake", "ball", "toilet", "room", "symbol",
              "bottle", "chick", "stickmen", "smilies", "sign", "lamb", "gnu"}
EMOJI_CLASSES = {"hot beverage": "cup of coffee"}  # emoji names that name a study class in other words
PEOPLE_THINGS = ("people/bodypart", "people/clothing", "people/smilies", "people/stickmen")
# Study scene words never name a cut-out's class: those photos are all study photos (scenes are procedural).
# Openclipart folders -> noun (the deepest listed prefix wins); folders not listed take their own last name.
CLIPART_NOUNS = {
    "animals": "animal", "animals/amphibian": "frog", "animals/birds": "bird", "animals/birds/penguin": "penguin",
    "animals/bugs": "bug", "animals/dinosaurs": "dinosaur", "animals/fantasy": "dragon", "animals/fish": "fish",
    "animals/mammals": "animal", "animals/mammals/bears": "bear", "animals/mammals/big_cats": "lion",
    "animals/mammals/dogs": "dog", "buildings": "building", "buildings/homes": "house",
    "buildings/furniture": "chair", "computer": "computer", "computer/icons": "icon", "computer/buttons": "button",
    "containers": "box", "decorations": "ornament", "education": "school supply", "electronics": "gadget",
    "electronics/bulb": "light bulb", "electronics/battery": "battery", "food": "food", "food/fruit": "fruit",
    "food/beverages": "drink", "food/beverages/alcohol": "bottle", "food/desserts": "cake",
    "food/breads_and_carbs": "bread", "food/meats_and_eggs": "meat", "food/vegetables": "vegetable",
    "food/dairy": "cheese", "geography": "map", "geography/astronomy": "moon", "logos": "logo", "office": "office tool",
    "office/telephone": "telephone", "people": "person", "people/bodypart": "body part",
    "people/clothing": "clothing", "people/clothing/hats": "hat", "people/smilies": "smiley face",
    "people/stickmen": "stick figure", "plants": "plant", "plants/flowers": "flower", "plants/trees": "tree",
    "recreation": "toy", "recreation/music": "musical instrument", "recreation/sports": "ball",
    "recreation/games/cards": "playing card", "recreation/games/chess": "chess piece",
    "recreation/holiday/christmas": "christmas ornament", "recreation/party": "balloon",
    "science": "science tool", "shapes": "shape", "shapes/arrows": "arrow", "shapes/stars": "star",
    "shapes/jigsaw": "puzzle piece", "signs_and_symbols": "sign", "signs_and_symbols/flags": "flag",
    "signs_and_symbols/clocks": "clock", "signs_and_symbols/money": "coin", "signs_and_symbols/weather": "weather symbol",
    "special": "pattern", "tools": "tool", "tools/weapons": "sword", "transportation": "vehicle",
    "transportation/boating": "boat", "transportation/roadsigns": "road sign", "unsorted": "thing",
}
# Flat colour swatches and gradients teach nothing a scene or backdrop does not.
CLIPART_SKIP = ("special/gradients", "special/patterns", "special/examples", "unsorted/duplicates")


@dataclass(frozen=True)
class Cutout:
    image: Image.Image  # RGBA, long side <= CUT px, cropped to its alpha
    noun: str  # the class in captions: a study object noun, or the source's own noun
    source: str  # clipart | emoji | stamps
    key: str  # the file path or emoji name it came from (the record, and the held-out split)


def words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", text.lower()) if w]  # digits split too: gift04 -> gift


def study_class(text: str) -> str | None:
    """The study object class a name (file path, emoji name) denotes, or None."""
    ws = set(words(text))
    for noun, vocab in CLASS_WORDS.items():
        if ws & vocab and not ws & NOT_CLASS.get(noun, set()) and not (noun == "person" and ws & NOT_PERSON):
            return noun
    return None


def _hash(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)


def heldout(key: str, fold: int = 10) -> bool:
    """1 in `fold` cut-outs is held out from evaluator training, by a hash of its key (stable across runs)."""
    return _hash(key) % fold == 0


STUDY_HELDOUT = 5  # held-out cut-outs per study object, at least: its per-class validation rests on them


def study_heldout(keys: list[str], fold: int = 10, least: int = STUDY_HELDOUT) -> set[str]:
    """The held-out cut-outs of one study object class: a tenth, but at least `least` (and at most a
    quarter), those of lowest hash. A plain tenth left 1-2 drawings of cup, horse, cat, gift box and rocket
    held out, too few for a per-class figure to say anything about the class (docs/TOY_BUILDS.md)."""
    k = max(-(-len(keys) // fold), min(least, len(keys) // 4))
    return set(sorted(keys, key=_hash)[:k])


def trim(im: Image.Image, size: int = CUT) -> Image.Image | None:
    """RGBA cropped to its visible part and shrunk to `size`; None when nothing is visible."""
    im = im.convert("RGBA")
    box = im.getchannel("A").point(lambda a: 255 if a > 8 else 0).getbbox()
    if box is None:
        return None
    im = im.crop(box)
    im.thumbnail((size, size), Image.LANCZOS)
    return im


def clipart_noun(rel: str) -> str:
    folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
    while folder and folder not in CLIPART_NOUNS:
        folder = folder.rsplit("/", 1)[0] if "/" in folder else ""
    return CLIPART_NOUNS.get(folder, "thing")


def load_clipart(root: Path = CLIPART) -> list[Cutout]:
    """Openclipart's PNGs, sorted by path; the noun is the study class its name or folder says, else the folder's."""
    out = []
    for p in sorted(root.rglob("*.png")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith(CLIPART_SKIP):
            continue
        try:
            im = trim(Image.open(p))
        except Image.DecompressionBombError:  # one 15000x15000 poster: not a cut-out
            continue
        if im is None:
            continue
        if rel.startswith("people/") and not rel.startswith(PEOPLE_THINGS):
            noun = "person"
        else:  # big cats are lions and tigers, not the study's cat
            noun = study_class(rel.replace("big_cats", "")) or clipart_noun(rel)
        out.append(Cutout(im, noun, "clipart", rel))
    return out


def emoji_noun(name: str) -> str:
    """`:woman_astronaut_medium-light_skin_tone:` -> study class `person`; `:red_apple:` -> `red apple`."""
    name = re.sub(r"_?(light|medium-light|medium|medium-dark|dark)_skin_tone", "", name.strip(":"))
    name = name.replace("flag_", "flag of ").replace("_", " ").replace("’", "'").lower().strip(" ,")
    return EMOJI_CLASSES.get(name) or study_class(name) or name


def load_emoji(font_path: Path = EMOJI_FONT) -> list[Cutout]:
    """Every fully-qualified emoji the font draws as one glyph (ZWJ sequences through raqm), with its name."""
    import emoji

    font = ImageFont.truetype(str(font_path), 109)  # Noto Color Emoji is a 109 px bitmap font
    out = []
    for seq, data in sorted(emoji.EMOJI_DATA.items(), key=lambda kv: kv[1]["en"]):
        if data["status"] != emoji.STATUS["fully_qualified"]:
            continue
        canvas = Image.new("RGBA", (300, 160))
        ImageDraw.Draw(canvas).text((0, 0), seq, font=font, embedded_color=True)
        box = canvas.getchannel("A").getbbox()
        if box is None or box[2] - box[0] > 180:  # not in the font, or drawn as several glyphs
            continue
        im = trim(canvas)
        if im is not None:
            out.append(Cutout(im, emoji_noun(data["en"]), "emoji", data["en"]))
    return out


class _Dims(ctypes.Structure):  # librsvg's RsvgDimensionData
    _fields_ = [("width", ctypes.c_int), ("height", ctypes.c_int), ("em", ctypes.c_double), ("ex", ctypes.c_double)]


def render_svg(path: Path, size: int) -> Image.Image | None:
    """Rasterise an SVG stamp with the system librsvg through ctypes (no extra Python package);
    None where librsvg/cairo are missing, so the pool then has only the PNG stamps."""
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


def stamp_noun(path: Path) -> str:
    """The study class a stamp's file name or caption names, else the caption, shortened to six words.
    The folder is not read: Tux Paint's `mammals/cats/` holds lions, tigers and a cheetah."""
    txt = path.with_suffix(".txt")
    first = txt.read_text(errors="ignore").split("\n")[0] if txt.is_file() else path.stem.replace("_", " ")
    first = re.split(r"[.,;:!?(]", first)[0].strip().lower()
    if noun := study_class(f"{path.stem} {first}"):
        return noun
    return re.sub(r"^(a|an|the) ", "", " ".join(first.split()[:6])) or path.stem


def load_stamps(root: Path = STAMPS) -> list[Cutout]:
    """Tux Paint's stamps (PNG, or SVG where no PNG twin exists), sorted by path."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".svg"))
    pngs = {p.with_suffix("") for p in files if p.suffix == ".png"}
    out = []
    for p in files:
        if p.suffix == ".svg" and p.with_suffix("") in pngs:
            continue  # the PNG twin is the same drawing
        im = render_svg(p, CUT) if p.suffix == ".svg" else Image.open(p)
        im = trim(im) if im is not None else None
        if im is not None:
            out.append(Cutout(im, stamp_noun(p), "stamps", p.relative_to(root).as_posix()))
    return out


# Sample photos that are not study photos (chelsea, coffee, rocket, astronaut, grass, ... are left out).
PHOTOS = {"china.jpg": "temple", "flower.jpg": "flower", "camera.png": "man with a camera",
          "coins.png": "pile of coins", "retina.jpg": "retina"}


def load_photos() -> list[tuple[Image.Image, str]]:
    """Non-study sample photos as RGB with their nouns (backdrops and a few captioned crops)."""
    import skimage
    import sklearn.datasets

    sk = Path(skimage.__file__).parent / "data"
    skl = Path(sklearn.datasets.__file__).parent / "images"
    return [(Image.open(sk / n if (sk / n).is_file() else skl / n).convert("RGB"), c) for n, c in PHOTOS.items()]


def signature(im: Image.Image) -> np.ndarray:
    """A 24x24 grey thumbnail of the image on white, zero-mean and unit-norm: near-copies correlate > 0.9."""
    rgba = im.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    a = np.asarray(flat.convert("L").resize((24, 24), Image.BILINEAR), np.float32).ravel()
    a = a - a.mean()
    return a / (np.linalg.norm(a) + 1e-6)


def drop_study_photos(cutouts: list[Cutout], study: list[Image.Image], limit: float = 0.9) -> tuple[list[Cutout], list[str]]:
    """The cut-outs that are not near-copies of a study photo (mirrored too), and the keys of those that are."""
    refs = np.stack([signature(s) for im in study for s in (im, im.transpose(Image.FLIP_LEFT_RIGHT))])
    keep, dropped = [], []
    for c in cutouts:
        (dropped if float((refs @ signature(c.image)).max()) > limit else keep).append(c)
    return keep, [c.key for c in dropped]


def study_photos(pairs_dir: Path) -> list[Image.Image]:
    """Every scene / instance photo under data/pairs (the masks cut the instance out as the pool's cut-outs are)."""
    out = []
    for photo in sorted(p for p in pairs_dir.glob("*/*") if p.stem in ("scene", "instance")):
        im = Image.open(photo).convert("RGBA")
        mask = photo.with_name("instance_mask.png")
        if photo.stem == "instance" and mask.is_file():
            im.putalpha(Image.open(mask).convert("L").resize(im.size))
        out.append(trim(im) or im)
        out.append(Image.open(photo).convert("RGBA"))
    return out
