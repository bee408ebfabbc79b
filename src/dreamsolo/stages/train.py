"""DVC stages `train_scene@<pair>` (Stage I: the base model learns the scene as `<V> <scene class>`) and
`train_instance@<pair>` (Stage II: from Stage I's weights, the instance as `<S> <instance class>`)."""

from __future__ import annotations

import dataclasses
import shutil
from typing import TYPE_CHECKING

from dreamsolo.config import Study
from dreamsolo.distributed import world
from dreamsolo.files import atomic_file
from dreamsolo.layout import (SUBDIR, TrainStage, base_dir, checkpoint_dir, is_model, model_dir, prepared_dir,
                              priors_dir, train_log)
from dreamsolo.prompts import class_prompt, instance_prompt, scene_prompt

if TYPE_CHECKING:  # the stage script imports this module before the warm hand-off: no torch at import time
    from dreamsolo.training.inputs import StageInputs


def stage_inputs(study: Study, pair_id: str, stage: TrainStage) -> StageInputs:
    """Which weights the stage starts from, which photo and prompts it learns, where it writes."""
    from dreamsolo.training.inputs import StageInputs

    root, pair = study.root, study.pair(pair_id)
    prepared = prepared_dir(root, pair_id)
    scene_noun, inst_noun = study.class_noun(pair.scene_class), study.class_noun(pair.instance_class)
    common = dict(out_dir=model_dir(root, pair_id, stage), ckpt_dir=checkpoint_dir(root, pair_id, stage))
    if stage == "train_scene":
        return StageInputs(
            init_dir=base_dir(root, study.preset_name), image=prepared / "scene.png",
            prompt=scene_prompt(study.prompts, scene_noun),
            prior_latents=priors_dir(root, pair.scene_class) / "latents.safetensors",
            prior_prompt=class_prompt(scene_noun), **common,
        )
    replay = study.train(pair_id, stage).replay_weight > 0
    return StageInputs(
        init_dir=model_dir(root, pair_id, "train_scene"), image=prepared / "instance.png",
        prompt=instance_prompt(study.prompts, inst_noun),
        prior_latents=priors_dir(root, pair.instance_class) / "latents.safetensors",
        prior_prompt=class_prompt(inst_noun),
        replay_image=prepared / "scene.png" if replay else None,
        replay_prompt=scene_prompt(study.prompts, scene_noun) if replay else None, **common,
    )


def _check_inputs(study: Study, pair_id: str, stage: TrainStage, inp: StageInputs) -> None:
    missing = [f for f in (inp.image, inp.prior_latents) if not f.is_file()]
    missing += [] if is_model(inp.init_dir) else [inp.init_dir]
    if missing:
        raise FileNotFoundError(f"{stage}@{pair_id}: input {missing[0].relative_to(study.root)} is missing")


def run(study: Study, pair_id: str | None, stage: TrainStage) -> dict:
    from dreamsolo.machine import check_runnable

    assert pair_id is not None
    cfg = study.train(pair_id, stage)
    check_runnable(study, item=f"{stage}@{pair_id}")  # named as written, before a model or an MLflow run
    inp = stage_inputs(study, pair_id, stage)
    _check_inputs(study, pair_id, stage, inp)
    return train_logged(study, pair_id, stage, cfg, inp, train_log(study.root, pair_id, stage),
                        desc=f"{SUBDIR[stage]} {pair_id}")


def train_logged(study: Study, pair_id: str, stage: str, cfg, inp: StageInputs, log_csv, desc: str,
                 extra: dict | None = None, item: str | None = None, after=None) -> dict:
    """Train one stage inside its MLflow run: params, losses, the loss CSV for `dvc plots`, the weights.
    `after()`, if given, runs next in the same run and returns the folder that holds the stage's result
    (lora_merge trains into a scratch folder, then merges)."""
    from dreamsolo import tracking
    from dreamsolo.tracking.weights import log_weights
    from dreamsolo.training.loop import train_stage

    params = {"pair": pair_id, "category": study.pair(pair_id).category, "preset": study.preset_name,
              "prompt": inp.prompt, "prior_prompt": inp.prior_prompt, "replay_prompt": inp.replay_prompt,
              **(extra or {}), **dataclasses.asdict(cfg)}
    with tracking.stage_run(study.root, stage, params, pair=pair_id, item=item) as run_:
        summary = train_stage(inp, cfg, log=lambda step, m: run_.metrics(m, step=step), desc=desc)
        if not world().main:  # a data-parallel stage: rank 0 writes and logs
            return summary
        run_.metrics({k: summary[k] for k in ("seconds", "s_per_step", "resumed_from")})
        if "evaluation" in summary:  # which step the run stopped at, and why (the adaptive rule's record)
            run_.metrics({"stopped_at": summary["evaluation"]["stopped_at"]})
            run_.tags({"stop_reason": summary["evaluation"]["reason"]})
        out = after() if after is not None else inp.out_dir
        with atomic_file(log_csv) as tmp:  # `dvc plots show` draws the losses
            shutil.copyfile(out / "train_log.csv", tmp)
        run_.artifact(out / "train_log.csv")
        run_.artifact(out / "train_meta.json")
        log_weights(run_, study.root, out, study.tracking.log_weights)
        run_.tags({"weights": str(out.relative_to(study.root)), **({"arm": extra["arm"]} if extra else {})})
    return summary
