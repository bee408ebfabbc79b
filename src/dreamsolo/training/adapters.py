"""LoRA through peft, saved in the diffusers LoRA format (`pipe.load_lora_weights(folder)` loads it).

Saved adapters have the LoRA scale alpha/r folded into `lora_B`, so the file means
W + B @ A exactly, which is how diffusers reads a LoRA file without alphas.

Stage II on LoRA: Stage I's adapter is fused into the UNet (frozen) before the instance adapter is
added, so the scene is kept exactly as Stage I left it. The Stage II file is the concatenation
[scene | instance] along the rank axis: W + Bs As + Bi Ai = W + [Bs Bi] [As; Ai]. One
`load_lora_weights` call therefore gives the composed model, and sampling loads just that.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from dreamsolo.config import Train
from dreamsolo.models.loading import LORA_FILE

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def add_lora(model, cfg: Train, targets: tuple[str, ...]) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        init_lora_weights="gaussian", target_modules=list(targets))
    from diffusers import ModelMixin

    if isinstance(model, ModelMixin):
        model.add_adapter(config)
    else:  # transformers 5's `add_adapter` gates on a peft release newer than PyPI has: inject directly
        inject_adapter_in_model(config, model)


def is_up(key: str) -> bool:
    """An adapter's B (up) matrix, in peft's or the older diffusers key names: it carries the scale."""
    return "lora_B" in key or ".up." in key


def lora_state(model, cfg: Train) -> dict[str, torch.Tensor]:
    """The adapter of `model` in diffusers' key layout, with alpha/r folded into lora_B."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    scale = cfg.lora_alpha / cfg.lora_rank
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(model))
    return {k: (v * scale if is_up(k) else v).detach().float().cpu().contiguous()
            for k, v in state.items()}


def concat_lora(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One adapter equal to applying both: A stacked on the rank axis (rows), B side by side (cols)."""
    if set(first) != set(second):
        missing = sorted(set(first) ^ set(second))[:3]
        raise ValueError(f"Stage I and Stage II LoRA target different modules (e.g. {missing}); "
                         "use the same lora_targets in both stages")
    return {k: torch.cat([first[k], second[k]], dim=1 if is_up(k) else 0)
            for k in first}


def combine(first: dict[str, dict], second: dict[str, dict]) -> dict[str, dict]:
    """Per component (unet, text_encoder): concatenate where both stages have an adapter."""
    out = dict(first)
    for comp, state in second.items():
        out[comp] = concat_lora(first[comp], state) if comp in first else state
    return out


def split_prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}


def read_lora(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A saved adapter by component ({'unet': ..., 'text_encoder': ...[, 'text_encoder_2': ...]})."""
    state = load_file(folder / LORA_FILE)
    return {c: s for c in ("unet", "text_encoder", "text_encoder_2") if (s := split_prefixed(state, c))}


def save_lora(folder: Path, layers: dict[str, dict[str, torch.Tensor]], xl: bool = False) -> None:
    """Through the family's own save_lora_weights: SDXL's takes the second text encoder's adapter too."""
    if xl or "text_encoder_2" in layers:  # (a caller that does not know the family: the lora_merge arm)
        from diffusers import StableDiffusionXLPipeline

        StableDiffusionXLPipeline.save_lora_weights(
            folder, unet_lora_layers=layers.get("unet"), text_encoder_lora_layers=layers.get("text_encoder"),
            text_encoder_2_lora_layers=layers.get("text_encoder_2"), safe_serialization=True,
        )
        return
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers.get("unet"), text_encoder_lora_layers=layers.get("text_encoder"),
        safe_serialization=True,
    )

