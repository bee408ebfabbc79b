"""Run a stage with a proposed startup change applied from outside, to measure what it would gain.

    python bench/_variant.py [--no-mlflow] [--fast-exit] [--components] [--lazy-dynamo] stages/X.py --pair P

--no-mlflow   no MLflow at all (no forked logger, stage_run a no-op): what MLflow still costs the stage.
--lazy-dynamo no torch._dynamo import at start-up: diffusers.utils.torch_utils is imported while
              torch._dynamo is hidden (it falls back to a no-op `maybe_allow_in_graph`), and
              torch.compiler.disable, which diffusers.hooks uses as a decorator at import time,
              defers its `import torch._dynamo` to the decorated function's first call. Measured: not
              enough, peft -> transformers.generation -> masking_utils imports torch._dynamo too.
--components  load_pipeline loads UNet, VAE, CLIP text encoder, tokenizer and scheduler one by one
              instead of through StableDiffusionPipeline (whose module imports the single-file
              loaders, CLIP image processors, IP-adapter/LoRA mixins and every Karras scheduler,
              scipy.stats included); save_pretrained writes the UNet and copies the rest.
--fast-exit   when the stage function returns: atexit hooks, flush, os._exit(0) (no interpreter teardown).
Not for production: a bench-only what-if. It prints which heavy modules were imported at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import runpy
import shutil
import sys
from pathlib import Path


def lazy_dynamo() -> None:
    """torch.compiler.disable, used as a decorator at import time by diffusers.hooks, imports
    torch._dynamo at once; this version imports it at the decorated function's first call."""
    import functools

    import torch

    real = torch.compiler.disable

    def disable(fn=None, recursive=True, **kw):
        if fn is None:
            return functools.partial(disable, recursive=recursive, **kw)
        done = []

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not done:
                done.append(real(fn, recursive, **kw))
            return done[0](*args, **kwargs)
        return wrapper

    torch.compiler.disable = disable
    sys.modules["torch._dynamo"] = None  # diffusers.utils.torch_utils then keeps its no-op allow_in_graph
    try:
        import diffusers.utils.torch_utils  # noqa: F401
    finally:
        del sys.modules["torch._dynamo"]


def no_mlflow() -> None:
    import dreamsolo.tracking as tracking

    class Null:
        id = "none"

        def __getattr__(self, _name):
            return lambda *a, **k: None

    @contextlib.contextmanager
    def stage_run(*_a, **_k):
        yield Null()

    tracking.stage_run = stage_run
    tracking.start_worker = lambda root: None


class Parts:
    """The attributes train_stage uses of a StableDiffusionPipeline, loaded component by component."""

    def __init__(self, folder: Path, dtype) -> None:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        kw = dict(use_safetensors=True, local_files_only=True, torch_dtype=dtype)
        self.folder = folder
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        self.scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, *args, **kwargs):
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(*args, **kwargs)
        return self

    @property
    def device(self):
        return self.unet.device

    def set_progress_bar_config(self, **_kw) -> None:
        pass

    def save_pretrained(self, dest, safe_serialization: bool = True) -> None:
        dest = Path(dest)
        self.unet.save_pretrained(dest / "unet", safe_serialization=safe_serialization)
        for name in ("vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
            src = self.folder / name
            if src.is_dir():
                shutil.copytree(src, dest / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy2(src, dest / name)


def components() -> None:
    import torch

    import dreamsolo.models.loading as loading

    def load_pipeline(folder: Path, dtype=torch.float32):
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{folder}: not a diffusers model folder")
        loading.quiet()
        return Parts(folder, dtype)

    loading.load_pipeline = load_pipeline


def report() -> None:
    heavy = ("torch._dynamo", "mlflow", "scipy", "peft", "sqlalchemy", "alembic", "pandas",
             "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion", "transformers.image_processing_utils")
    print("variant: imported at exit: " + ", ".join(m for m in heavy if m in sys.modules), file=sys.stderr)


def fast_exit() -> None:
    """After the stage function returns: run the atexit hooks (the MLflow logger's stop), flush, and
    os._exit(0) instead of tearing the interpreter down module by module."""
    import os

    import dreamsolo.cli as cli

    real = cli.stage_main

    def stage_main(*args, **kwargs):
        real(*args, **kwargs)
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    cli.stage_main = stage_main


def after_worker(fns) -> None:
    """Apply patches that import torch only after the stage has forked its MLflow logger."""
    import dreamsolo.tracking as tracking

    start = tracking.start_worker

    def start_worker(root):
        start(root)
        for fn in fns:
            fn()
    tracking.start_worker = start_worker


if __name__ == "__main__":
    early = {"--no-mlflow": no_mlflow, "--fast-exit": fast_exit}
    late = {"--lazy-dynamo": lazy_dynamo, "--components": components}
    args, todo = sys.argv[1:], []
    while args and args[0] in {**early, **late}:
        flag = args.pop(0)
        early[flag]() if flag in early else todo.append(late[flag])
    if not args or not args[0].endswith(".py"):
        sys.exit(f"usage: {__doc__.splitlines()[2].strip()}")
    after_worker(todo)
    atexit.register(report)
    sys.argv = args
    runpy.run_path(args[0], run_name="__main__")
