"""Resumable checkpoints, written atomically, outside the stage's DVC outs (which DVC clears).

A checkpoint holds everything the next step depends on (weights, optimizer, lr scheduler, RNG,
step) and the loss history up to its step, so a resumed run ends with the same weights and the
same train_log.csv as an uninterrupted one. Its fingerprint (resolved settings + input hashes)
must match, else it belongs to another configuration and is dropped.

Layout: <folder>/step-NNNNNNN/{weights.safetensors, state.pt, history.json, meta.json}. A folder is
built as `.step-NNNNNNN.tmp` and renamed into place, so a kill at any moment leaves either a
complete checkpoint or a temporary folder that `latest` removes. `state.pt` holds only tensors and
plain containers and is read back with `torch.load(weights_only=True)`: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dreamsolo.files import file_digest, follow_umask

META = "meta.json"  # written last: a folder without it is incomplete
HISTORY = "history.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored (corrupt, or not what this code writes): delete it."""


def fingerprint(settings: dict, files: list[Path]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.name.encode())
        file_digest(f, into=h)
    return h.hexdigest()[:16]


def save(folder: Path, step: int, fp: str, trainable: dict[str, torch.Tensor], optimizer, lr_scheduler,
         generator: torch.Generator, keep: int, history: list[dict] | None = None, scaler=None) -> Path:
    """Write step-<step> atomically (with the loss rows up to `step`) and keep the newest `keep`."""
    final = folder / f"step-{step:07d}"
    tmp = folder / f".step-{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, tmp / "weights.safetensors")
    state = {"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
             "scaler": scaler.state_dict() if scaler is not None else {}}  # fp16 loss scale
    torch.save(state, tmp / "state.pt")
    # The history travels inside the checkpoint: a kill between "checkpoint renamed" and "log
    # written" can no longer resume with missing rows. JSON keeps every float exactly (repr).
    rows = [r for r in (history or []) if r["step"] <= step]
    (tmp / HISTORY).write_text(json.dumps(rows))
    (tmp / META).write_text(json.dumps({"step": step, "fingerprint": fp}))
    follow_umask(tmp)  # safetensors writes owner-only files
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a checkpoint is complete or absent
    _fsync(folder)
    for old in sorted(folder.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(folder: Path, fp: str) -> Path | None:
    """The newest complete checkpoint of this configuration; stale and partial ones are removed."""
    if not folder.is_dir():
        return None
    for tmp in folder.glob(".step-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    found = None
    for ckpt in sorted(folder.glob("step-*")):
        try:
            meta = json.loads((ckpt / META).read_text())
            complete = all((ckpt / f).is_file() for f in ("weights.safetensors", "state.pt", HISTORY))
        except (OSError, ValueError):
            meta, complete = {}, False
        if not complete or meta.get("fingerprint") != fp or meta.get("step") != _step_of(ckpt):
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        found = ckpt
    return found


def restore(ckpt: Path, trainable: dict[str, torch.Tensor], optimizer, lr_scheduler,
            generator: torch.Generator, scaler=None) -> int:
    """Load a checkpoint into the live objects; returns its step. Refuses (CheckpointError) anything
    that is not plain tensors and containers: a planted pickle payload is never executed."""
    try:
        weights = load_file(ckpt / "weights.safetensors")
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        step = json.loads((ckpt / META).read_text())["step"]
    except Exception as e:  # noqa: BLE001 - safetensors, unpickling and JSON errors alike
        why = (str(e).splitlines() or [""])[0]  # torch's unpickling advice (weights_only=False) is not ours
        if type(e).__name__ == "UnpicklingError":
            why = "it holds objects other than tensors and plain containers, refused without unpickling"
        raise CheckpointError(f"{ckpt}: cannot be restored ({type(e).__name__}: {why}); "
                              "delete this folder to start the stage over") from None
    missing = sorted(set(trainable) - set(weights))
    if missing:
        raise CheckpointError(f"{ckpt}: checkpoint lacks {len(missing)} trainable tensors "
                              f"(e.g. {missing[0]}); delete this folder to start the stage over")
    with torch.no_grad():
        for k, v in trainable.items():
            v.copy_(weights[k].to(v.device, v.dtype))
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    cuda_rng = state.get("cuda_rng") or []
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)  # dropout (LoRA) on the GPU draws from these
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return step


def history(ckpt: Path | None) -> list[dict]:
    """The loss rows (one dict per optimizer step) saved with a checkpoint; [] for no checkpoint."""
    if ckpt is None:
        return []
    return json.loads((ckpt / HISTORY).read_text())


def _step_of(ckpt: Path) -> int | None:
    try:
        return int(ckpt.name.removeprefix("step-"))
    except ValueError:
        return None


def _fsync_dir(folder: Path) -> None:
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync(folder)


def _fsync(folder: Path) -> None:
    """Make a rename durable: fsync the directory entry (no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
