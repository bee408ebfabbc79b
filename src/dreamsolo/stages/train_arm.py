"""DVC stage `train_arm@<pair>-<arm>`: one alternative to the method on one pair (params `arms`), written to
models/<pair>/arms/<arm>/ and sampled and scored like the method's Stage II.

| arm | starts from | learns |
| --- | --- | --- |
| two_stage | Stage I | the instance with its priors (replay off) |
| composite | Stage I | as the method, plus the instance pasted into the scene with the composed prompt |
| masked | Stage I | as the method, the instance term weighted by the instance mask |
| joint | the base | both photos at once, each with its identifier prompt and class priors |
| lora_merge | the base | the instance (replay off); then merged with Stage I by a weighted sum |
| sine | Stage I | as the method, the instance term on random patches of the photo with their place (SINE) |

Every arm uses the pair's merged `train_instance` settings, so the comparison changes one thing at a time."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.errors import UserError
from dreamsolo.files import atomic_dir
from dreamsolo.layout import (arm_checkpoint_dir, arm_inputs_dir, arm_model_dir, arm_train_log, base_dir, model_dir,
                              prepared_dir)
from dreamsolo.stages import arm_inputs
from dreamsolo.stages.train import train_logged


class NoMask(UserError, FileNotFoundError):
    """An arm that needs the instance mask, on a pair without one."""


def _mask(study: Study, pair_id: str, arm: str) -> Path:
    path = prepared_dir(study.root, pair_id) / "instance_mask.png"
    if not path.is_file():
        raise NoMask(f"train_arm@{pair_id}-{arm}: data/pairs/{pair_id}/ has no instance mask, and the arm needs one "
                     "(no whole-photo fallback: it would make the arm the method). Add instance_mask.png beside the "
                     "instance photo (white = instance), or give the photo an alpha channel; tools/make_masks.py "
                     "draws the default pairs' masks")
    return path


def _stage_one_steps(study: Study, pair_id: str) -> int:
    """The optimizer steps Stage I ran (train_meta.json: fewer than set when an adaptive stop ended it)."""
    meta = model_dir(study.root, pair_id, "train_scene") / "train_meta.json"
    return int(json.loads(meta.read_text())["steps"])


def _latent_size(study: Study) -> int:
    """The latent side at the study's resolution: the VAE halves it once per block after the first."""
    vae = json.loads((base_dir(study.root, study.preset_name) / "vae" / "config.json").read_text())
    return study.preset.resolution // 2 ** (len(vae["block_out_channels"]) - 1)


def arm_setup(study: Study, pair_id: str, arm: str, scratch: Path):
    """(StageInputs, Train) of one arm; `scratch` holds what is made on the way (the composite)."""
    from PIL import Image

    from dreamsolo.masks import composite
    from dreamsolo.models.position import write_marker
    from dreamsolo.training.inputs import StageInputs
    from dreamsolo.training.patches import PatchSpec

    prompts, _ = arm_inputs.read(study, pair_id)
    cfg = study.train(pair_id, "train_instance")
    prepared, inputs = prepared_dir(study.root, pair_id), arm_inputs_dir(study.root, pair_id)
    stage_one = model_dir(study.root, pair_id, "train_scene")
    replay = cfg.replay_weight > 0
    common = dict(image=prepared / "instance.png", prompt=prompts["instance"],
                  prior_latents=inputs / arm_inputs.PRIOR["instance"], prior_prompt=prompts["class_instance"],
                  out_dir=arm_model_dir(study.root, pair_id, arm), ckpt_dir=arm_checkpoint_dir(study.root, pair_id, arm))
    as_method = dict(init_dir=stage_one, replay_image=prepared / "scene.png" if replay else None,
                     replay_prompt=prompts["scene"] if replay else None)
    if arm == "two_stage":
        return StageInputs(init_dir=stage_one, **common), dataclasses.replace(cfg, replay_weight=0.0)
    if arm == "masked":
        return StageInputs(**as_method, mask=_mask(study, pair_id, arm), **common), cfg
    if arm == "composite":
        mask = _mask(study, pair_id, arm)
        made = composite(*(Image.open(prepared / f) for f in ("instance.png", "scene.png")), Image.open(mask))
        made.save(scratch / "composite.png")
        return StageInputs(**as_method, composite_image=scratch / "composite.png", composite_prompt=prompts["composed"],
                           composite_weight=study.arms.composite.weight, keep=(scratch / "composite.png",),
                           **common), cfg
    if arm == "sine":  # as the method, the instance term on random patches, each with its place (training.patches)
        w, grid = study.arms.sine, 2 * _latent_size(study)  # SINE: 128 cells for 64 x 64 latents
        return StageInputs(**as_method, patches=PatchSpec(w.min_crop, w.max_crop, w.patches, grid),
                           keep=(write_marker(scratch, grid),), **common), cfg
    base = base_dir(study.root, study.preset_name)
    if arm == "joint":
        steps = _stage_one_steps(study, pair_id) + cfg.steps
        return StageInputs(init_dir=base, replay_image=prepared / "scene.png", replay_prompt=prompts["scene"],
                           replay_prior_latents=inputs / arm_inputs.PRIOR["scene"],
                           replay_prior_prompt=prompts["class_scene"], **common), \
            dataclasses.replace(cfg, replay_weight=1.0, steps=steps)
    if arm == "lora_merge":  # the instance half trains into scratch; the merge writes the arm's folder
        common["out_dir"] = scratch / "instance"
        return StageInputs(init_dir=base, **common), dataclasses.replace(cfg, replay_weight=0.0)
    raise ValueError(f"train_arm: unknown arm {arm!r}")


def run(study: Study, pair_id: str | None, arm: str | None = None) -> dict:
    assert pair_id is not None and arm is not None
    if arm not in study.arms.run:
        raise UserError(f"train_arm@{pair_id}-{arm}: {arm!r} is not in arms.run of params.yaml")
    with tempfile.TemporaryDirectory(prefix="dreamsolo-arm-") as tmp:
        scratch = Path(tmp)
        inp, cfg = arm_setup(study, pair_id, arm, scratch)
        final = arm_model_dir(study.root, pair_id, arm)
        after = (lambda: _merge(study, pair_id, scratch / "instance", final)) if arm == "lora_merge" else None
        extra = {"arm": arm, **({"composite_weight": inp.composite_weight} if inp.composite_image else {}),
                 **({"merge": dataclasses.asdict(study.arms.lora_merge)} if arm == "lora_merge" else {})}
        return train_logged(study, pair_id, "train_arm", cfg, inp, arm_train_log(study.root, pair_id, arm),
                            desc=f"{arm} {pair_id}", extra=extra, item=f"{pair_id}-{arm}", after=after)


def _merge(study: Study, pair_id: str, instance: Path, final: Path) -> Path:
    """models/<pair>/arms/lora_merge/: Stage I and the instance model merged, with the instance half's log."""
    from dreamsolo.training.merge import merge_models

    w = study.arms.lora_merge
    base = base_dir(study.root, study.preset_name)
    with atomic_dir(final) as tmp:
        method = merge_models(base, model_dir(study.root, pair_id, "train_scene"), instance,
                              w.scene_weight, w.instance_weight, tmp, final)
        shutil.copyfile(instance / "train_log.csv", tmp / "train_log.csv")
        meta = json.loads((instance / "train_meta.json").read_text())
        meta.update(init="(merged)", merge={"method": method, "scene": "../../scene", "instance": "trained from the base",
                                            "scene_weight": w.scene_weight, "instance_weight": w.instance_weight})
        (tmp / "train_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return final
