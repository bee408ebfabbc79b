"""DVC stage `evaluate@<pair>`: score a pair's samples, and the base model's samples of the same prompts and
seeds (the floor), against the pair's two references with one set of evaluators; then aggregate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dreamsolo.config import Study
from dreamsolo.files import atomic_file, write_json
from dreamsolo.layout import (arm_csv, arm_json, arm_samples_dir, base_dir, pair_csv, pair_json, prepared_dir,
                              samples_dir)
from dreamsolo.metrics.pair_result import PairResult

SOURCE = "_source"  # temporary column: which sample set a row of the joint scoring came from


def read_samples(study: Study, folder: Path, what: str):
    """(manifest, RGB images) of a sample folder written by `sample` / `sample_base`."""
    import pandas as pd
    from PIL import Image

    manifest_path = folder / "manifest.csv"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{what}: {manifest_path.relative_to(study.root)} is missing")
    manifest = pd.read_csv(manifest_path)
    images = []
    for f in manifest["file"]:
        with Image.open(folder / f) as im:
            images.append(im.convert("RGB"))
    return manifest, images


def run(study: Study, pair_id: str | None) -> PairResult:
    assert pair_id is not None
    return _evaluate(study, pair_id, samples_dir(study.root, pair_id), pair_json(study.root, pair_id),
                     pair_csv(study.root, pair_id), pair_csv(study.root, pair_id, base=True), "evaluate")


def run_arm(study: Study, pair_id: str | None, arm: str | None = None) -> PairResult:
    """`evaluate_arm@<pair>-<arm>`: an arm's samples against the same references, evaluators and floor."""
    assert pair_id is not None and arm is not None
    return _evaluate(study, pair_id, arm_samples_dir(study.root, pair_id, arm), arm_json(study.root, pair_id, arm),
                     arm_csv(study.root, pair_id, arm), None, "evaluate_arm", item=f"{pair_id}-{arm}", arm=arm)


def _evaluate(study: Study, pair_id: str, tuned_dir: Path, json_path: Path, csv_path: Path, base_csv: Path | None,
              stage: str, item: str | None = None, arm: str | None = None) -> PairResult:
    import pandas as pd
    from PIL import Image

    from dreamsolo import tracking
    from dreamsolo.metrics.aggregate import pair_result, scores
    from dreamsolo.metrics.evaluators import load_evaluators
    from dreamsolo.metrics.checks import DRIFT
    from dreamsolo.metrics.score import diversity, drift_to_base, preservation, score_samples
    from dreamsolo.models.loading import device

    pair = study.pair(pair_id)
    where = f"{stage}@{item or pair_id}"
    tuned_m, tuned_i = read_samples(study, tuned_dir, where)
    base_m, base_i = read_samples(study, samples_dir(study.root, pair_id, base=True),
                                  f"{where} (run sample_base@{pair_id})")
    refs = prepared_dir(study.root, pair_id)
    instance_ref = Image.open(refs / "instance.png").convert("RGB")
    scene_ref = Image.open(refs / "scene.png").convert("RGB")
    ev = load_evaluators(study.evaluate, device(), study.root)
    base_model = str(base_dir(study.root, study.preset_name).relative_to(study.root))
    params = {"pair": pair_id, "category": pair.category, "base_model": base_model,
              **({"arm": arm} if arm else {}), **dataclasses.asdict(study.evaluate)}
    with tracking.stage_run(study.root, stage, params, pair=pair_id, warning=ev.warning, item=item,
                            receipt=True) as run_:
        bs = study.evaluate.batch_size
        # One pass over both sets: each reference and each distinct prompt is embedded once.
        joint = pd.concat([tuned_m.assign(**{SOURCE: "tuned"}), base_m.assign(**{SOURCE: "base"})],
                          ignore_index=True)
        scored_all = score_samples(joint, tuned_i + base_i, instance_ref, scene_ref, ev, bs)
        tuned_rows = (scored_all[SOURCE] == "tuned").to_numpy()
        scored = scored_all[tuned_rows].drop(columns=SOURCE).reset_index(drop=True)
        scored_base = scored_all[~tuned_rows].drop(columns=SOURCE).reset_index(drop=True)
        scored[DRIFT] = drift_to_base(tuned_m, tuned_i, base_m, base_i, ev, bs)  # for the method checks
        div = diversity(scored, tuned_i, ev, bs)
        div_base = diversity(scored_base, base_i, ev, bs)
        result = pair_result(scores(scored, div, preservation(scored)),
                             scores(scored_base, div_base, preservation(scored_base)),
                             pair_id, pair.category, ev, base_model)
        for table, path in ((scored, csv_path), (scored_base, base_csv)):
            if path is None:  # an arm: the floor's rows are evaluate@<pair>'s
                continue
            table.insert(0, "category", pair.category)
            table.insert(0, "pair", pair_id)
            with atomic_file(path) as tmp:
                table.to_csv(tmp, index=False)
        write_json(json_path, result.to_json())
        tables = {"samples_metrics.json": scored, "diversity.json": div}
        if base_csv is not None:
            tables.update({"samples_metrics_base.json": scored_base, "diversity_base.json": div_base})
        run_.tags({"evaluators": " · ".join(f"{k} {v}" for k, v in ev.names.items()), **({"arm": arm} if arm else {})})
        _log(run_, result, json_path, tables)
        if not arm:  # the method's numbers on the pair's parent run (an arm's would overwrite them)
            run_.parent_metrics(pair_metrics(result), {"warning": ev.warning or "none: every evaluator pretrained"})
    return result


def _log(run, result: PairResult, json_path: Path, tables: dict) -> None:
    """The pair's numbers in MLflow: per-sample and DIV tables (fine-tuned and base), the JSON, and flat
    metrics (`<m>_mean`, `base_<m>_mean`, `delta_<m>`: the same values as reports/pairs/<pair>.json)."""
    for name, table in tables.items():
        run.table(table, name)
    run.metrics(pair_metrics(result))
    run.artifact(json_path)
    if result.warning:  # shown at the top of the run page, not only among the tags
        run.tags({"mlflow.note.content": f"⚠ {result.warning}", "random_metrics": ",".join(result.random_metrics)})


def pair_metrics(result: PairResult) -> dict[str, float]:
    """Flat MLflow metrics of a pair result; missing (null) values are left out, never logged as NaN."""
    out = {}
    for prefix, scores in (("", result.tuned), ("base_", result.base)):
        stats = {**scores.metrics, "div": scores.div, "pres": scores.pres}
        out.update({f"{prefix}{m}_mean": s.mean for m, s in stats.items() if s.n})
    out.update({f"delta_{m}": v for m, v in result.delta.items() if v is not None})
    return out
