"""Start-up speed-ups for stage processes, kept apart from the library: the warm stage server
(`server`: on a CPU box a stage runs in a fork of a process that has imported torch & co. once) and
the forked MLflow logger (`logger`: MLflow's import and store set-up overlap the stage's work).

One switch, `DREAMSOLO_WARM=0`, turns both off. Neither changes what a stage writes (tests/test_warm.py);
only `dreamsolo.stages.stage_main` calls in here, and no library module reads this package's state.
"""

from __future__ import annotations

from dreamsolo.warm.client import enabled, handoff, switched_on

__all__ = ["enabled", "handoff", "start_logger", "switched_on"]


def start_logger(uri: str):
    """Fork the MLflow logger now, before torch is imported (forking after it is unsafe); None where
    it cannot or should not fork (then `tracking` logs in-process)."""
    from dreamsolo.warm.logger import Worker

    return Worker.start(uri)
