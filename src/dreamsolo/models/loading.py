"""One code path for every base model: build (tiny), hub id + revision, local folder, single file.

The `base` stage materialises the preset as a diffusers folder under models/base/<preset>;
every later stage loads that folder (or a trained one) with `from_pretrained`, exactly like a hub model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dreamsolo.config import Preset

SINGLE_FILE = (".safetensors", ".ckpt")
LORA_FILE = "pytorch_lora_weights.safetensors"
MODEL_INFO = "dreamsolo_model.json"  # in trained folders: {"method": full|lora, "base": relative path}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def source_kind(source: str, root: Path) -> str:
    """build | file | folder | hub. A path that looks local but does not exist is an error, not a hub id."""
    if source == "build":
        return "build"
    path = (root / source).expanduser()
    if path.suffix in SINGLE_FILE:
        if not path.is_file():
            raise FileNotFoundError(f"presets: single-file checkpoint {source} not found")
        return "file"
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"presets: {source} is a folder but not a diffusers model (no model_index.json)")
        return "folder"
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"presets: {source} is neither an existing folder/file nor a hub id (owner/name)")
    return "hub"


def materialise_base(preset: Preset, dest: Path, root: Path) -> dict:
    """Write the preset's pipeline to `dest` (a fresh folder) and return what was resolved."""
    from dreamsolo.models.tiny import build_tiny

    quiet()
    kind = source_kind(preset.source, root)
    info: dict = {"source": preset.source, "kind": kind, "revision": preset.revision}
    if kind == "build":
        build_tiny(dest, preset.seed)
        return info
    from diffusers import StableDiffusionPipeline

    common = dict(safety_checker=None, requires_safety_checker=False)
    if kind == "file":
        pipe = StableDiffusionPipeline.from_single_file(str(root / preset.source), **common)
    elif kind == "folder":
        pipe = StableDiffusionPipeline.from_pretrained(root / preset.source, **common)
    else:
        pipe = StableDiffusionPipeline.from_pretrained(preset.source, revision=preset.revision, **common)
        info["resolved_revision"] = pipe.config.get("_commit_hash") or _hub_commit(preset)
    pipe.save_pretrained(dest, safe_serialization=True)
    return info


def _hub_commit(preset: Preset) -> str | None:
    try:
        from huggingface_hub import model_info

        return model_info(preset.source, revision=preset.revision).sha
    except Exception:  # the weights are already here; the revision is a nice-to-have
        return None


def read_info(folder: Path) -> dict:
    path = folder / MODEL_INFO
    return json.loads(path.read_text()) if path.is_file() else {"method": "full", "base": None}


def write_model_info(folder: Path, method: str, base: Path | None, final: Path) -> None:
    """Record what a trained folder holds; `base` is stored relative to the folder's final place."""
    rel = os.path.relpath(base.resolve(), final.resolve()) if base is not None else None
    (folder / MODEL_INFO).write_text(json.dumps({"method": method, "base": rel}, indent=2) + "\n")


def lora_base(folder: Path) -> Path:
    return (folder / read_info(folder)["base"]).resolve()


def load_pipeline(folder: Path, dtype: torch.dtype = torch.float32):
    """A StableDiffusionPipeline from a diffusers folder, or a LoRA folder over its base (fused).

    Safetensors only, no remote code. A LoRA folder loads exactly as plain diffusers would:
    base pipeline + `load_lora_weights(folder)`.
    """
    from diffusers import StableDiffusionPipeline

    if read_info(folder)["method"] == "lora":
        pipe = load_pipeline(lora_base(folder), dtype)
        pipe.load_lora_weights(folder, weight_name=LORA_FILE)
        pipe.fuse_lora()  # plain weights: faster sampling; training on top starts from exactly this
        pipe.unload_lora_weights()
        return pipe
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(f"{folder}: not a diffusers model folder (run the stage that writes it)")
    quiet()
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, use_safetensors=True, safety_checker=None, requires_safety_checker=False,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)  # our own bars count images, not denoising steps
    return pipe.to(dtype=dtype) if dtype != torch.float32 else pipe


def quiet() -> None:
    """Silence the libraries' per-component loading bars; stages show their own progress."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()


def write_info(dest: Path, info: dict) -> None:
    (dest / "dreamsolo_base.json").write_text(json.dumps(info, indent=2) + "\n")
