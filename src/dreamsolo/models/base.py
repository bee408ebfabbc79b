"""The `base` stage: the preset's pipeline, written once to models/base/<preset>."""

from __future__ import annotations

import dataclasses

from dreamsolo.config import Study
from dreamsolo.io import atomic_dir
from dreamsolo.layout import base_dir


def base_stage(study: Study, _item: str | None = None) -> None:
    from dreamsolo import tracking
    from dreamsolo.models.loading import materialise_base, write_info

    params = {"preset": study.preset_name, **dataclasses.asdict(study.preset)}
    with tracking.stage_run(study.root, "base", params) as run, atomic_dir(base_dir(study)) as tmp:
        info = materialise_base(study.preset, tmp, study.root, f"presets.{study.preset_name}")
        write_info(tmp, info)
        run.dict(info, "base.json")
