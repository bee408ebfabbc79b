"""One module per DVC stage, named after it; each `run(study, item)` is what `stages/<name>.py` calls
through `stage_main`. `sample` also holds the floor (`run_base`), `train` both training stages."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from dreamsolo.config import load_study
from dreamsolo.errors import one_line_errors
from dreamsolo.layout import repo_root


def stage_main(fn: Callable[..., object], name: str, key: str | None = None, *more: str) -> None:
    """Parse `--<key> ID` (and `--<more> ID`: an arm's stage takes --pair and --arm), load params, run one
    stage function; a user error exits 1 with one line."""
    from dreamsolo import devices, distributed, lifeline, tracking, warm

    lifeline.hold()  # stop with the `dvc repro` that started us, if it is killed alone
    with one_line_errors(name):
        distributed.relaunch(name)  # DREAMSOLO_NPROC=N: this process becomes `accelerate launch` of N
    warm.handoff()  # on a CPU box: the rest runs in an already-warm process (see dreamsolo.warm)
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"DVC stage `{name}`")
    if key:
        parser.add_argument(f"--{key}", required=True, dest="item")
    for k in more:
        parser.add_argument(f"--{k}", required=True)
    args = parser.parse_args()
    with one_line_errors(name):
        study = load_study(repo_root())
        # an unreachable tracking server stops the stage here, before the logger forks or any work
        if distributed.world().main:  # other ranks of a data-parallel stage log nothing
            tracking.log_through(warm.start_logger(tracking.resolve_uri(study.root)))
        devices.claim()  # DREAMSOLO_DEVICES: this stage's own device (after the logger's fork: it holds no lease)
        fn(study, getattr(args, "item", None), *(getattr(args, k) for k in more))
