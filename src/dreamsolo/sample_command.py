"""`dreamsolo sample`: images of a trained pair for a free prompt, outside the pipeline's outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.layout import is_model, model_dir


def _folder(study: Study, pair_id: str, out: str | None) -> Path:
    folder = (Path(out) if out else study.root / "samples-adhoc" / pair_id).resolve()
    for top in ("data", "models"):  # DVC outputs: only stages write there
        if folder.is_relative_to((study.root / top).resolve()):
            raise ValueError(f"--out {folder} is inside the study's {top}/ (pipeline outputs); choose another folder")
    return folder


def adhoc(study: Study, pair_id: str, prompt: str, *, n: int, seed: int, stage: str = "instance",
          out: str | None = None) -> list[Path]:
    """Images for a free prompt with <S>/<V> replaced by the pair's identifiers; never touches data/ or models/.

    Files are named `<prompt slug>-seed<seed>.png` (another prompt never overwrites them); `adhoc.json` in
    the folder records, per file, the prompt actually used, its template, seed, weights and sampler settings.
    """
    study.pair(pair_id)  # an unknown pair fails here, before any heavy import
    if n <= 0:
        raise ValueError(f"--n must be > 0, got {n}")
    text = prompt.replace("<S>", study.prompts.instance_token).replace("<V>", study.prompts.scene_token)
    train_stage = "train_scene" if stage == "scene" else "train_instance"
    weights = model_dir(study.root, pair_id, train_stage)
    rel = str(weights.relative_to(study.root.resolve()))
    if not is_model(weights):
        raise FileNotFoundError(f"{rel} is missing: run `dvc repro {train_stage}@{pair_id}` first")
    folder = _folder(study, pair_id, out)

    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, load_for_sampling, sample_images, sampling_dtype

    cfg = study.sample
    dtype = sampling_dtype(cfg.precision, device(), "sample")
    pipe = load_for_sampling(weights, dtype)
    seeds = [seed + i for i in range(n)]
    images = sample_images(pipe, [text] * n, seeds, cfg, study.preset.resolution, "dreamsolo sample")
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].rstrip("-") or "prompt"
    record_file = folder / "adhoc.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    paths = []
    for s, im in zip(seeds, images):
        p = folder / f"{slug}-seed{s:05d}.png"
        im.save(p)
        paths.append(p)
        record[p.name] = {"prompt": text, "template": prompt, "seed": s, "pair": pair_id, "weights": rel,
                          "steps": cfg.steps, "guidance_scale": cfg.guidance_scale,
                          "guidance_rescale": cfg.guidance_rescale,
                          "resolution": study.preset.resolution, "dtype": dtype_name(dtype)}
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return paths
