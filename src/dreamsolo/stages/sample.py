"""DVC stages `sample@<pair>` (the pair's prompt set from its Stage II weights), `sample_base@<pair>`
(the same prompts and seeds from the base model: the floor that fine-tuning is measured against) and
`sample_arm@<pair>-<arm>` (the same from an arm's weights)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from dreamsolo import grids
from dreamsolo.config import Study
from dreamsolo.files import atomic_dir
from dreamsolo.layout import arm_inputs_dir, arm_model_dir, arm_samples_dir, base_dir, model_dir, samples_dir
from dreamsolo.prompts import pair_prompts

MANIFEST = ["file", "kind", "prompt", "prompt_clean", "seed"]


def run(study: Study, pair_id: str | None) -> Path:
    """`sample@<pair>`: the pair's prompt set from its Stage II weights."""
    assert pair_id is not None
    return _sample(study, pair_id, "sample", model_dir(study.root, pair_id, "train_instance"),
                   samples_dir(study.root, pair_id))


def run_base(study: Study, pair_id: str | None) -> Path:
    """`sample_base@<pair>`: the same prompts and seeds from the base model (no fine-tuning).

    Reads only the base model, `sample.*`, `prompts` and the pair's two class nouns, so it never
    reruns when training changes; `evaluate@<pair>` scores it with the same evaluators."""
    assert pair_id is not None
    return _sample(study, pair_id, "sample_base", base_dir(study.root, study.preset_name),
                   samples_dir(study.root, pair_id, base=True))


def run_arm(study: Study, pair_id: str | None, arm: str | None = None) -> Path:
    """`sample_arm@<pair>-<arm>`: the same prompts and seeds from an arm's weights. The class nouns come from
    data/arm_inputs/<pair>/prompts.json (a matrix stage cannot look them up in params)."""
    import json

    assert pair_id is not None and arm is not None
    prompts = json.loads((arm_inputs_dir(study.root, pair_id) / "prompts.json").read_text())
    return _sample(study, pair_id, "sample_arm", arm_model_dir(study.root, pair_id, arm),
                   arm_samples_dir(study.root, pair_id, arm), (prompts["scene_noun"], prompts["instance_noun"]),
                   item=f"{pair_id}-{arm}")


def _sample(study: Study, pair_id: str, stage: str, weights: Path, out: Path,
            nouns: tuple[str, str] | None = None, item: str | None = None) -> Path:
    """N images per prompt of the pair's prompt set from `weights`, in batches, plus manifest and grid."""
    from dreamsolo import tracking
    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, load_for_sampling, sample_images, sampling_dtype

    pair = study.pair(pair_id)
    cfg = study.sample
    dtype = sampling_dtype(cfg.precision, device(), "sample")  # a setting this device can't run stops here
    scene, inst = nouns or (study.class_noun(pair.scene_class), study.class_noun(pair.instance_class))
    rows = pair_prompts(study.prompts, scene, inst)
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    jobs = [(r, s) for r in rows for s in seeds]
    params = {"pair": pair_id, "preset": study.preset_name, **dataclasses.asdict(cfg),
              "prompts": [r.prompt for r in rows]}
    if stage != "sample":
        params["weights"] = str(weights.relative_to(study.root))
    with tracking.stage_run(study.root, stage, params, pair=pair_id, item=item) as run_:
        pipe = load_for_sampling(weights, dtype)
        images = sample_images(pipe, [r.prompt for r, _ in jobs], [s for _, s in jobs], cfg,
                               study.preset.resolution, f"{stage} {pair_id}")
        # the temporary folder only now: a kill -9 while sampling leaves none behind (issue 26: DVC's
        # run-cache restore, which runs no stage, would never have removed it)
        with atomic_dir(out) as tmp:
            _write_samples(study, weights, pipe, images, jobs, tmp, cfg.num_images, dtype_name(dtype), run_)
    return out


def _write_samples(study: Study, weights: Path, pipe, images, jobs, tmp: Path, cols: int, dtype: str, run_) -> None:
    """The images, manifest, sampling.json and grid of one sampling, into the stage's temporary folder."""
    from dreamsolo.sampling import save_images

    files = save_images(images, tmp)
    with open(tmp / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST)
        for name, (r, s) in zip(files, jobs):
            w.writerow([name, r.kind, r.prompt, r.prompt_clean, s])
    info = _sampling_info(study, weights, dtype, pipe)
    (tmp / "sampling.json").write_text(json.dumps(info, indent=2) + "\n")
    run_.tags({"weights": info["weights"], "dtype": info["dtype"]})
    run_.artifact(tmp / "manifest.csv")
    run_.artifact(tmp / "sampling.json")
    grids.sheet(images, cols=cols).save(tmp / "grid.png")
    run_.artifact(tmp / "grid.png")  # one row per prompt, one column per seed (the UI previews it)


def _sampling_info(study: Study, weights: Path, dtype: str, pipe) -> dict:
    """How the folder's images were made, beyond params.yaml: the sampler and dtype that ran, and where
    (`machine`: what of the machine still shapes the bytes; dvc.lock's hash of the folder covers it)."""
    import torch

    from dreamsolo.machine import record

    return {"weights": str(weights.relative_to(study.root)), "sampler": type(pipe.scheduler).__name__,
            **dataclasses.asdict(study.sample), "resolution": study.preset.resolution, "dtype": dtype,
            "device": str(pipe.device), "torch": torch.__version__, "machine": record(str(pipe.device))}
