"""Resumable checkpoints, written atomically, outside the stage's DVC outs (which DVC clears).

A checkpoint holds everything the next step depends on (weights, optimizer, lr scheduler, RNG,
step), so a resumed run ends with the same weights as an uninterrupted one. Its fingerprint
(resolved settings + input hashes) must match, else it belongs to another configuration and is dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def fingerprint(settings: dict, files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def save(folder: Path, step: int, fp: str, trainable: dict[str, torch.Tensor], optimizer, lr_scheduler,
         generator: torch.Generator, keep: int) -> Path:
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, tmp / "weights.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps({"step": step, "fingerprint": fp}))
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint is complete or absent
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path, fp: str) -> Path | None:
    """The newest complete checkpoint of this configuration; stale ones are removed."""
    if not folder.is_dir():
        return None
    for tmp in folder.glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    found = None
    for ckpt in sorted(folder.glob("step-*")):
        try:
            meta = json.loads((ckpt / "meta.json").read_text())
        except (OSError, ValueError):
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        if meta.get("fingerprint") != fp:
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        found = ckpt
    return found


def restore(ckpt: Path, trainable: dict[str, torch.Tensor], optimizer, lr_scheduler,
            generator: torch.Generator) -> int:
    weights = load_file(ckpt / "weights.safetensors")
    with torch.no_grad():
        for k, v in trainable.items():
            v.copy_(weights[k].to(v.device, v.dtype))
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return json.loads((ckpt / "meta.json").read_text())["step"]


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
