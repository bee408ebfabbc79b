"""Loading a model folder: the `base` stage's models/base/<preset> or a trained pair's weights, with
`from_pretrained` exactly like a hub model (LoRA folders over their base). Where a preset's model comes
from is `models.sources`, which only the `base` stage imports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dreamsolo.layout import MODEL_INFO

LORA_FILE = "pytorch_lora_weights.safetensors"


def device() -> torch.device:
    """The GPU if there is one (each data-parallel process its own: LOCAL_RANK), else the CPU."""
    from dreamsolo.devices import check_gpu
    from dreamsolo.distributed import world

    check_gpu(torch.cuda.is_available())
    if not torch.cuda.is_available():
        return torch.device("cpu")
    w = world()
    return torch.device("cuda", w.local_rank) if w.size > 1 else torch.device("cuda")


def read_info(folder: Path) -> dict:
    path = folder / MODEL_INFO
    return json.loads(path.read_text()) if path.is_file() else {"method": "full", "base": None}


def write_model_info(folder: Path, method: str, base: Path | None, final: Path) -> None:
    """Record what a trained folder holds; `base` is stored relative to the folder's final place."""
    rel = os.path.relpath(base.resolve(), final.resolve()) if base is not None else None
    (folder / MODEL_INFO).write_text(json.dumps({"method": method, "base": rel}, indent=2) + "\n")


def relative_names(folder: Path, final: Path) -> None:
    """diffusers and transformers record the absolute folder a model was loaded from as `_name_or_path` in
    every config they save; make those relative to the saved folder's final place, so a model's bytes
    do not depend on where the study is checked out (a hub id stays as it is)."""
    for path in sorted(folder.rglob("*.json")):
        data = json.loads(path.read_text())
        name = data.get("_name_or_path") if isinstance(data, dict) else None
        if isinstance(name, str) and os.path.isabs(name):
            where = final / path.parent.relative_to(folder)
            data["_name_or_path"] = os.path.relpath(name, where)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def lora_base(folder: Path) -> Path:
    return (folder / read_info(folder)["base"]).resolve()


def load_pipeline(folder: Path, dtype: torch.dtype = torch.float32):
    """A StableDiffusionPipeline (or StableDiffusionXLPipeline, as the folder's model_index.json names it) from a
    diffusers folder, or a LoRA folder over its base (fused).

    Safetensors only, no remote code. A LoRA folder loads exactly as plain diffusers would:
    base pipeline + `load_lora_weights(folder)`.
    """
    from dreamsolo.models.family import folder_pipeline, load_kwargs, pipeline_class
    from dreamsolo.models.position import restore

    if read_info(folder)["method"] == "lora":
        pipe = load_pipeline(lora_base(folder), dtype)
        pipe.load_lora_weights(folder, weight_name=LORA_FILE)
        pipe.fuse_lora()  # plain weights: faster sampling; training on top starts from exactly this
        pipe.unload_lora_weights()
        restore(pipe, folder)  # the sine arm's position grid, where the folder was trained with it
        return pipe
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder}: not a diffusers model folder (run the stage that writes it)")
    quiet()
    name = folder_pipeline(folder)  # the family: SD or SDXL (models.family)
    pipe = pipeline_class(name).from_pretrained(folder, use_safetensors=True, local_files_only=True,
                                                **load_kwargs(name))
    pipe.set_progress_bar_config(disable=True)  # our own bars count images, not denoising steps
    restore(pipe, folder)
    return pipe.to(dtype=dtype) if dtype != torch.float32 else pipe


def quiet() -> None:
    """Silence the libraries' per-component loading bars; stages show their own progress."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
