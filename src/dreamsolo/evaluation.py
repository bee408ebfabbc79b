"""The `evaluate` stage: score a pair's samples against its two references, then aggregate."""

from __future__ import annotations

import dataclasses

from dreamsolo.config import Study
from dreamsolo.io import atomic_file, write_json
from dreamsolo.layout import pair_report, prepared_dir, samples_dir


def evaluate_stage(study: Study, pair_id: str | None) -> dict:
    import pandas as pd
    from PIL import Image

    from dreamsolo import tracking
    from dreamsolo.metrics.aggregate import pair_summary
    from dreamsolo.metrics.evaluators import load_evaluators
    from dreamsolo.metrics.score import diversity, preservation, score_samples
    from dreamsolo.models.loading import device

    assert pair_id is not None
    pair = study.pair(pair_id)
    folder = samples_dir(study, pair_id)
    manifest_path = folder / "manifest.csv"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"evaluate@{pair_id}: {manifest_path.relative_to(study.root)} is missing")
    manifest = pd.read_csv(manifest_path)
    images = [Image.open(folder / f).convert("RGB") for f in manifest["file"]]
    refs = prepared_dir(study, pair_id)
    instance_ref = Image.open(refs / "instance.png").convert("RGB")
    scene_ref = Image.open(refs / "scene.png").convert("RGB")
    ev = load_evaluators(study.evaluate, device(), study.root)
    params = {"pair": pair_id, "category": pair.category, **dataclasses.asdict(study.evaluate)}
    with tracking.stage_run(study.root, "evaluate", params, pair=pair_id, warning=ev.warning) as run:
        bs = study.evaluate.batch_size
        scored = score_samples(manifest, images, instance_ref, scene_ref, ev, bs)
        div = diversity(scored, images, ev, bs)
        summary = pair_summary(scored, div, preservation(scored), pair_id, pair.category, ev)
        scored.insert(0, "category", pair.category)
        scored.insert(0, "pair", pair_id)
        json_path, csv_path = pair_report(study, pair_id)
        with atomic_file(csv_path) as tmp:
            scored.to_csv(tmp, index=False)
        write_json(json_path, summary)
        run.table(scored, "samples_metrics.json")
        run.table(div, "diversity.json")
        run.metrics({f"{m}_mean": s["mean"] for m, s in summary["metrics"].items() if s["n"]})
        run.metrics({f"{m}_mean": summary[m]["mean"] for m in ("div", "pres") if summary[m]["n"]})
        run.artifact(json_path)
    return summary
