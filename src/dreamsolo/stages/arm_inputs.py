"""DVC stage `arm_inputs`: what each pair's arm stages read of params and priors, resolved once into
data/arm_inputs/<pair>/ (prompts.json, train.json, the two classes' prior latents).

Why a stage: the arm stages are a DVC `matrix` over pairs x arms, and a matrix item cannot look up the
pair's class or category in params (iterative/dvc#10094). So they depend on these files instead, whose
bytes change exactly when the pair's merged settings, class nouns or priors do: a change to another
pair's category or another class's priors reruns this one cheap stage, and no arm."""

from __future__ import annotations

import dataclasses
import json
import shutil

from dreamsolo.config import Study
from dreamsolo.files import atomic_dir, write_json
from dreamsolo.layout import arm_inputs_dir, priors_dir
from dreamsolo.prompts import class_prompt, instance_prompt, pair_prompts, scene_prompt

PROMPTS = "prompts.json"
TRAIN = "train.json"
PRIOR = {"instance": "instance_prior.safetensors", "scene": "scene_prior.safetensors"}


def pair_inputs(study: Study, pair_id: str) -> tuple[dict, dict]:
    """(prompts.json, train.json) of one pair."""
    pair = study.pair(pair_id)
    scene, inst = study.class_noun(pair.scene_class), study.class_noun(pair.instance_class)
    rows = pair_prompts(study.prompts, scene, inst)
    prompts = {"pair": pair_id, "category": pair.category, "scene_noun": scene, "instance_noun": inst,
               "scene": scene_prompt(study.prompts, scene), "instance": instance_prompt(study.prompts, inst),
               "class_scene": class_prompt(scene), "class_instance": class_prompt(inst),
               "composed": next(r.prompt for r in rows if r.kind == "composed")}
    train = {stage: dataclasses.asdict(study.train(pair_id, stage)) for stage in ("train_scene", "train_instance")}
    return prompts, train


def run(study: Study, _item: str | None = None) -> None:
    from dreamsolo import tracking

    with tracking.stage_run(study.root, "arm_inputs", {"pairs": list(study.pairs)}) as run_:
        for pair_id, pair in study.pairs.items():
            prompts, train = pair_inputs(study, pair_id)
            with atomic_dir(arm_inputs_dir(study.root, pair_id)) as tmp:
                write_json(tmp / PROMPTS, prompts)
                write_json(tmp / TRAIN, train)
                for role, cls in (("instance", pair.instance_class), ("scene", pair.scene_class)):
                    src = priors_dir(study.root, cls) / "latents.safetensors"
                    if not src.is_file():
                        raise FileNotFoundError(f"arm_inputs: {src.relative_to(study.root)} is missing "
                                                f"(run generate_priors@{cls})")
                    shutil.copyfile(src, tmp / PRIOR[role])
        run_.tags({"pairs": ",".join(study.pairs)})


def read(study: Study, pair_id: str) -> tuple[dict, dict]:
    """(prompts.json, train.json) as written for this pair; stale against params.yaml = an error."""
    folder = arm_inputs_dir(study.root, pair_id)
    try:
        got = (json.loads((folder / PROMPTS).read_text()), json.loads((folder / TRAIN).read_text()))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder.relative_to(study.root)}/ is missing (run the arm_inputs stage)") from None
    want = json.loads(json.dumps(pair_inputs(study, pair_id)))  # tuples as lists, as the files hold them
    if list(got) != list(want):
        raise ValueError(f"{folder.relative_to(study.root)}/ is stale against params.yaml (run dvc repro arm_inputs)")
    return got
