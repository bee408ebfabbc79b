"""Sizes and the GPU-memory model of bench/rehearsal.py: parameter counts, trainable parameters and
optimizer state of a training stage's settings (counted on a `meta` copy of the architecture through the
library's own `prepare_model`: no weights in memory), and the UNet's activation memory per example,
measured on the CPU (`probe`, one fresh process per point).

The predicted GPU memory of one training step (documented in bench/README.md):

    M = 4 B x trainable (fp32 master weights, whatever the autocast) + VAE and a frozen text encoder
        x (4 B fp32 | 2 B bf16/fp16: prepare_model casts them) + 4 B x other frozen weights (LoRA's base)
      + 4 B x trainable (gradients) + optimizer (AdamW 8 B, 8-bit AdamW 2 B per trainable parameter)
      + A(precision, checkpointing, rows) + 1 GiB (CUDA context, cuBLAS / allocator workspace: assumed)

A is measured, not guessed: the resident-set growth of the UNet's forward pass with gradients (all weights
trainable, train mode, the library's autocast and gradient checkpointing switch) at 1 and 2 rows of the
model's latent size, in a fresh process per point (glibc keeps freed pages, so one process would hide
the second point); A(rows) = a + b x rows (a: autocast's cached bf16 copies of the trained weights, 2 B per
UNet parameter for full fine-tuning, ~0 for LoRA, whose frozen weights autocast does not cache; b: saved
activations per row), fitted through probes at 1 and 2 rows (--two-rows) or, from one row, with a by that rule. A step's rows are batch x (1 instance + 1 prior [+ 1 replay]).
The backward pass's own transient (one block recomputed under checkpointing, activation gradients) and
the text encoder's activations (77 tokens) are left out: small beside the UNet's at 512 px.

    python bench/_sizes.py probe --model-dir DIR --rows 1 --precision bf16 --checkpointing
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import types
from pathlib import Path

GiB = 2**30
CONTEXT_BYTES = 1 * GiB  # CUDA context + workspace: an assumption, not measured here (no GPU)


def _n(module) -> int:
    return sum(p.numel() for p in module.parameters())


def counts(arch: str, cfg=None) -> dict:
    """Parameter counts of the architecture; with a `Train`, what that stage trains (via prepare_model)."""
    import torch

    from dreamsolo.models.build import arch_config, build_modules, build_text_encoder_2
    from dreamsolo.training.trainable import prepare_model

    unet, vae, te = build_modules(arch, 0, "meta")
    # SDXL: "text_encoder" counts both encoders (frozen, trained and cast together by prepare_model)
    te2 = build_text_encoder_2(arch, "meta") if "text_encoder_2" in arch_config(arch) else None
    out = {"unet": _n(unet), "vae": _n(vae), "text_encoder": _n(te) + (_n(te2) if te2 is not None else 0)}
    out["total"] = out["unet"] + out["vae"] + out["text_encoder"]
    if cfg is None:
        return out
    pipe = types.SimpleNamespace(unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2)
    named = prepare_model(pipe, cfg, torch.device("cpu"))
    trainable = sum(p.numel() for p in named.values())
    # prepare_model casts the VAE and a frozen text encoder to the autocast dtype; the UNet's frozen base
    # weights under LoRA (and a LoRA-trained text encoder's) stay fp32
    # (SDXL's VAE stays fp32 in training, force_upcast; counted at the low dtype here all the same: at bf16 the
    # prediction is 0.16 GiB low for SDXL, 84 M parameters x 2 B)
    low = out["vae"] + (0 if cfg.train_text_encoder else out["text_encoder"])
    out |= {"trainable": trainable, "total": _n(unet) + _n(vae) + _n(te) + (_n(te2) if te2 is not None else 0),
            # + adapters with LoRA
            "optimizer_bytes": trainable * (2 if cfg.use_8bit_adam else 8)}
    out["frozen_low"], out["frozen_fp32"] = low, out["total"] - trainable - low
    return out


def _hwm_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set (Linux)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def probe(model_dir: Path, rows: int, precision: str, checkpointing: bool) -> dict:
    """Resident-set growth of one UNet forward pass with gradients, as a training step runs it."""
    import torch
    from diffusers import UNet2DConditionModel

    from dreamsolo.sampling import DTYPES

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").train()
    for p in unet.parameters():  # own copies: weights paged in from the mmapped file during the forward pass
        p.data = p.data.clone()  # would count as activations (they did: +3.2 GiB at SD 1.5's size)
    unet.requires_grad_(True)
    if checkpointing:
        unet.enable_gradient_checkpointing()
    cfg = unet.config
    vae = json.loads((model_dir / "vae" / "config.json").read_text())
    side = vae["sample_size"] // 2 ** (len(vae["block_out_channels"]) - 1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, cfg.in_channels, side, side, generator=g)
    text = torch.randn(rows, 77, cfg.cross_attention_dim, generator=g)
    t = torch.randint(0, 1000, (rows,), generator=g)
    added = {}
    if getattr(cfg, "addition_embed_type", None) == "text_time":  # SDXL: pooled text_embeds + size time_ids
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        side_px = vae["sample_size"]
        added = {"added_cond_kwargs": {"text_embeds": torch.randn(rows, pooled, generator=g),
                                       "time_ids": torch.tensor([[side_px, side_px, 0, 0, side_px, side_px]] * rows,
                                                                dtype=torch.float32)}}
    gc.collect()
    _hwm_reset()
    before = _status("VmRSS")
    start = time.perf_counter()
    ctx = (torch.autocast("cpu", dtype=DTYPES[precision]) if precision != "fp32" else torch.enable_grad())
    with ctx:
        out = unet(x, t, text, **added).sample
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {"rows": rows, "precision": precision, "checkpointing": checkpointing, "bytes": peak - before,
            "forward_s": round(seconds, 2), "out_shape": list(out.shape)}


def fit(points: list[dict], unet_params: int) -> dict:
    """{(precision, checkpointing): (a, b)}: A(rows) = a + b x rows. With probes at two row counts, the
    line through them; with one, a = autocast's cached low-precision copy of the trained weights (2 B per
    UNet parameter under bf16: the probe trains them all; 0 in fp32) and b = the rest, per row."""
    by: dict = {}
    for p in points:
        by.setdefault((p["precision"], p["checkpointing"]), {})[p["rows"]] = p["bytes"]
    out = {}
    for key, pts in by.items():
        (r1, m1), *more = sorted(pts.items())
        if more:
            r2, m2 = more[0]
            b = (m2 - m1) / (r2 - r1)
            a = m1 - b * r1
        else:
            a = min(m1, 2 * unet_params if key[0] != "fp32" else 0)
            b = (m1 - a) / r1
        out[key] = (max(0.0, a), max(0.0, b))
    return out


def predict(sizes: dict, low_bytes: int, optimizer: str, act: tuple[float, float], rows: int) -> int:
    """Bytes of GPU memory for one training step by the formula in the module docstring (`low_bytes`: per
    parameter of the VAE and a frozen text encoder, which prepare_model casts to the autocast dtype)."""
    trainable = sizes["trainable"]
    opt = trainable * (2 if optimizer == "adamw8bit" else 8)
    a, b = act
    weights = 4 * trainable + low_bytes * sizes["frozen_low"] + 4 * sizes["frozen_fp32"]
    return int(weights + 4 * trainable + opt + a + b * rows + CONTEXT_BYTES)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe", help="one activation-memory point (run in a fresh process)")
    pr.add_argument("--model-dir", type=Path, required=True)
    pr.add_argument("--rows", type=int, default=1)
    pr.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    pr.add_argument("--checkpointing", action="store_true")
    a = p.parse_args(argv)
    print(json.dumps(probe(a.model_dir, a.rows, a.precision, a.checkpointing)), flush=True)


if __name__ == "__main__":
    main()
