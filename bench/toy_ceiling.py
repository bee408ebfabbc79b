"""What the toy CLIP reads on the pool's own pictures of the 11 study classes: the ceiling a toy model's
class-prompt samples can reach when judged by it (issue 24's fourth point asks >= 0.80).

    python bench/toy_ceiling.py --pool build/toy/pool.npz [--model data/base/toy] [--per-class 64]

For each study class, pool pictures captioned exactly with its class prompt (`a photo of a cat`: the
prompt the priors sample) are scored zero-shot over the 11 class prompts, as tools/validate_toy.py scores
the model's samples, twice: as drawn, and after a round trip through the model's VAE (encode, decode: the
best a sample can look through that decoder). Separately for pictures the CLIP trained on and held-out
ones. Prints a JSON record; one thread by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=ROOT / "data/base/toy")
    ap.add_argument("--clip", type=Path, default=ROOT / "data/evaluators/toy-clip.safetensors")
    ap.add_argument("--per-class", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import numpy as np
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image

    torch.set_num_threads(a.threads)
    from dreamsolo.metrics.clip import load_clip
    from dreamsolo.toyworld import validate as v
    from dreamsolo.toyworld.pool import load_pool

    pool = load_pool(a.pool)
    clip = load_clip("toy-clip", str(a.clip))
    vae = AutoencoderKL.from_pretrained(a.model / "vae").eval()
    rng = np.random.default_rng(0)
    classes = list(v.STUDY_CLASSES)

    @torch.inference_mode()
    def round_trip(rows: np.ndarray) -> list[Image.Image]:
        x = torch.from_numpy(pool.images[rows]).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        y = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(im) for im in y]

    record: dict = {"model_vae": str(a.model.relative_to(ROOT) if a.model.is_relative_to(ROOT) else a.model)}
    for split, held in (("clip_trained_on", False), ("held_out", True)):
        rows, labels = [], []
        for c in classes:
            prompt = v.class_prompt(c)
            mine = [i for i, cap in enumerate(pool.captions)
                    if cap == prompt and pool.classes[i] == c and bool(pool.heldout[i]) == held]
            pick = rng.choice(mine, min(a.per_class, len(mine)), replace=False) if mine else []
            rows += list(pick)
            labels += [c] * len(pick)
        rows_a = np.array(rows)
        record[split] = {}
        trip = [im for k in range(0, len(rows_a), 64) for im in round_trip(rows_a[k:k + 64])]
        for how, images in (("as_drawn", v.pictures(pool, rows_a)), ("vae_round_trip", trip)):
            res = v.zero_shot(clip, images, labels, classes)
            record[split][how] = {"top1": res["top1"], "n": res["n"], "per_class": res["per_class"]}
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
