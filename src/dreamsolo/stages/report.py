"""DVC stage `report`: study summary, tables, plots and page; the same numbers go to DVC and MLflow."""

from __future__ import annotations

import json

from dreamsolo.config import Study
from dreamsolo.layout import pair_json


def run(study: Study, _item: str | None = None) -> dict:
    import pandas as pd

    from dreamsolo import tracking
    from dreamsolo.metrics.aggregate import study_summary
    from dreamsolo.report import build_report

    pair_dicts = []
    for pid in study.pairs:
        path = pair_json(study.root, pid)
        if not path.is_file():
            raise FileNotFoundError(f"report: {path.relative_to(study.root)} is missing (run evaluate@{pid})")
        pair_dicts.append(json.loads(path.read_text()))
    summary = study_summary(pair_dicts)
    params = {"pairs": list(study.pairs), "preset": study.preset_name}
    with tracking.stage_run(study.root, "report", params, warning=summary.get("warning")) as run_:
        paths = build_report(study.root, list(study.pairs), summary)
        table = pd.read_csv(paths["pairs_csv"])
        run_.table(table, "pairs_table.json")  # the eight-pair LPIPS / CLIP-T (and every other metric) table
        metrics = json.loads(paths["metrics_json"].read_text())
        run_.metrics(report_metrics(metrics))
        for name, path in paths.items():
            run_.artifact(path, artifact_folder(name))
        if summary.get("warning"):  # shown at the top of the run page, not only among the tags
            run_.tags({"mlflow.note.content": f"⚠ {summary['warning']}"})
    return summary


def report_metrics(metrics: dict) -> dict[str, float]:
    """The report run's MLflow metrics from reports/metrics.json: `<m>` (study mean over pairs),
    `base_<m>` and `delta_<m>` (the floor and the gain over it) - the same numbers, flattened."""
    out = {}
    for prefix, block in (("", metrics), ("base_", metrics.get("base") or {}), ("delta_", metrics.get("delta") or {})):
        out.update({f"{prefix}{k}": v for k, v in (block.get("overall") or {}).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def artifact_folder(name: str) -> str | None:
    """Where a build_report() artifact goes in the run: grids/, grids/base/, plots/, compare/ or the top."""
    for prefix, folder in (("gridbase_", "grids/base"), ("grid_", "grids"), ("plot_", "plots"),
                           ("compare_", "compare")):
        if name.startswith(prefix):
            return folder
    return None
