"""The `sample` stage (the pair's prompt set from Stage II weights) and ad-hoc sampling for the CLI."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.io import atomic_dir
from dreamsolo.layout import model_dir, samples_dir
from dreamsolo.prompts import pair_prompts

MANIFEST = ["file", "kind", "prompt", "prompt_clean", "seed"]


def sample_pair(study: Study, pair_id: str | None) -> Path:
    import torch

    from dreamsolo import tracking
    from dreamsolo.models.loading import device, load_pipeline
    from dreamsolo.sampling import generate, save_images, use_fast_sampler

    assert pair_id is not None
    pair = study.pair(pair_id)
    cfg = study.sample
    rows = pair_prompts(study.prompts, study.class_noun(pair.scene_class), study.class_noun(pair.instance_class))
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    jobs = [(r, s) for r in rows for s in seeds]
    weights = model_dir(study, pair_id, "train_instance")
    params = {"pair": pair_id, "preset": study.preset_name, **dataclasses.asdict(cfg),
              "prompts": [r.prompt for r in rows]}
    out = samples_dir(study, pair_id)
    with tracking.stage_run(study.root, "sample", params, pair=pair_id) as run, atomic_dir(out) as tmp:
        pipe = load_pipeline(weights).to(device())
        use_fast_sampler(pipe)
        with torch.inference_mode():
            images = generate(pipe, [r.prompt for r, _ in jobs], [s for _, s in jobs], steps=cfg.steps,
                              guidance_scale=cfg.guidance_scale, resolution=study.preset.resolution,
                              batch_size=cfg.batch_size, desc=f"sample {pair_id}")
        files = save_images(images, tmp)
        with open(tmp / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST)
            for name, (r, s) in zip(files, jobs):
                w.writerow([name, r.kind, r.prompt, r.prompt_clean, s])
        run.artifact(tmp / "manifest.csv")
        grid = _grid(images, cols=cfg.num_images)
        grid.save(tmp / "grid.png")
        run.artifact(tmp / "grid.png")
    return out


def _grid(images, cols: int):
    from PIL import Image

    w, h = images[0].size
    rows = (len(images) + cols - 1) // cols
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid


def adhoc(study: Study, pair_id: str, prompt: str, *, n: int, seed: int, stage: str = "instance",
          out: str | None = None) -> list[Path]:
    """Images for a free prompt with <S>/<V> replaced by the pair's identifiers; never touches data/."""
    import torch

    from dreamsolo.models.loading import device, load_pipeline
    from dreamsolo.sampling import generate, use_fast_sampler

    study.pair(pair_id)
    if n <= 0:
        raise ValueError(f"--n must be > 0, got {n}")
    text = prompt.replace("<S>", study.prompts.instance_token).replace("<V>", study.prompts.scene_token)
    weights = model_dir(study, pair_id, "train_scene" if stage == "scene" else "train_instance")
    folder = Path(out) if out else study.root / "samples-adhoc" / pair_id
    folder.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(weights).to(device())
    use_fast_sampler(pipe)
    cfg = study.sample
    with torch.inference_mode():
        images = generate(pipe, [text] * n, [seed + i for i in range(n)], steps=cfg.steps,
                          guidance_scale=cfg.guidance_scale, resolution=study.preset.resolution,
                          batch_size=cfg.batch_size, desc="dreamsolo sample")
    paths = []
    for i, im in enumerate(images):
        p = folder / f"seed{seed + i:05d}.png"
        im.save(p)
        paths.append(p)
    return paths
