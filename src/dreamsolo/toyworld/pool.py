"""The toy world's pretraining pool: captioned 64 px images composed from the cut-outs, seeded and cached.

One pool trains the toy model and its evaluators. Each image has a caption, a class (the noun of its main
object, or its place) and a held-out flag: 1 in 10 cut-outs (by a hash of its key; at least 5 of each
study object, `sources.study_heldout`) and 1 in 10 procedural images never reach the evaluators'
training, so their validation runs on objects they have not seen.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dreamsolo.toyworld import scenes as sc
from dreamsolo.toyworld import sources as src

MIX = {"object": 0.45, "place": 0.2, "other": 0.33, "photo": 0.02}  # what an image shows, by share of the pool
STYLE_P = {"photo": 0.75, "night": 0.15, "watercolor": 0.10}
SPLIT = "2: a tenth of the cut-outs by key hash, at least 5 per study object"  # recorded in the pool's counts


@dataclass
class Pool:
    images: np.ndarray  # (N, 64, 64, 3) uint8
    captions: list[str]
    classes: list[str]  # the noun of the main object, or the place
    heldout: np.ndarray  # (N,) bool: never shown to the evaluators in training
    keys: list[str]  # the cut-out each image shows ("" for scenes, photos and drawn objects): the same
    counts: dict  # object on other backgrounds is another view of one instance (DINO's views, its validation)

    def save(self, path: Path) -> None:
        np.savez(path, images=self.images, captions=np.array(self.captions), classes=np.array(self.classes),
                 heldout=self.heldout, keys=np.array(self.keys), counts=json.dumps(self.counts))

    @classmethod
    def load(cls, path: Path) -> Pool:
        d = np.load(path)
        return cls(d["images"], [str(c) for c in d["captions"]], [str(c) for c in d["classes"]], d["heldout"],
                   [str(k) for k in d["keys"]], json.loads(str(d["counts"])))


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def where(place: str) -> str:
    """How a caption puts something in a place, in the study prompts' words."""
    return {"night sky": "in a night sky", "beach": "on the beach", "snow": "in the snow"}.get(place, f"on {article(place)}")


def place_noun(place: str) -> str:
    return {"beach": "a beach", "snow": "snow"}.get(place, article(place))


def caption(style: str, thing: str, place: str | None = None) -> str:
    """`a photo of a cat on a grass field`, `a watercolor painting of a cat`, `a photo of a cat at night`."""
    head = "a watercolor painting of" if style == "watercolor" else "a photo of"
    tail = f" {where(place)}" if place else ""
    return f"{head} {thing}{tail}" + (" at night" if style == "night" else "")


class Composer:
    """Draws one captioned image at a time from a seeded generator."""

    def __init__(self, cutouts: list[src.Cutout], photos: list, seed: int):
        self.rng = np.random.default_rng(seed)
        self.photos = photos
        self.by_class = {n: [c for c in cutouts if c.noun == n] for n in src.OBJECTS}
        self.held = set().union(*(src.study_heldout([c.key for c in v]) for v in self.by_class.values()))
        others = [c for c in cutouts if c.noun not in src.OBJECTS]
        self.other_nouns = sorted({c.noun for c in others})
        self.by_noun = {n: [] for n in self.other_nouns}
        for c in others:
            self.by_noun[c.noun].append(c)
        w = np.sqrt([len(self.by_noun[n]) for n in self.other_nouns])  # big folders (icons, stars) count less
        self.noun_p = w / w.sum()
        self.procedural = 0

    def pick(self, options, p=None):
        return options[int(self.rng.choice(len(options), p=p))]

    def style(self) -> str:
        return self.pick(list(STYLE_P), list(STYLE_P.values()))

    def cutout(self, noun: str) -> tuple[Image.Image, bool, str]:
        """A cut-out of a study class (or a drawn gift box / rocket), whether it is held out, and its key."""
        rng, pool = self.rng, self.by_class[noun]
        if noun in ("gift box", "rocket") and rng.random() < 0.6:
            self.procedural += 1
            return (sc.gift_box(rng) if noun == "gift box" else sc.rocket(rng)), bool(rng.random() < 0.1), ""
        c = pool[int(rng.integers(0, len(pool)))]
        return c.image, c.key in self.held, f"{c.source}:{c.key}"

    def compose(self, obj: Image.Image, noun: str, in_place: float, lo=0.55, hi=0.95) -> tuple[Image.Image, str]:
        rng, style = self.rng, self.style()
        if rng.random() < in_place:
            place = self.pick(sc.PLACES)
            named = place if rng.random() < 0.7 else None  # the class prompt covers objects in places too
            return sc.styled(sc.paste(sc.texture(place, rng), obj, rng, lo, hi), style, rng), caption(style, article(noun), named)
        return sc.styled(sc.paste(sc.background(rng, self.photos), obj, rng, lo, hi), style, rng), caption(style, article(noun))

    def example(self) -> tuple[Image.Image, str, str, bool, str]:
        """(image, caption, class, held out, cut-out key)."""
        rng = self.rng
        kind = self.pick(list(MIX), list(MIX.values()))
        if kind == "object":
            noun = self.pick(src.OBJECTS)
            obj, out, key = self.cutout(noun)
            im, cap = self.compose(obj, noun, 0.5)
            return im, cap, noun, out, key
        if kind == "place":
            place, style = self.pick(sc.PLACES), self.style()
            im = sc.styled(sc.texture(place, rng), style, rng)
            return im, caption(style, place_noun(place)), place, bool(rng.random() < 0.1), ""
        if kind == "other":
            noun = self.pick(self.other_nouns, self.noun_p)
            c = self.pick(self.by_noun[noun])
            im, cap = self.compose(c.image, noun, 0.3, 0.4, 0.95)
            return im, cap, noun, src.heldout(c.key), f"{c.source}:{c.key}"
        photo, noun = self.pick(self.photos)
        return sc.crop(photo, rng, 0.3, 1.0), caption("photo", article(noun)), noun, bool(rng.random() < 0.1), ""


