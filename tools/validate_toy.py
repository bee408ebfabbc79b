"""Validate the toy world's evaluators and base model on what their training never saw; write the record.

    python tools/validate_toy.py --pool build/toy/pool.npz --model data/base/toy --out data/evaluators
    python tools/validate_toy.py --pool build/toy/pool.npz --model build/toy/M --out build/eval_M \
        --grid build/eval_M/toy_classes.png         # a candidate model, judged by the shipped evaluators

Writes <out>/validation.json (every figure beside its chance level and the same figure with random
weights), <out>/heldout.npz (a seeded sample of the held-out pictures tests/test_evaluators.py re-scores) and the
class grid of the base model's class-prompt samples (docs/img/toy_classes.png). One thread by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def class_samples(model: Path, seeds: int):
    """The base model's samples of the 11 class prompts, as the study's priors make them (params.yaml's
    priors settings capped by the preset: DPM-Solver++ steps, guidance, seed + i)."""
    from dreamsolo.config import load_study
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.sampling import generate, use_fast_sampler
    from dreamsolo.toyworld.validate import STUDY_CLASSES, class_prompt

    study = load_study(ROOT)
    pipe = load_pipeline(model)
    use_fast_sampler(pipe)
    labels = [c for c in STUDY_CLASSES for _ in range(seeds)]
    images = generate(pipe, [class_prompt(c) for c in labels], [study.priors.seed + i for i in range(seeds)] * len(STUDY_CLASSES),
                      steps=study.priors.steps, guidance_scale=study.priors.guidance_scale,
                      guidance_rescale=study.priors.guidance_rescale,
                      resolution=study.preset.resolution, batch_size=8, desc="class samples")
    return images, labels, {"steps": study.priors.steps, "guidance_scale": study.priors.guidance_scale,
                           "guidance_rescale": study.priors.guidance_rescale, "seeds": seeds}


def study_photos():
    """The 16 study photos as the prepare stage crops them, labelled with their pair's class nouns."""
    from dreamsolo.config import load_study
    from dreamsolo.images import load_image, prepare_image

    study = load_study(ROOT)
    images, labels, names = [], [], []
    for pid, pair in study.pairs.items():
        for role, cls in (("scene", pair.scene_class), ("instance", pair.instance_class)):
            photo = next(p for p in sorted((ROOT / "data/pairs" / pid).glob(f"{role}.*")))
            images.append(prepare_image(load_image(photo, 1024)[0], study.preset.resolution, "center", 64)[0])
            labels.append(study.class_noun(cls))
            names.append(f"{pid}/{photo.name}")
    return images, labels, names


def grid(images, columns: int, path: Path) -> None:
    from PIL import Image

    size = images[0].width
    out = Image.new("RGB", (size * columns, size * (len(images) // columns)))
    for i, im in enumerate(images):
        out.paste(im, (size * (i % columns), size * (i // columns)))
    out.save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=ROOT / "data/base/toy")
    ap.add_argument("--evaluators", type=Path, default=ROOT / "data/evaluators", help="toy-clip / toy-dino weights")
    ap.add_argument("--out", type=Path, default=ROOT / "data/evaluators", help="validation.json and heldout.npz")
    ap.add_argument("--grid", type=Path, default=ROOT / "docs/img/toy_classes.png")
    ap.add_argument("--seeds", type=int, default=8, help="class-prompt samples per class (the study's priors: 8)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    for folder in (a.out, a.grid.parent):
        folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from dreamsolo.metrics.clip import load_clip
    from dreamsolo.metrics.dino import TOY_DINO, load_dino
    from dreamsolo.toyworld import validate as v
    from dreamsolo.toyworld.pool import load_pool

    pool = load_pool(a.pool)
    rows, classes = v.heldout(pool)
    clip = {"trained": load_clip("toy-clip", str(a.evaluators / "toy-clip.safetensors")), "random": load_clip("toy-clip", None)}
    dino = {"trained": load_dino(TOY_DINO, str(a.evaluators / "toy-dino.safetensors")), "random": load_dino(TOY_DINO, False)}
    cutouts = {c: len({pool.keys[r] for r in rows if pool.classes[r] == c and pool.keys[r]}) for c in v.STUDY_CLASSES}
    report: dict = {"heldout": {"pictures": len(rows), "classes": len(classes), "split": pool.counts["heldout_split"],
                                "study_cutouts": {c: n for c, n in cutouts.items() if n}}}  # the drawn ones aside
    report["clip_heldout"] = {k: v.clip_on_pool(ev, pool, rows, classes) for k, ev in clip.items()}
    report["dino_heldout"] = {k: v.retrieval(ev, pool, rows) for k, ev in dino.items()}
    samples, labels, how = class_samples(a.model, a.seeds)
    grid(samples, a.seeds, a.grid)
    report["clip_class_samples"] = {"sampling": how, **{k: v._brief(v.zero_shot(ev, samples, labels, list(v.STUDY_CLASSES)))
                                                         for k, ev in clip.items()}}
    photos, photo_labels, names = study_photos()
    report["clip_study_photos"] = {}
    for k, ev in clip.items():
        res = v.zero_shot(ev, photos, photo_labels, list(v.STUDY_CLASSES))
        report["clip_study_photos"][k] = {**v._brief(res), "predicted": dict(zip(names, res["predicted"]))}
    (a.out / "validation.json").write_text(json.dumps(report, indent=1) + "\n")
    keep = v.test_sample(pool)
    np.savez_compressed(a.out / "heldout.npz", images=pool.images[keep], classes=np.array([pool.classes[r] for r in keep]),
                        keys=np.array([pool.keys[r] for r in keep]), captions=np.array([pool.captions[r] for r in keep]))
    print(json.dumps({k: report[k] for k in ("clip_heldout", "dino_heldout")}, indent=1))
    print(json.dumps({k: {s: r["top1"] for s, r in report[k].items() if s != "sampling"}
                      for k in ("clip_class_samples", "clip_study_photos")}))


if __name__ == "__main__":
    main()
