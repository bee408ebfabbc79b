"""DVC stage `base`: the preset's pipeline, written once to models/base/<preset>."""

from __future__ import annotations

import dataclasses

from dreamsolo.config import Study
from dreamsolo.files import atomic_dir
from dreamsolo.layout import base_dir


def run(study: Study, _item: str | None = None) -> None:
    from dreamsolo import tracking
    from dreamsolo.models.sources import materialise_base, write_info

    params = {"preset": study.preset_name, **dataclasses.asdict(study.preset)}
    out = base_dir(study.root, study.preset_name)
    with tracking.stage_run(study.root, "base", params) as run_, atomic_dir(out) as tmp:
        info = materialise_base(study.preset, tmp, study.root, f"presets.{study.preset_name}")
        write_info(tmp, info)
        run_.dict(info, "base.json")
