"""Every MLflow call of the project. DVC owns lineage; MLflow owns run history.

Runs: one experiment per study; per pair a parent run `pair <id>` groups that pair's stage runs
(prepare, train_scene, train_instance, sample, evaluate); study-wide stages (base, priors, report)
are top-level runs. Every run is tagged with the pair, stage, DVC stage name, git commit and a hash
of its resolved params. A forced rerun of an unchanged stage marks the older run `superseded`.
"""

from dreamsolo.tracking.runs import (EXPERIMENT, KIND_TAG, VIEW, VIEW_TAG, NullRun, Run, dvc_stage_name,
                                      log_through, params_hash, stage_run, view_path)
from dreamsolo.tracking.server import (FALLBACK_ENV, TrackingLost, TrackingUnreachable, check_reachable,
                                        resolve_uri, tracking_uri)

__all__ = ["EXPERIMENT", "FALLBACK_ENV", "KIND_TAG", "VIEW", "VIEW_TAG", "NullRun", "Run", "TrackingLost",
           "TrackingUnreachable", "check_reachable", "dvc_stage_name", "log_through", "params_hash",
           "resolve_uri", "stage_run", "tracking_uri", "view_path"]
