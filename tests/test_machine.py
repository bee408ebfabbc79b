"""The same study on another machine (issue 26, point 7): what of the machine is recorded beside the
results, and how far a rerun's metrics may move (TOLERANCE, stated in docs/DESIGN.md, "The same study on
another machine").

Mutations tried:
- `machine.record` without `cpu_capability` or `threads`: test_the_record_names_what_shapes_the_bytes fails.
- TOLERANCE = 0.0005 fails test_a_rerun_elsewhere_moves_the_metrics_within_the_tolerance (read off its run,
  not rerun: the test takes 9 minutes on the shared box): the largest move measured was 0.00094 (delta.div; median over the 20-odd numbers 0.00015), 2026-12-03 on the
  2-core box; TOLERANCE = 0.01 leaves a 10x margin, and covers the 0.002 issue 26 saw on the toy study's
  checks between bf16 and fp32. Its "did not differ" assertion keeps the comparison from being vacuous.
"""

from __future__ import annotations

import json
import math

import pytest

from studykit import make_study, run_chain, torch_threads

TOLERANCE = 0.01  # absolute, on every per-pair metric mean and floor delta of reports/pairs/<pair>.json


def test_the_record_names_what_shapes_the_bytes():
    import torch

    from dreamsolo.machine import record

    rec = record("cpu")
    assert rec == {"torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads(),
                   "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with torch_threads(1):
        assert record("cpu")["threads"] == 1
    assert json.dumps(rec)  # it goes into sampling.json, the priors' manifest.json and train_meta.json


def _means(result: dict) -> dict[str, float]:
    out = {f"metrics.{k}": v["mean"] for k, v in result["metrics"].items()}
    out.update({f"delta.{k}": v for k, v in (result.get("delta") or {}).items() if isinstance(v, float)})
    out.update({k: result[k]["mean"] for k in ("div", "pres") if isinstance(result.get(k), dict)})
    return {k: v for k, v in out.items() if isinstance(v, float) and math.isfinite(v)}


def _study_run(tmp_path, name: str, threads: int, edits: dict) -> tuple[dict, str]:
    from dreamsolo.config import load_study

    root = make_study(tmp_path / name, ["cat_grass"], edits)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    try:
        with torch_threads(threads):
            run_chain(load_study(root), "cat_grass", through="evaluate")
    finally:
        mp.undo()
    digest = (root / "data/samples/cat_grass/0000.png").read_bytes().hex()
    return _means(json.loads((root / "reports/pairs/cat_grass.json").read_text())), digest


# What another x86-64 machine can change, at its largest on one box: the thread count (reductions in
# training's backward split differently) and, beyond what `auto` now does, a bf16 sampler (the old `auto`
# on CPUs with AVX512-BF16, and what `bf16` still selects).
OTHER = {"priors.precision": "bf16", "sample.precision": "bf16"}


@pytest.mark.e2e
def test_a_rerun_elsewhere_moves_the_metrics_within_the_tolerance(tmp_path):
    here, here_png = _study_run(tmp_path, "here", 2, {})
    there, there_png = _study_run(tmp_path, "there", 1, OTHER)
    assert here.keys() == there.keys() and len(here) > 10
    moved = {k: abs(here[k] - there[k]) for k in here}
    worst = max(moved, key=moved.get)
    assert here_png != there_png or any(moved.values()), "the two runs did not differ: nothing was compared"
    assert moved[worst] <= TOLERANCE, f"{worst} moved {moved[worst]:.4f} (> {TOLERANCE}); all: {moved}"
    print(f"largest move {worst} {moved[worst]:.5f}; median {sorted(moved.values())[len(moved) // 2]:.5f}")
