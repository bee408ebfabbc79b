"""The toy world's shipped evaluators recognise what their training never saw (issue 24).

`data/evaluators/heldout.npz` holds held-out pool pictures (40 per study class, 400 of the others; see
tools/validate_toy.py): the pool's held-out tenth (at least 5 cut-outs of each study object), which neither
evaluator trained on. Each figure is checked against a floor that the same network with random weights does
not reach (measured 2026-12-04: toy CLIP study classes 0.85 vs random 0.09, pool classes 0.50 vs 0.05; toy
DINO class 1-NN 0.39 vs 0.28).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamsolo.metrics.clip import load_clip
from dreamsolo.metrics.dino import TOY_DINO, load_dino
from dreamsolo.toyworld.validate import STUDY_CLASSES, zero_shot

EVALUATORS = Path(__file__).resolve().parents[1] / "data/evaluators"


@pytest.fixture(scope="module")
def heldout() -> tuple[list[Image.Image], list[str]]:
    data = np.load(EVALUATORS / "heldout.npz")
    return [Image.fromarray(a) for a in data["images"]], [str(c) for c in data["classes"]]


@pytest.mark.parametrize("weights, floor", [("toy-clip.safetensors", True), (None, False)])
def test_toy_clip_names_held_out_pictures(heldout, weights, floor):
    images, labels = heldout
    clip = load_clip("toy-clip", str(EVALUATORS / weights) if weights else None)
    study = [i for i, c in enumerate(labels) if c in STUDY_CLASSES]
    on_study = zero_shot(clip, [images[i] for i in study], [labels[i] for i in study], list(STUDY_CLASSES))
    on_pool = zero_shot(clip, images, labels, sorted(set(labels)))
    assert on_study["chance"] == pytest.approx(1 / 11, abs=1e-3) and on_pool["classes"] > 100
    assert (on_study["top1"] >= 0.75 and on_pool["top1"] >= 0.42) == floor, (on_study["per_class"], on_pool["top1"])


@pytest.mark.parametrize("weights, floor", [("toy-dino.safetensors", True), (False, False)])
def test_toy_dino_neighbours_share_the_class(heldout, weights, floor):
    images, labels = heldout
    dino = load_dino(TOY_DINO, str(EVALUATORS / weights) if weights else False)
    emb = dino.image_embeddings(images, 64)
    sim = emb @ emb.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.argmax(1).tolist()
    one_nn = float(np.mean([labels[j] == labels[i] for i, j in enumerate(nearest)]))
    assert (one_nn >= 0.37) == floor, one_nn


def test_the_pair_json_and_report_name_the_evaluators_and_say_random():
    from dreamsolo.config import Evaluate
    from dreamsolo.metrics.evaluators import load_evaluators

    root = EVALUATORS.parents[1]
    toy = load_evaluators(Evaluate(clip_model="toy-clip", clip_pretrained="data/evaluators/toy-clip.safetensors",
                                   dino_model="toy-dino", dino_pretrained="data/evaluators/toy-dino.safetensors"),
                          root=root)
    assert toy.pretrained and toy.names == {"CLIP": "toy-clip (data/evaluators/toy-clip.safetensors)",
                                            "LPIPS": "alex (lpips package)",
                                            "DINO": "toy-dino (data/evaluators/toy-dino.safetensors)"}
    rand = load_evaluators(Evaluate(clip_model="toy-clip", clip_pretrained="random", dino_model="toy-dino",
                                    dino_pretrained="random"), root=root)
    assert rand.names["CLIP"] == "toy-clip (random)" and rand.names["DINO"] == "toy-dino (random)"
    assert rand.random_metrics and not rand.pretrained


def test_the_report_line_names_the_evaluators_once_or_per_pair():
    from types import SimpleNamespace as NS

    from dreamsolo.report.tables import evaluators_text

    toy = {"CLIP": "toy-clip (w)", "LPIPS": "alex (lpips package)", "DINO": "toy-dino (random)"}
    same = [NS(pair="a", evaluators=toy), NS(pair="b", evaluators=toy)]
    assert evaluators_text(same) == "Evaluators: CLIP toy-clip (w) · LPIPS alex (lpips package) · DINO toy-dino (random)."
    mixed = evaluators_text([*same, NS(pair="c", evaluators={})])
    assert mixed.startswith("Evaluators: a, b: CLIP toy-clip") and mixed.endswith("c: not recorded.")


def test_an_unknown_dino_model_is_one_line():
    with pytest.raises(ValueError, match=r"^evaluate.dino_model: 'vit_smal_patch16_224.dino' is not a timm model"):
        load_dino("vit_smal_patch16_224.dino", False)
