"""Write a diffusers Stable Diffusion folder as ONE original-layout (CompVis / LDM) .safetensors file.

    python tools/to_single_file.py models/cat_grass/instance cat_grass.safetensors [--half] [--config-out DIR]

The folder may be any diffusers SD 1.x/2.x folder (a hub snapshot, models/base/<preset>, a full
fine-tune) or a LoRA folder this project trained (its adapter is fused into the base first). The
file holds the UNet (`model.diffusion_model.`), the VAE (`first_stage_model.`) and the CLIP text
encoder (`cond_stage_model.transformer.`), the layout community checkpoints ship in, and loads with
`StableDiffusionPipeline.from_single_file(file, config=...)` (or as a preset `source` in params.yaml).

The key mapping is the inverse of diffusers' own `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint` (diffusers/loaders/single_file_utils.py),
and every conversion is checked by running those functions on the result: they must give back the
original state dicts exactly, or nothing is written. The text encoder is written in the OpenAI-CLIP
layout of SD 1.x (SD 2.x files ship an OpenCLIP layout; diffusers reads either when given `config`).

`--config-out DIR` also writes the architecture without weights (model_index.json, component configs,
tokenizer, scheduler): the offline `config` that `from_single_file` needs instead of the hub.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D name -> LDM ResBlock name (inverse of update_unet_resnet_ldm_to_diffusers)
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
# diffusers VAE Attention name -> LDM AttnBlock name (inverse of update_vae_attentions_ldm_to_diffusers)
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _mapping(part: str) -> dict[str, str]:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    table = DIFFUSERS_TO_LDM_MAPPING[part]
    return dict(table["layers"]) if "layers" in table else dict(table)


def _unsupported(part: str, key: str) -> ValueError:
    return ValueError(f"{part} key {key!r} has no place in the original Stable Diffusion layout "
                      "(only SD 1.x / 2.x architectures are supported)")


def unet_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> `model.diffusion_model.` keys (input/middle/output_blocks)."""
    per = config["layers_per_block"]
    if not isinstance(per, int):
        raise ValueError(f"UNet layers_per_block={per!r}: the original layout needs one int for all blocks")
    step = per + 1  # LDM: `per` (resnet, attention) entries per down block, then its downsampler
    fixed = _mapping("unet")
    up_attn = {int(m[1]) for k in state if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}

    def resnet(rest: str, key: str) -> str:
        name, _, tail = rest.partition(".")
        if name not in UNET_RESNET:
            raise _unsupported("UNet", key)
        return f"{UNET_RESNET[name]}.{tail}"

    def ldm_key(key: str) -> str:
        if key in fixed:
            return fixed[key]
        if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"input_blocks.{1 + int(m[1]) * step + int(m[2])}.0.{resnet(m[3], key)}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            return f"input_blocks.{1 + int(m[1]) * step + int(m[2])}.1.{m[3]}"
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            return f"input_blocks.{1 + int(m[1]) * step + per}.0.op.{m[2]}"
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"middle_block.{2 * int(m[1])}.{resnet(m[2], key)}"
        if m := re.fullmatch(r"mid_block\.attentions\.(\d+)\.(.+)", key):
            return f"middle_block.{2 * int(m[1]) + 1}.{m[2]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"output_blocks.{int(m[1]) * step + int(m[2])}.0.{resnet(m[3], key)}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            return f"output_blocks.{int(m[1]) * step + int(m[2])}.1.{m[3]}"
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])  # after the attention when the block has one
            return f"output_blocks.{b * step + per}.{2 if b in up_attn else 1}.conv.{m[2]}"
        raise _unsupported("UNet", key)

    return {UNET_PREFIX + ldm_key(k): v for k, v in state.items()}


