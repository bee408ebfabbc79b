"""Class-prompt recognition of a toy model by the toy CLIP, per sampler setting (guidance, guidance_rescale).

    python bench/guidance_probe.py --model data/base/toy --seeds 4 7.5:0 7.5:0.7 4:0.7

Each setting samples the 11 study class prompts x `--seeds` seeds as the priors do (DPM-Solver++, the
priors' steps, the study's initial latents) and prints the toy CLIP's zero-shot top-1 over the 11 classes,
overall and per class; a grid per setting goes to --out. guidance_rescale is Lin et al. (WACV 2024)'s fix
for the over-saturation classifier-free guidance gives under a zero-terminal-SNR schedule (the toy's).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tools"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("settings", nargs="+", help="guidance:rescale, e.g. 7.5:0 4:0.7")
    ap.add_argument("--model", type=Path, default=ROOT / "data/base/toy")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12, help="the toy priors' DPM-Solver++ steps")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/guidance_probe")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    torch.set_num_threads(a.threads)
    import validate_toy as vt
    from dreamsolo.metrics.clip import load_clip
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.sampling import generate, use_fast_sampler
    from dreamsolo.toyworld import validate as v

    pipe = load_pipeline(a.model)
    use_fast_sampler(pipe)
    clip = load_clip("toy-clip", str(ROOT / "data/evaluators/toy-clip.safetensors"))
    labels = [c for c in v.STUDY_CLASSES for _ in range(a.seeds)]
    prompts, seeds = [v.class_prompt(c) for c in labels], list(range(a.seeds)) * len(v.STUDY_CLASSES)
    a.out.mkdir(parents=True, exist_ok=True)
    for spec in a.settings:
        guidance, rescale = map(float, spec.split(":"))
        with torch.inference_mode():
            images = generate(pipe, prompts, seeds, steps=a.steps, guidance_scale=guidance, guidance_rescale=rescale,
                              resolution=64, batch_size=8, desc=spec)
        res = v.zero_shot(clip, images, labels, list(v.STUDY_CLASSES))
        print(spec, res["top1"], res["per_class"], flush=True)
        vt.grid(images, a.seeds, a.out / f"{a.model.name}_{guidance}_{rescale}.png")


if __name__ == "__main__":
    main()
