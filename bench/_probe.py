"""Run a stage script with timestamps on its phases: `python bench/_probe.py stages/X.py --pair P`.

An import hook wraps a few library and MLflow functions as their modules load (nothing is imported
early, so import order and cost stay the stage's own). Events go to $DREAMSOLO_PROBE_OUT as JSON,
wall-clock times; $DREAMSOLO_PROBE_T0 is the parent's time.time() just before it spawned us.
With $DREAMSOLO_PROBE_STOP=1 the process exits at the first real work (first training step or
first sampling call). Also records the resident set size (VmRSS, MiB) at each event.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import json
import os
import runpy
import signal
import sys
import time

PROBE_START = time.time()
EVENTS: list[dict] = []
OUT = os.environ.get("DREAMSOLO_PROBE_OUT")
STOP = os.environ.get("DREAMSOLO_PROBE_STOP") == "1"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dump() -> None:
    if OUT:
        with open(OUT, "w") as f:
            json.dump({"t0": float(os.environ.get("DREAMSOLO_PROBE_T0", PROBE_START)), "probe_start": PROBE_START,
                       "modules": sorted(m for m in sys.modules if "." not in m), "events": EVENTS}, f)


def event(name: str, start: float, end: float | None = None) -> None:
    EVENTS.append({"name": name, "start": start, "end": end if end is not None else start, "rss_mib": rss_mib()})


def timed(name: str, fn, first_work: bool = False):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if first_work and not any(e["name"] == "FIRST_WORK" for e in EVENTS):
            event("FIRST_WORK", time.time())
            if STOP:
                dump()
                worker = getattr(sys.modules.get("dreamsolo.tracking"), "_logger", None)
                if worker is not None:  # the forked MLflow logger would outlive os._exit
                    os.kill(worker.proc.pid, signal.SIGKILL)
                os._exit(0)
        t = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            event(name, t, time.time())
    return wrapper


def timed_cm(name: str, fn):
    """A @contextmanager function: time its __enter__ and __exit__ separately."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        cm = fn(*args, **kwargs)

        class Timed:
            def __enter__(self):
                t = time.time()
                value = cm.__enter__()
                event(f"{name} enter", t, time.time())
                return value

            def __exit__(self, *exc):
                t = time.time()
                out = cm.__exit__(*exc)
                event(f"{name} exit", t, time.time())
                return out
        return Timed()
    return wrapper


def patch(module, names: list[str], first_work: tuple[str, ...] = (), cm: tuple[str, ...] = ()) -> None:
    for n in names:
        if hasattr(module, n):
            setattr(module, n, timed(f"{module.__name__}.{n}", getattr(module, n), n in first_work))
    for n in cm:
        if hasattr(module, n):
            setattr(module, n, timed_cm(f"{module.__name__}.{n}", getattr(module, n)))


def _client(module) -> None:
    cls = module.MlflowClient
    for n in ("search_runs", "create_run", "set_terminated"):
        setattr(cls, n, timed(f"MlflowClient.{n}", getattr(cls, n)))


PATCHES = {
    "dreamsolo.config": lambda m: patch(m, ["load_study"]),
    "dreamsolo.tracking": lambda m: patch(m, ["git_commit", "check_reachable"], cm=("stage_run",)),
    "dreamsolo.models.loading": lambda m: patch(m, ["load_pipeline"]),
    "dreamsolo.training.loop": lambda m: patch(m, ["cache_inputs", "dreambooth_loss"], first_work=("dreambooth_loss",)),
    "dreamsolo.training.checkpoint": lambda m: patch(m, ["fingerprint", "latest"]),
    "dreamsolo.sampling": lambda m: patch(m, ["generate", "encode_latents"], first_work=("generate",)),
    "mlflow": lambda m: patch(m, ["set_tracking_uri", "set_experiment", "start_run", "log_params", "log_artifact"]),
    "mlflow.tracking.client": _client,
}
IMPORTS = ("torch", "diffusers", "transformers", "mlflow", "PIL", "yaml", "safetensors", "tqdm", "scipy",
           "peft", "accelerate", "open_clip", "sqlalchemy", "alembic", "torch._dynamo", "pandas")


class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES and name not in IMPORTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module):
            t = time.time()
            original(module)
            event(f"import {name}", t, time.time())
            if name in PATCHES:
                PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec


if __name__ == "__main__":
    sys.meta_path.insert(0, Hook())
    atexit.register(dump)
    script, sys.argv = sys.argv[1], sys.argv[1:]
    event("probe start", PROBE_START)
    runpy.run_path(script, run_name="__main__")
