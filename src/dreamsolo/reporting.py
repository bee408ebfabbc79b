"""The `report` stage: study summary, tables, plots and page; the same numbers go to DVC and MLflow."""

from __future__ import annotations

import json

from dreamsolo.config import Study
from dreamsolo.layout import pair_report


def report_stage(study: Study, _item: str | None = None) -> dict:
    import pandas as pd

    from dreamsolo import tracking
    from dreamsolo.metrics.aggregate import study_summary
    from dreamsolo.report import build_report

    pair_dicts = []
    for pid in study.pairs:
        path = pair_report(study, pid)[0]
        if not path.is_file():
            raise FileNotFoundError(f"report: {path.relative_to(study.root)} is missing (run evaluate@{pid})")
        pair_dicts.append(json.loads(path.read_text()))
    summary = study_summary(pair_dicts)
    params = {"pairs": list(study.pairs), "preset": study.preset_name}
    with tracking.stage_run(study.root, "report", params, warning=summary.get("warning")) as run:
        paths = build_report(study.root, list(study.pairs), summary)
        table = pd.read_csv(paths["pairs_csv"])
        run.table(table, "pairs_table.json")
        metrics = json.loads(paths["metrics_json"].read_text())
        run.metrics({k: v for k, v in metrics.get("overall", {}).items() if isinstance(v, (int, float))})
        for name, path in paths.items():
            folder = "grids" if name.startswith("grid_") else ("plots" if name.startswith("plot_") else None)
            run.artifact(path, folder)
    return summary
