"""DVC stage `generate_priors@<class>`: class images of the base model, once per class, with their latents."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.files import atomic_dir
from dreamsolo.layout import base_dir, priors_dir
from dreamsolo.prompts import class_prompt


def run(study: Study, class_id: str | None) -> Path:
    from dreamsolo import tracking
    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, encode_latents, load_for_sampling, sample_images, sampling_dtype

    assert class_id is not None
    cfg = study.priors
    prompt = class_prompt(study.class_noun(class_id))
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    dtype = sampling_dtype(cfg.precision, device(), "priors")  # a setting this device can't run stops here
    params = {"class": class_id, "prompt": prompt, "preset": study.preset_name, **dataclasses.asdict(cfg)}
    out = priors_dir(study.root, class_id)
    with tracking.stage_run(study.root, "generate_priors", params, item=class_id) as run_:
        run_.tags({"class": class_id, "dtype": dtype_name(dtype)})
        pipe = load_for_sampling(base_dir(study.root, study.preset_name), dtype)
        images = sample_images(pipe, [prompt] * len(seeds), seeds, cfg, study.preset.resolution, f"priors {class_id}")
        latents = encode_latents(pipe.vae, images, cfg.batch_size)
        with atomic_dir(out) as tmp:  # only now: a kill -9 while sampling leaves no temporary folder (as sample's)
            _write(tmp, images, latents, class_id, prompt, seeds, params, dtype_name(dtype), run_, str(pipe.device))
    return out


def _write(tmp: Path, images, latents, class_id: str, prompt: str, seeds: list[int], params: dict, dtype: str,
           run_, device: str) -> None:
    from safetensors.torch import save_file

    from dreamsolo.machine import record
    from dreamsolo.sampling import save_images

    files = save_images(images, tmp)
    save_file(latents, tmp / "latents.safetensors")
    manifest = {"class": class_id, "prompt": prompt, "seeds": seeds, "files": files, **params, "dtype": dtype,
                "machine": record(device)}  # what of the machine still shapes these bytes (dreamsolo.machine)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    run_.artifact(tmp / "manifest.json")
    run_.artifact(tmp / files[0], "examples")
