"""The `lora_merge` arm's last step: two models fine-tuned independently from one base, merged by a weighted
sum of what each learned (Custom Diffusion's and Mix-of-Show's parallel alternative to training in sequence).

LoRA: one adapter holding both side by side, each B scaled by its weight, so the merged update is
exactly w_s * B_s A_s + w_i * B_i A_i over the base (adapter-sized, loads in plain diffusers).
Full fine-tuning: base + w_s * (scene - base) + w_i * (instance - base), tensor by tensor, for the UNet
and the text encoder (task arithmetic); the VAE, tokenizer and scheduler are the base's."""

from __future__ import annotations

from pathlib import Path

import torch

from dreamsolo.training import adapters

COMPONENTS = ("unet", "text_encoder")


def merge_states(base: dict[str, torch.Tensor], scene: dict[str, torch.Tensor], instance: dict[str, torch.Tensor],
                 w_scene: float, w_instance: float) -> dict[str, torch.Tensor]:
    """base + w_s (scene - base) + w_i (instance - base) for every floating tensor; others from the base."""
    if not (set(base) == set(scene) == set(instance)):
        raise ValueError("lora_merge: the two models do not have the same tensors as their base")
    out = {}
    for k, b in base.items():
        if not b.is_floating_point():
            out[k] = b
            continue
        out[k] = (b.double() + w_scene * (scene[k].double() - b.double())
                  + w_instance * (instance[k].double() - b.double())).to(b.dtype)
    return out


def merge_lora(scene: dict[str, dict], instance: dict[str, dict], w_scene: float,
               w_instance: float) -> dict[str, dict]:
    """Per component, the two adapters side by side with B scaled by the weights (a component only one
    side trained keeps that side's adapter, scaled)."""
    def scaled(state: dict[str, torch.Tensor], w: float) -> dict[str, torch.Tensor]:
        return {k: v * w if adapters.is_up(k) else v for k, v in state.items()}

    out = {}
    for comp in dict.fromkeys([*scene, *instance]):
        parts = [scaled(s[comp], w) for s, w in ((scene, w_scene), (instance, w_instance)) if comp in s]
        out[comp] = adapters.concat_lora(*parts) if len(parts) == 2 else parts[0]
    return out


def merge_models(base_dir: Path, scene_dir: Path, instance_dir: Path, w_scene: float, w_instance: float,
                 tmp: Path, final: Path) -> str:
    """Write the merged model into `tmp` (to be renamed to `final`); returns the method (full | lora)."""
    from dreamsolo.models.loading import read_info, relative_names, write_model_info

    methods = {read_info(scene_dir)["method"], read_info(instance_dir)["method"]}
    if methods == {"lora"}:
        adapters.save_lora(tmp, merge_lora(adapters.read_lora(scene_dir), adapters.read_lora(instance_dir),
                                           w_scene, w_instance))
        write_model_info(tmp, "lora", base_dir, final)
        return "lora"
    if methods != {"full"}:
        raise ValueError("lora_merge: Stage I and the instance model must both be full or both LoRA")
    from dreamsolo.models.loading import load_pipeline

    pipe = load_pipeline(base_dir)
    tuned = [load_pipeline(d) for d in (scene_dir, instance_dir)]
    for comp in COMPONENTS:
        target = getattr(pipe, comp)
        scene, inst = (getattr(p, comp).state_dict() for p in tuned)
        merged = merge_states(target.state_dict(), scene, inst, w_scene, w_instance)
        target.load_state_dict(merged)
    pipe.save_pretrained(tmp, safe_serialization=True)
    relative_names(tmp, final)
    write_model_info(tmp, "full", None, final)
    return "full"
