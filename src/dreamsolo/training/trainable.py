"""What a training stage trains and how: full or LoRA, precision, optimizer, and what it saves (the
`setup` of training.loop builds a session from these)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from dreamsolo.config import ParamsError, Train
from dreamsolo.models.family import is_xl, text_encoders
from dreamsolo.sampling import DTYPES
from dreamsolo.training import adapters


def check_device(cfg: Train, dev: torch.device, where: str) -> None:
    """Settings that cannot work on this device stop the stage before any work."""
    if cfg.use_8bit_adam and dev.type != "cuda":
        raise ParamsError(f"{where}.use_8bit_adam: bitsandbytes' 8-bit Adam needs a CUDA GPU; this run is on {dev}")
    if cfg.mixed_precision == "fp16" and dev.type != "cuda":
        raise ParamsError(f"{where}.mixed_precision: fp16 autocast is for CUDA GPUs; use bf16 or fp32 on {dev}")


def prepare_model(pipe, cfg: Train, dev: torch.device) -> dict[str, torch.nn.Parameter]:
    """Freeze what is not trained, add adapters for LoRA, and return the trainable parameters by name."""
    if dev.type == "cuda" and cfg.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    weight_dtype = DTYPES[cfg.mixed_precision]
    pipe.vae.requires_grad_(False)
    # only used to cache latents once; SDXL's VAE overflows in fp16 (its config's force_upcast), and diffusers'
    # SDXL DreamBooth script keeps it in fp32 for that reason: so does this (SD's path is as it was)
    pipe.vae.to(dtype=torch.float32 if is_xl(pipe) else weight_dtype)
    unet, encoders = pipe.unet, text_encoders(pipe)  # SDXL: both text encoders, trained or frozen together
    # explicit both ways: a model loaded from a LoRA folder (fused, adapters unloaded) comes back frozen,
    # so full training on top of a LoRA Stage I had nothing to train (found by bench/rehearsal.py)
    unet.requires_grad_(cfg.method == "full")
    for _, te in encoders:
        te.requires_grad_(cfg.train_text_encoder and cfg.method == "full")
        if not cfg.train_text_encoder:
            te.to(dtype=weight_dtype)  # frozen: only used to cache embeddings once
    if cfg.method == "lora":
        adapters.add_lora(unet, cfg, cfg.lora_targets)
        if cfg.train_text_encoder:
            for _, te in encoders:
                adapters.add_lora(te, cfg, adapters.TEXT_TARGETS)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            for _, te in encoders:
                # transformers 5 renamed it (the old name warns, and goes in v6); older releases have only the old
                enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
                enable()
    unet.train()
    for _, te in encoders:
        te.train(cfg.train_text_encoder)
    named = {f"unet.{k}": p for k, p in unet.named_parameters() if p.requires_grad}
    if cfg.train_text_encoder:
        for name, te in encoders:
            named |= {f"{name}.{k}": p for k, p in te.named_parameters() if p.requires_grad}
    for p in named.values():  # fp32 master weights whatever the autocast dtype
        p.data = p.data.float()
    return named


def make_optimizer(params: list[torch.nn.Parameter], cfg: Train, dev: torch.device) -> torch.optim.Optimizer:
    kw = dict(lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.adam_weight_decay,
              eps=cfg.adam_epsilon)
    if cfg.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ParamsError("train.use_8bit_adam: bitsandbytes is not installed "
                              "(pip install 'dreamsolo[gpu]')") from None
        return bnb.optim.AdamW8bit(params, **kw)
    # fused: one kernel per step instead of one per tensor (CPU and CUDA since torch 2.4)
    return torch.optim.AdamW(params, **kw, fused=True)


def autocast(cfg: Train, dev: torch.device):
    if cfg.mixed_precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev.type, dtype=DTYPES[cfg.mixed_precision])


def grad_scaler(cfg: Train, dev: torch.device) -> torch.amp.GradScaler:
    """Loss scaling keeps fp16 gradients from underflowing; a no-op for fp32 and bf16."""
    return torch.amp.GradScaler(dev.type, enabled=cfg.mixed_precision == "fp16")


def save_trained(pipe, cfg: Train, init_dir: Path, tmp: Path, final: Path) -> None:
    """Full: a whole pipeline folder. LoRA: the adapter (over Stage I's adapter, concatenated) + its base."""
    from dreamsolo.models.loading import lora_base, read_info, relative_names, write_model_info

    if cfg.method == "full":
        pipe.save_pretrained(tmp, safe_serialization=True)
        relative_names(tmp, final)
        write_model_info(tmp, "full", None, final)
        return
    layers = {"unet": adapters.lora_state(pipe.unet, cfg)}
    if cfg.train_text_encoder:
        for name, te in text_encoders(pipe):  # SDXL: text_encoder and text_encoder_2
            layers[name] = adapters.lora_state(te, cfg)
    base = init_dir
    if read_info(init_dir)["method"] == "lora":  # Stage I was LoRA: ship [scene | instance] over its base
        layers = adapters.combine(adapters.read_lora(init_dir), layers)
        base = lora_base(init_dir)
    adapters.save_lora(tmp, layers, xl=is_xl(pipe))
    write_model_info(tmp, "lora", base, final)
