"""DVC stage `prepare@<pair>`: check the pair folders against params, then write the prepared photos."""

from __future__ import annotations

from dreamsolo.config import Study
from dreamsolo.images import check_pair_folders, prepare_pair
from dreamsolo.layout import raw_pairs_dir


def run(study: Study, pair_id: str | None) -> None:
    from dreamsolo import tracking

    assert pair_id is not None
    pair = study.pair(pair_id)
    check_pair_folders(raw_pairs_dir(study.root), study.pairs)
    params = {"pair": pair_id, "category": pair.category, "resolution": study.preset.resolution,
              "crop": study.prepare.crop, "min_size": study.prepare.min_size}
    with tracking.stage_run(study.root, "prepare", params, pair=pair_id) as run_:
        out = prepare_pair(study.root, pair_id, study.preset.resolution, study.prepare.crop,
                           study.prepare.min_size)
        run_.artifact(out)
