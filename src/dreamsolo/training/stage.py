"""The `train_scene` and `train_instance` stages: wire params and paths into the training loop."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.io import atomic_file
from dreamsolo.paths import inside
from dreamsolo.layout import SUBDIR, Stage, base_dir, checkpoint_dir, model_dir, prepared_dir, priors_dir
from dreamsolo.prompts import class_prompt, instance_prompt, scene_prompt


def stage_inputs(study: Study, pair_id: str, stage: Stage):
    from dreamsolo.training.loop import StageInputs

    pair = study.pair(pair_id)
    prepared = prepared_dir(study, pair_id)
    scene_noun, inst_noun = study.class_noun(pair.scene_class), study.class_noun(pair.instance_class)
    ckpt = checkpoint_dir(study, pair_id, stage)
    if stage == "train_scene":
        return StageInputs(
            init_dir=base_dir(study), out_dir=model_dir(study, pair_id, stage), ckpt_dir=ckpt,
            image=prepared / "scene.png", prompt=scene_prompt(study.prompts, scene_noun),
            prior_latents=priors_dir(study, pair.scene_class) / "latents.safetensors",
            prior_prompt=class_prompt(scene_noun),
        )
    replay = study.train(pair_id, stage).replay_weight > 0
    return StageInputs(
        init_dir=model_dir(study, pair_id, "train_scene"), out_dir=model_dir(study, pair_id, stage),
        ckpt_dir=ckpt, image=prepared / "instance.png", prompt=instance_prompt(study.prompts, inst_noun),
        prior_latents=priors_dir(study, pair.instance_class) / "latents.safetensors",
        prior_prompt=class_prompt(inst_noun),
        replay_image=prepared / "scene.png" if replay else None,
        replay_prompt=scene_prompt(study.prompts, scene_noun) if replay else None,
    )


def train_pair(study: Study, pair_id: str | None, stage: Stage) -> dict:
    from dreamsolo import tracking
    from dreamsolo.tracking_weights import log_weights
    from dreamsolo.training.loop import train_stage

    assert pair_id is not None
    cfg = study.train(pair_id, stage)
    inp = stage_inputs(study, pair_id, stage)
    init_marker = inp.init_dir / ("dreamsolo_model.json" if (inp.init_dir / "dreamsolo_model.json").is_file()
                                  else "model_index.json")
    for f in (inp.image, inp.prior_latents, init_marker):
        if not f.is_file():
            raise FileNotFoundError(f"{stage}@{pair_id}: input {f.relative_to(study.root)} is missing")
    params = {"pair": pair_id, "category": study.pair(pair_id).category, "preset": study.preset_name,
              "prompt": inp.prompt, "prior_prompt": inp.prior_prompt, "replay_prompt": inp.replay_prompt,
              **dataclasses.asdict(cfg)}
    with tracking.stage_run(study.root, stage, params, pair=pair_id) as run:
        summary = train_stage(inp, cfg, log=lambda step, m: run.metrics(m, step=step),
                              desc=f"{SUBDIR[stage]} {pair_id}")
        run.metrics({"seconds": summary["seconds"], "s_per_step": summary["s_per_step"]})
        log_copy = inside(study.root, Path("reports/train") / pair_id / f"{SUBDIR[stage]}.csv")
        with atomic_file(log_copy) as tmp:  # a DVC plots file: `dvc plots show` draws the losses
            shutil.copyfile(inp.out_dir / "train_log.csv", tmp)
        run.artifact(inp.out_dir / "train_log.csv")
        run.artifact(inp.out_dir / "train_meta.json")
        log_weights(run, study.root, inp.out_dir, study.tracking.log_weights)
        run.tags({"weights": str(inp.out_dir.relative_to(study.root))})
    return summary
