"""This machine, as far as the study is concerned: the settings it cannot run (refused before any stage
runs, named where params.yaml sets them) and the record of what about it still shapes the results."""

from __future__ import annotations

from dataclasses import dataclass

from dreamsolo.config import Study
from dreamsolo.params import ParamsError


@dataclass(frozen=True)
class NeedsCuda:
    key: str  # as written in params.yaml: `train.mixed_precision`, `priors.precision`
    why: str
    fix: str
    items: tuple[str, ...]  # the stage instances it reaches


def needs_cuda(study: Study) -> list[NeedsCuda]:
    """The settings of `study` that only a CUDA GPU runs, one per key as written, in params order."""
    found: dict[str, NeedsCuda] = {}

    def add(key: str, why: str, fix: str, item: str) -> None:
        old = found.get(key)
        found[key] = NeedsCuda(key, why, fix, (*(old.items if old else ()), item))

    for section in ("priors", "sample"):
        if getattr(study, section).precision == "fp16":
            add(f"{section}.precision", "fp16 sampling is for CUDA GPUs (CPU fp16 kernels are slow or missing)",
                "use fp32 (the default's `auto` on a CPU) or bf16", "generate_priors" if section == "priors" else "sample")
    for (pair_id, stage), cfg in study.trains.items():
        if cfg.mixed_precision == "fp16":
            add(study.written_at(pair_id, stage, "mixed_precision"), "fp16 autocast is for CUDA GPUs",
                "use fp32 or bf16", f"{stage}@{pair_id}")
        if cfg.use_8bit_adam:
            add(study.written_at(pair_id, stage, "use_8bit_adam"), "bitsandbytes' 8-bit Adam needs a CUDA GPU",
                "set it to false", f"{stage}@{pair_id}")
    return list(found.values())


def cuda_available() -> bool:
    import torch  # only when a setting asks for CUDA: the params check runs in about a second without it

    return torch.cuda.is_available()


def check_runnable(study: Study, cuda: bool | None = None, item: str | None = None) -> None:
    """Refuse, in one line naming the key as written, a setting this machine cannot run: before `dvc repro`
    removes a stage's outputs (the `code` stage and `dreamsolo repro`/`check` call this). A stage passes its
    `item` (`train_scene@cat_grass`) to check only what reaches it."""
    wants = [w for w in needs_cuda(study) if item is None or item in w.items]
    if not wants or (cuda if cuda is not None else cuda_available()):
        return
    w = wants[0]
    reach = w.items[0] + (f" and {len(w.items) - 1} more stage(s)" if len(w.items) > 1 else "")
    raise ParamsError(f"{w.key}: {w.why}, and torch sees no GPU on this machine; {w.fix} (used by {reach})")


def record(device: str) -> dict:
    """What about this machine still shapes a stage's bytes once params.yaml is fixed (issue 26, point 7),
    written beside the result (sampling.json, the priors' manifest.json, train_meta.json), so dvc.lock's
    hash of the output changes with it: the torch build and the device kind; on a CPU the instruction set
    torch's kernels dispatch to and torch's thread count (AVX2 against AVX-512, or 1 thread against 2,
    flip single grey levels in a few images: bench/machine_bytes.py); on CUDA the GPU's name. What leaves
    the bytes alone (core ids, host name, load) is not in it."""
    import torch

    out: dict = {"torch": torch.__version__, "device": device.split(":")[0]}
    if out["device"] == "cuda":
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    else:
        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["threads"] = torch.get_num_threads()
    return out
