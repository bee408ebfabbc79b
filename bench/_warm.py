"""Prototype of a warm stage server, to measure what it would gain: `python bench/_warm.py [--no-mlflow] STAGE.py ARGS`.

Imports what every stage imports (torch, diffusers' pipeline, transformers, peft, mlflow, the library),
prints READY on stderr, waits for one line on stdin, then forks: the child runs the stage script as
`python STAGE.py ARGS` would, from already-imported modules. The time from the line to the stage's
first real work is what a thin client talking to such a server would wait (plus ~0.03 s of its own
interpreter start). The forked MLflow logger is not used (torch is already imported), so MLflow runs
in-process; --no-mlflow shows the cost of that. Bench-only; not a design for production as is.
"""

from __future__ import annotations

import os
import runpy
import sys
import time


def preload() -> None:
    import diffusers.optimization  # noqa: F401
    import mlflow  # noqa: F401
    import torch  # noqa: F401
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    import dreamsolo.cli  # noqa: F401
    import dreamsolo.priors  # noqa: F401
    import dreamsolo.samples  # noqa: F401
    import dreamsolo.training.loop  # noqa: F401
    import dreamsolo.training.stage  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401


if __name__ == "__main__":
    args = sys.argv[1:]
    no_mlflow = bool(args) and args[0] == "--no-mlflow"
    args = args[1:] if no_mlflow else args
    t0 = time.perf_counter()
    preload()
    print(f"READY {time.perf_counter() - t0:.2f}", file=sys.stderr, flush=True)
    sys.stdin.readline()
    pid = os.fork()
    if pid == 0:
        if no_mlflow:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            from _variant import no_mlflow as off

            off()
        sys.argv = args
        code = 0
        try:
            runpy.run_path(args[0], run_name="__main__")
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
