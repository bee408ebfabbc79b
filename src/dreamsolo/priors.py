"""The `generate_priors` stage: class images of the base model, once per class, with their latents."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.io import atomic_dir
from dreamsolo.layout import base_dir, priors_dir
from dreamsolo.prompts import class_prompt


def generate_priors(study: Study, class_id: str | None) -> Path:
    import torch
    from safetensors.torch import save_file

    from dreamsolo import tracking
    from dreamsolo.models.loading import device
    from dreamsolo.sampling import (dtype_name, encode_latents, generate, load_for_sampling, sampling_dtype,
                                    save_images)

    assert class_id is not None
    noun = study.class_noun(class_id)
    cfg = study.priors
    prompt = class_prompt(noun)
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    dtype = sampling_dtype(cfg.precision, device(), "priors")  # a setting this device can't run stops here
    params = {"class": class_id, "prompt": prompt, "preset": study.preset_name, **dataclasses.asdict(cfg)}
    out = priors_dir(study, class_id)
    with tracking.stage_run(study.root, "generate_priors", params, item=class_id) as run, atomic_dir(out) as tmp:
        run.tags({"class": class_id, "dtype": dtype_name(dtype)})
        pipe = load_for_sampling(base_dir(study), dtype)
        with torch.inference_mode():
            images = generate(pipe, [prompt] * len(seeds), seeds, steps=cfg.steps,
                              guidance_scale=cfg.guidance_scale, resolution=study.preset.resolution,
                              batch_size=cfg.batch_size, desc=f"priors {class_id}")
            latents = encode_latents(pipe.vae, images, cfg.batch_size)
        files = save_images(images, tmp)
        save_file(latents, tmp / "latents.safetensors")
        manifest = {"class": class_id, "prompt": prompt, "seeds": seeds, "files": files, **params,
                    "dtype": dtype_name(dtype)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        run.artifact(tmp / "manifest.json")
        run.artifact(tmp / files[0], "examples")
    return out
