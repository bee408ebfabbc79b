"""DVC stage `report`: study summary, tables, plots and page; the same numbers go to DVC and MLflow."""

from __future__ import annotations

import json

from dreamsolo.config import Study


def run(study: Study, _item: str | None = None) -> dict:
    import pandas as pd

    from dreamsolo import tracking
    from dreamsolo.metrics.aggregate import study_summary
    from dreamsolo.report import arms, build_report, findings
    from dreamsolo.report.tables import read_results

    results = read_results(study.root, list(study.pairs))  # typed; refuses a pair JSON without the floor
    summary = study_summary(results)
    params = {"pairs": list(study.pairs), "preset": study.preset_name, "arms": list(study.arms.run)}
    with tracking.stage_run(study.root, "report", params, warning=summary.get("warning"), receipt=True) as run_:
        paths = build_report(study.root, results, summary, study.arms.run)
        table = pd.read_csv(paths["pairs_csv"])
        run_.table(table, "pairs_table.json")  # the eight-pair LPIPS / CLIP-T (and every other metric) table
        metrics = json.loads(paths["metrics_json"].read_text())
        run_.metrics(report_metrics(metrics) | check_metrics(json.loads(paths["checks_json"].read_text())))
        run_.metrics(findings.mlflow_metrics(metrics["findings"]))  # the same numbers as findings.md
        run_.tags(findings.mlflow_tags(metrics["findings"]))
        if "arms" in metrics:  # the arms against the method: the same numbers as metrics.json's `arms`
            run_.metrics(arms.mlflow_metrics(metrics["arms"]))
            head, *rows = arms.delta_rows(metrics["arms"])
            run_.table(pd.DataFrame(rows, columns=head), "arms_vs_method.json")
        for name, path in paths.items():
            folder = str(path.parent.relative_to(study.root / "reports")) if name.startswith("gridarm_") else None
            run_.artifact(path, folder or artifact_folder(name))
        if summary.get("warning"):  # shown at the top of the run page, not only among the tags
            run_.tags({"mlflow.note.content": f"⚠ {summary['warning']}",
                       "random_metrics": ",".join(summary["random_metrics"])})
    return summary


def report_metrics(metrics: dict) -> dict[str, float]:
    """The report run's MLflow metrics from reports/metrics.json: `<m>` (study mean over pairs),
    `base_<m>` and `delta_<m>` (the floor and the gain over it) - the same numbers, flattened."""
    out = {}
    for prefix, block in (("", metrics), ("base_", metrics["base"]), ("delta_", metrics["delta"])):
        out.update({f"{prefix}{k}": v for k, v in block["overall"].items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def check_metrics(checks: dict) -> dict[str, float]:
    """The method checks as MLflow metrics, the same numbers as reports/checks.json's study block:
    `check_<name>_delta` (mean Δ over pairs) and `check_<name>_holds` (pairs where it holds)."""
    out = {}
    for name, c in checks["study"].items():
        if "delta" in c:
            out[f"check_{name}_delta"] = c["delta"]["mean"]
            out[f"check_{name}_holds"] = float(c["holds"])
        elif c.get("mean") is not None:
            out[f"check_{name}"] = c["mean"]
    return out


def artifact_folder(name: str) -> str | None:
    """Where a build_report() artifact goes in the run: grids/, grids/base/, plots/, compare/ or the top."""
    for prefix, folder in (("gridbase_", "grids/base"), ("grid_", "grids"), ("plot_", "plots"),
                           ("compare_", "compare")):
        if name.startswith(prefix):
            return folder
    return None
