"""Validation of the toy world's evaluators and model, on data their training never saw.

- CLIP, zero-shot top-1: on the pool's held-out images over the pool's classes, and over the 11 study
  classes; on the base model's class-prompt samples over the 11 study classes (the toy model judged by
  the toy CLIP); on the 16 study photos (real photos: the domain gap the clip-art pool leaves).
- DINO, instance retrieval: does a held-out picture's nearest neighbour (cosine) among all held-out
  pictures show the same cut-out (on another background, place, size or style)? Then class k-NN.
Each figure comes with its chance level; the tests compare shipped weights against random ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from dreamsolo.toyworld.pool import Pool, article, place_noun
from dreamsolo.toyworld.scenes import PLACES, SCENES
from dreamsolo.toyworld.sources import OBJECTS

STUDY_CLASSES = OBJECTS + SCENES  # the nouns of params.yaml's 11 classes


def class_prompt(noun: str) -> str:
    """The prompt a class is named by: the study's class prompt (`a photo of a cat`)."""
    return f"a photo of {place_noun(noun) if noun in PLACES else article(noun)}"


def zero_shot(clip, images: Sequence[Image.Image], labels: Sequence[str], classes: Sequence[str],
              batch_size: int = 64) -> dict:
    """Top-1 of `images` among `classes` by cosine to each class prompt, overall and per class."""
    text = clip.text_embeddings([class_prompt(c) for c in classes])
    img = clip.image_embeddings(list(images), batch_size)
    pred = [classes[i] for i in (img @ text.T).argmax(1).tolist()]
    hit = np.array([p == t for p, t in zip(pred, labels)])
    per_class = {c: round(float(hit[[t == c for t in labels]].mean()), 3) for c in classes if c in labels}
    return {"top1": round(float(hit.mean()), 4), "n": len(labels), "classes": len(classes),
            "chance": round(1 / len(classes), 4), "per_class": per_class, "predicted": pred}


def heldout(pool: Pool, min_count: int = 5, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Held-out rows whose class has >= min_count held-out pictures (a seeded subset of `limit`), and those classes."""
    rows = np.flatnonzero(pool.heldout)
    count: dict[str, int] = {}
    for r in rows:
        count[pool.classes[r]] = count.get(pool.classes[r], 0) + 1
    classes = sorted(c for c, n in count.items() if n >= min_count)
    keep = set(classes)
    rows = np.array([r for r in rows if pool.classes[r] in keep])
    if limit is not None and len(rows) > limit:
        rows = np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))
    return rows, classes


def pictures(pool: Pool, rows: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(pool.images[r]) for r in rows]


def test_sample(pool: Pool, per_study_class: int = 40, others: int = 400, seed: int = 0) -> np.ndarray:
    """Held-out rows the tests re-score (data/evaluators/heldout.npz): up to `per_study_class` of each
    study class and `others` of the remaining classes, seeded."""
    rows, _ = heldout(pool)
    rng = np.random.default_rng(seed)
    pick: list[int] = []
    for c in STUDY_CLASSES:
        mine = [r for r in rows if pool.classes[r] == c]
        pick += rng.choice(mine, min(per_study_class, len(mine)), replace=False).tolist() if mine else []
    rest = [r for r in rows if pool.classes[r] not in STUDY_CLASSES]
    pick += rng.choice(rest, min(others, len(rest)), replace=False).tolist()
    return np.unique(np.array(pick))


def clip_on_pool(clip, pool: Pool, rows: np.ndarray, classes: list[str]) -> dict:
    """Zero-shot over the pool's classes, and over the study classes on the held-out pictures of those."""
    labels = [pool.classes[r] for r in rows]
    everything = zero_shot(clip, pictures(pool, rows), labels, classes)
    study = [r for r in rows if pool.classes[r] in STUDY_CLASSES]
    study_result = zero_shot(clip, pictures(pool, np.array(study)), [pool.classes[r] for r in study], list(STUDY_CLASSES))
    return {"pool_classes": _brief(everything), "study_classes": _brief(study_result)}


def _brief(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "predicted"}


@torch.inference_mode()
def retrieval(dino, pool: Pool, rows: np.ndarray, batch_size: int = 64) -> dict:
    """Instance retrieval and class 1-NN among held-out pictures, by cosine of DINO embeddings."""
    emb = dino.image_embeddings(pictures(pool, rows), batch_size)
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    nn_ = sim.argmax(1).tolist()
    keys = [pool.keys[r] for r in rows]
    queries = [i for i, k in enumerate(keys) if k and keys.count(k) > 1]
    same_object = np.mean([keys[nn_[i]] == keys[i] for i in queries]) if queries else float("nan")
    same_class = np.mean([pool.classes[rows[nn_[i]]] == pool.classes[rows[i]] for i in range(len(rows))])
    # chance of a same-object neighbour: the mean share of other pictures that show the query's cut-out
    chance = np.mean([(keys.count(keys[i]) - 1) / (len(keys) - 1) for i in queries]) if queries else float("nan")
    return {"same_object_top1": round(float(same_object), 4), "queries": len(queries),
            "same_object_chance": round(float(chance), 4), "same_class_1nn": round(float(same_class), 4),
            "n": len(rows)}