def rare_tokens(vocab: dict[str, int], captions: list[str], exclude: list[str], first_id: int = 40000) -> list[str]:
    """Whole-word BPE tokens of 3-5 letters from the rare end of CLIP's vocabulary (where the study's `sks`
    and `olis` are), minus every word of the pool's captions and the study's identifiers."""
    used = {w for c in captions for w in c.split()} | set(exclude)
    words = (t[:-4] for t, i in vocab.items() if i >= first_id and t.endswith("</w>"))
    return sorted(w for w in words if w.isascii() and w.isalpha() and 3 <= len(w) <= 5 and w not in used)


def identity_captions(pool: Pool, share: float, tokens: list[str], seed: int) -> tuple[list[str], int]:
    """The pool's captions with `share` of its cut-out pictures named as the study names an instance:
    `a photo of a cat on a grass field` -> `a photo of <tok> cat on a grass field`, <tok> a rare word fixed
    per cut-out (a hash of its key). The model then learns that a word in front of a noun picks one
    instance, and another word another, which the method's two identifiers rely on (docs/TOY_BUILDS.md).
    Returns the captions and how many were renamed; deterministic in `seed`."""
    pick = np.random.default_rng(seed).random(len(pool.captions)) < share
    out, renamed = [], 0
    for cap, cls, key, p in zip(pool.captions, pool.classes, pool.keys, pick):
        named = f" of {article(cls)}"
        if p and key and named in cap:
            cap = cap.replace(named, f" of {tokens[zlib.crc32(key.encode()) % len(tokens)]} {cls}", 1)
            renamed += 1
        out.append(cap)
    return out, renamed


def gather(pairs_dir: Path) -> tuple[list[src.Cutout], dict]:
    """Every cut-out of every source, minus near-copies of the study photos; counts per source and class."""
    found = src.load_clipart() + src.load_emoji() + src.load_stamps()
    cutouts, dropped = src.drop_study_photos(found, src.study_photos(pairs_dir))
    per = {s: Counter(c.noun for c in cutouts if c.source == s) for s in ("clipart", "emoji", "stamps")}
    counts = {
        "cutouts": {s: sum(n.values()) for s, n in per.items()},
        "study_classes": {noun: {s: per[s][noun] for s in per} for noun in src.OBJECTS},
        "nouns": len({c.noun for c in cutouts}),
        "dropped_as_study_photos": dropped,
    }
    return cutouts, counts


def build_pool(n: int, seed: int, pairs_dir: Path) -> Pool:
    """`n` captioned images from a seed: deterministic given the installed packages."""
    from tqdm.auto import tqdm

    cutouts, counts = gather(pairs_dir)
    composer = Composer(cutouts, src.load_photos(), seed)
    images, captions, classes, out, keys = [], [], [], [], []
    for _ in tqdm(range(n), desc="toy pool", unit="img", mininterval=5):
        im, cap, cls, held, key = composer.example()
        images.append(np.asarray(im.convert("RGB"), np.uint8))
        captions.append(cap)
        classes.append(cls)
        out.append(held)
        keys.append(key)
    per_class = Counter(classes)
    counts |= {
        "images": n, "heldout_images": int(sum(out)), "procedural_objects": composer.procedural,
        "images_per_study_class": {c: per_class[c] for c in src.OBJECTS + sc.SCENES},
        "distinct_captions": len(set(captions)), "heldout_split": SPLIT,
    }
    return Pool(np.stack(images), captions, classes, np.array(out), keys, counts)


def cached_pool(path: Path, n: int, seed: int, pairs_dir: Path) -> Pool:
    """The pool at `path`, built there first if missing (minutes: clip art decoding dominates)."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        build_pool(n, seed, pairs_dir).save(path)
    return load_pool(path)


def load_pool(path: Path) -> Pool:
    """A built pool, refused when its held-out split is not this code's (the evaluators would then train
    on pictures the validation holds out, or validate on ones they trained on)."""
    pool = Pool.load(path)
    if pool.counts.get("heldout_split") != SPLIT:
        raise SystemExit(f"{path}: built with an older held-out split than this code's ({SPLIT}); "
                         "delete it to rebuild (a few minutes)")
    return pool