def vae_to_ldm(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> `first_stage_model.` keys (decoder blocks numbered bottom-up)."""
    fixed = _mapping("vae")
    n_up = len(config["up_block_types"])

    def ldm_key(key: str) -> str:
        if key in fixed:
            return fixed[key]
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            return f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            return f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+|to_out\.0)\.(\w+)", key):
            if m[2] not in VAE_ATTN:
                raise _unsupported("VAE", key)
            return f"{m[1]}.mid.attn_1.{VAE_ATTN[m[2]]}.{m[3]}"
        raise _unsupported("VAE", key)

    out = {}
    for key, v in state.items():
        new = ldm_key(key)
        if ".mid.attn_1." in new and new.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # the original attention projections are 1x1 convolutions
        out[VAE_PREFIX + new] = v
    return out


def clip_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys -> `cond_stage_model.transformer.text_model.` keys."""
    out = {}
    for key, v in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer, not a weight
        if key.startswith("text_projection"):
            raise _unsupported("text encoder", key)
        out[CLIP_PREFIX + (key if key.startswith("text_model.") else "text_model." + key)] = v
    return out


def verify(ldm: dict[str, torch.Tensor], parts: dict[str, dict[str, torch.Tensor]], configs: dict) -> None:
    """Run diffusers' own LDM -> diffusers conversions on `ldm`: they must give back `parts` exactly."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint, convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)

    clip = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
    flat = not any(k.startswith("text_model.") for k in parts["text_encoder"])
    back = {
        "unet": convert_ldm_unet_checkpoint(ldm, configs["unet"]),
        "vae": convert_ldm_vae_checkpoint(ldm, configs["vae"]),
        "text_encoder": clip if flat else {"text_model." + k: v for k, v in clip.items()},
    }
    for part, state in parts.items():
        want = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        got = back[part]
        if set(got) != set(want):
            diff = sorted(set(got) ^ set(want))[:5]
            raise ValueError(f"{part}: the converted keys do not map back (e.g. {diff}); nothing was written")
        for k, v in want.items():
            g = got[k]
            same = g.shape == v.shape and (v.is_meta or torch.equal(g.to(v.dtype), v))
            if not same:
                raise ValueError(f"{part}.{k}: the converted tensor does not map back; nothing was written")


def to_ldm(unet, vae, text_encoder, check: bool = True) -> dict[str, torch.Tensor]:
    """One original-layout state dict from the three models (checked against diffusers' converters)."""
    parts = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": text_encoder.state_dict()}
    ldm = {**unet_to_ldm(parts["unet"], unet.config), **vae_to_ldm(parts["vae"], vae.config),
           **clip_to_ldm(parts["text_encoder"])}
    if check:
        verify(ldm, parts, {"unet": unet.config, "vae": vae.config})
    return ldm


def write_config_folder(pipe, dest: Path) -> None:
    """The pipeline's architecture without weights: what `from_single_file(config=dest)` reads."""
    dest.mkdir(parents=True, exist_ok=True)
    pipe.save_config(dest)  # model_index.json
    pipe.unet.save_config(dest / "unet")
    pipe.vae.save_config(dest / "vae")
    pipe.text_encoder.config.save_pretrained(dest / "text_encoder")
    pipe.tokenizer.save_pretrained(dest / "tokenizer")
    pipe.scheduler.save_pretrained(dest / "scheduler")


def convert(folder: Path, dest: Path, *, half: bool = False, config_out: Path | None = None) -> Path:
    """Write `folder` (diffusers SD folder or a trained LoRA folder) to the single file `dest`."""
    from safetensors.torch import save_file

    from dreamsolo.models.loading import load_pipeline

    if dest.suffix != ".safetensors":
        raise ValueError(f"{dest}: the single file must end in .safetensors")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    pipe = load_pipeline(folder)
    ldm = to_ldm(pipe.unet, pipe.vae, pipe.text_encoder)
    dtype = torch.float16 if half else None
    ldm = {k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().contiguous() for k, v in ldm.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    save_file(ldm, tmp, metadata={"format": "pt", "converted_from": "diffusers", "layout": "ldm"})
    tmp.replace(dest)
    if config_out is not None:
        write_config_folder(pipe, config_out)
    return dest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="diffusers SD folder (or a trained LoRA folder of this project)")
    p.add_argument("dest", type=Path, help="the .safetensors file to write")
    p.add_argument("--half", action="store_true", help="store fp16 weights (half the size; as most community files)")
    p.add_argument("--config-out", type=Path, default=None,
                   help="also write the weight-free architecture folder to pass as `config` offline")
    args = p.parse_args(argv)
    try:
        out = convert(args.folder, args.dest, half=args.half, config_out=args.config_out)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(out)


if __name__ == "__main__":
    main()
