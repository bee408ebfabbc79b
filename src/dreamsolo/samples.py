"""The `sample` stage (the pair's prompt set from Stage II weights), the `sample_base` stage (the same
prompts and seeds from the base model: the floor that fine-tuning is measured against) and ad-hoc
sampling for the CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.io import atomic_dir
from dreamsolo.layout import base_dir, model_dir, samples_dir
from dreamsolo.paths import check_id, inside
from dreamsolo.prompts import pair_prompts

MANIFEST = ["file", "kind", "prompt", "prompt_clean", "seed"]


def samples_base_dir(study: Study, pair_id: str) -> Path:
    """data/samples_base/<pair>/: the base model on the pair's prompt set (same manifest format)."""
    return inside(study.root, Path("data/samples_base") / check_id("pair", pair_id))


def sample_pair(study: Study, pair_id: str | None) -> Path:
    """`sample@<pair>`: the pair's prompt set from its Stage II weights."""
    assert pair_id is not None
    return _sample(study, pair_id, "sample", model_dir(study, pair_id, "train_instance"),
                   samples_dir(study, pair_id))


def sample_base_pair(study: Study, pair_id: str | None) -> Path:
    """`sample_base@<pair>`: the same prompts and seeds from the base model (no fine-tuning).

    Reads only the base model, `sample.*`, `prompts` and the pair's two class nouns, so it never
    reruns when training changes; `evaluate@<pair>` scores it with the same evaluators."""
    assert pair_id is not None
    return _sample(study, pair_id, "sample_base", base_dir(study), samples_base_dir(study, pair_id))


def _sample(study: Study, pair_id: str, stage: str, weights: Path, out: Path) -> Path:
    """N images per prompt of the pair's prompt set from `weights`, in batches, plus manifest and grid."""
    import torch

    from dreamsolo import tracking
    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, generate, load_for_sampling, sampling_dtype, save_images

    pair = study.pair(pair_id)
    cfg = study.sample
    dtype = sampling_dtype(cfg.precision, device(), "sample")  # a setting this device can't run stops here
    rows = pair_prompts(study.prompts, study.class_noun(pair.scene_class), study.class_noun(pair.instance_class))
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    jobs = [(r, s) for r in rows for s in seeds]
    params = {"pair": pair_id, "preset": study.preset_name, **dataclasses.asdict(cfg),
              "prompts": [r.prompt for r in rows]}
    if stage != "sample":
        params["weights"] = str(weights.relative_to(study.root))
    with tracking.stage_run(study.root, stage, params, pair=pair_id) as run, atomic_dir(out) as tmp:
        pipe = load_for_sampling(weights, dtype)
        with torch.inference_mode():
            images = generate(pipe, [r.prompt for r, _ in jobs], [s for _, s in jobs], steps=cfg.steps,
                              guidance_scale=cfg.guidance_scale, resolution=study.preset.resolution,
                              batch_size=cfg.batch_size, desc=f"{stage} {pair_id}")
        files = save_images(images, tmp)
        with open(tmp / "manifest.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST)
            for name, (r, s) in zip(files, jobs):
                w.writerow([name, r.kind, r.prompt, r.prompt_clean, s])
        info = _sampling_info(study, weights, dtype_name(dtype), pipe)
        (tmp / "sampling.json").write_text(json.dumps(info, indent=2) + "\n")
        run.tags({"weights": info["weights"], "dtype": info["dtype"]})
        run.artifact(tmp / "manifest.csv")
        run.artifact(tmp / "sampling.json")
        grid = _grid(images, cols=cfg.num_images)
        grid.save(tmp / "grid.png")
        run.artifact(tmp / "grid.png")  # one row per prompt, one column per seed (the UI previews it)
    return out


def _sampling_info(study: Study, weights: Path, dtype: str, pipe) -> dict:
    """How the folder's images were made, beyond params.yaml: the sampler and dtype that ran, and where."""
    import torch

    return {"weights": str(weights.relative_to(study.root)), "sampler": type(pipe.scheduler).__name__,
            **dataclasses.asdict(study.sample), "resolution": study.preset.resolution, "dtype": dtype,
            "device": str(pipe.device), "torch": torch.__version__}


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
    """Images for a free prompt with <S>/<V> replaced by the pair's identifiers; never touches data/ or models/.

    Files are named `<prompt slug>-seed<seed>.png` (another prompt never overwrites them); `adhoc.json` in
    the folder records, per file, the prompt actually used, its template, seed, weights and sampler settings.
    """
    import re

    study.pair(pair_id)  # an unknown pair fails here, before any heavy import
    if n <= 0:
        raise ValueError(f"--n must be > 0, got {n}")
    text = prompt.replace("<S>", study.prompts.instance_token).replace("<V>", study.prompts.scene_token)
    train_stage = "train_scene" if stage == "scene" else "train_instance"
    weights = model_dir(study, pair_id, train_stage)
    rel = str(weights.relative_to(study.root.resolve()))
    if not any((weights / f).is_file() for f in ("model_index.json", "dreamsolo_model.json")):
        raise FileNotFoundError(f"{rel} is missing: run `dvc repro {train_stage}@{pair_id}` first")
    folder = (Path(out) if out else study.root / "samples-adhoc" / pair_id).resolve()
    for top in ("data", "models"):  # DVC outputs: only stages write there
        if folder.is_relative_to((study.root / top).resolve()):
            raise ValueError(f"--out {folder} is inside the study's {top}/ (pipeline outputs); choose another folder")

    import torch

    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, generate, load_for_sampling, sampling_dtype

    cfg = study.sample
    dtype = sampling_dtype(cfg.precision, device(), "sample")
    pipe = load_for_sampling(weights, dtype)
    seeds = [seed + i for i in range(n)]
    with torch.inference_mode():
        images = generate(pipe, [text] * n, seeds, steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                          resolution=study.preset.resolution, batch_size=cfg.batch_size, desc="dreamsolo sample")
    folder.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].rstrip("-") or "prompt"
    record_file = folder / "adhoc.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    paths = []
    for s, im in zip(seeds, images):
        p = folder / f"{slug}-seed{s:05d}.png"
        im.save(p)
        paths.append(p)
        record[p.name] = {"prompt": text, "template": prompt, "seed": s, "pair": pair_id,
                          "weights": rel, "steps": cfg.steps,
                          "guidance_scale": cfg.guidance_scale, "resolution": study.preset.resolution,
                          "dtype": dtype_name(dtype)}
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    return paths
