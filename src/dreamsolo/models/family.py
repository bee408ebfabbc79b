"""Model families: SD 1.x / 2.x and SDXL differ in how a prompt becomes conditioning and in the pipeline class,
never in the stages, the loss, the checkpoints or the tracking (DESIGN.md, Models). This module is the one switch.

SD: one CLIP text encoder; the UNet takes its last hidden states. SDXL (Podell et al., 2023; as diffusers'
`StableDiffusionXLPipeline.encode_prompt` and `examples/dreambooth/train_dreambooth_lora_sdxl.py`): two text
encoders whose penultimate hidden states are concatenated (768 + 1280 = 2048 channels at real size), the pooled
and projected output of the second (`text_embeds`), and the size / crop micro-conditioning `time_ids` =
original size (h, w) + crop top-left (y, x) + target size (h, w). An SDXL UNet says so by its config:
`addition_embed_type == "text_time"`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

SD = "StableDiffusionPipeline"
XL = "StableDiffusionXLPipeline"
PIPELINES = (SD, XL)


def is_xl(pipe_or_unet) -> bool:
    """An SDXL model: its UNet is conditioned on text_embeds + time_ids."""
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def pipeline_class(name: str):
    """The diffusers class of a pipeline named in model_index.json; anything else is refused, not guessed."""
    if name not in PIPELINES:
        raise ValueError(f"pipeline {name!r} is not a model family dreamsolo trains (one of {', '.join(PIPELINES)})")
    import diffusers

    return getattr(diffusers, name)


def folder_pipeline(folder: Path) -> str:
    """The pipeline class a diffusers folder names (model_index.json `_class_name`)."""
    return json.loads((folder / "model_index.json").read_text())["_class_name"]


def load_kwargs(name: str) -> dict:
    """from_pretrained / from_single_file keywords per family: SD has a safety checker to switch off; SDXL has
    none, and no invisible watermark (it is applied only to decoded output, which dreamsolo decodes itself)."""
    if name == XL:
        return {"add_watermarker": False}
    return {"safety_checker": None, "requires_safety_checker": False}


def text_encoders(pipe) -> list[tuple[str, torch.nn.Module]]:
    """(component name, module) of each text encoder: [text_encoder] for SD, + text_encoder_2 for SDXL."""
    found = [("text_encoder", pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        found.append(("text_encoder_2", pipe.text_encoder_2))
    return found


@dataclass
class XLCond:
    """SDXL's conditioning of n rows: what `encoder_hidden_states` alone is for SD."""

    hidden: torch.Tensor  # (n, 77, d1 + d2): both encoders' penultimate hidden states, concatenated
    pooled: torch.Tensor  # (n, p): text_encoder_2's projected pooled output (`text_embeds`)
    time_ids: torch.Tensor  # (n, 6): original (h, w), crop top-left (y, x), target (h, w), in pixels

    def __getitem__(self, index) -> XLCond:  # rows, as a tensor is indexed (a data-parallel rank's rows)
        return XLCond(self.hidden[index], self.pooled[index], self.time_ids[index])

    def rows(self, row: int, n: int) -> XLCond:
        """Row `row` repeated n times (as `text[row:row + 1].expand(n, -1, -1)` for SD)."""
        return XLCond(self.hidden[row:row + 1].expand(n, -1, -1), self.pooled[row:row + 1].expand(n, -1),
                      self.time_ids[row:row + 1].expand(n, -1))

    @staticmethod
    def cat(parts: list[XLCond]) -> XLCond:
        return XLCond(torch.cat([p.hidden for p in parts]), torch.cat([p.pooled for p in parts]),
                      torch.cat([p.time_ids for p in parts]))


Cond = torch.Tensor | XLCond


def unet_kwargs(cond: Cond) -> dict:
    """The UNet's conditioning keywords: encoder_hidden_states, and for SDXL `added_cond_kwargs`."""
    if isinstance(cond, XLCond):
        return {"encoder_hidden_states": cond.hidden,
                "added_cond_kwargs": {"text_embeds": cond.pooled, "time_ids": cond.time_ids}}
    return {"encoder_hidden_states": cond}


def rows(cond: Cond, row: int, n: int) -> Cond:
    return cond.rows(row, n) if isinstance(cond, XLCond) else cond[row:row + 1].expand(n, -1, -1)


def cat(parts: list[Cond]) -> Cond:
    return XLCond.cat(parts) if isinstance(parts[0], XLCond) else torch.cat(parts)


def tokenize_xl(pipe, prompts: list[str], dev: torch.device) -> torch.Tensor:
    """(2, n, 77) token ids: one row per tokenizer (SDXL's second pads with `!`, not <|endoftext|>)."""
    ids = [tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids for tok in (pipe.tokenizer, pipe.tokenizer_2)]
    return torch.stack(ids).to(dev)


def encode_xl(encoder: torch.nn.Module, encoder_2: torch.nn.Module, ids: torch.Tensor,
              time_ids: torch.Tensor) -> XLCond:
    """As StableDiffusionXLPipeline.encode_prompt (clip_skip None): penultimate hidden states of both encoders,
    concatenated on channels; the pooled `text_embeds` of the second. `encoder`s may be DDP-wrapped."""
    out = encoder(ids[0], output_hidden_states=True)
    out_2 = encoder_2(ids[1], output_hidden_states=True)
    hidden = torch.cat([out.hidden_states[-2], out_2.hidden_states[-2]], dim=-1)
    return XLCond(hidden.float(), out_2.text_embeds.float(), time_ids)


def time_ids(original: tuple[int, int], crop_top_left: tuple[int, int], target: tuple[int, int]) -> list[int]:
    """SDXL's micro-conditioning of one image (diffusers' compute_time_ids): (h, w) + (y, x) + (h, w)."""
    return [*original, *crop_top_left, *target]


def photo_time_ids(image: Path, resolution: int) -> list[int]:
    """The micro-conditioning of a prepared photo, from the `prepare` stage's meta.json beside it (the same
    folder, a DVC dep of training): its size before cropping and resizing, and where the square crop began, in
    resized pixels, as diffusers' SDXL DreamBooth dataset computes them (resize, then crop). The size is the
    photo as prepare decoded it (`input_size`: upright; photos above 4 x resolution are read reduced), not the
    file header's. A padded photo (prepare.crop none) keeps crop (0, 0); one without a record is conditioned as
    what it now is: (res, res), crop (0, 0)."""
    whole = time_ids((resolution, resolution), (0, 0), (resolution, resolution))
    meta_file = image.parent / "meta.json"
    if not meta_file.is_file():
        return whole
    meta = json.loads(meta_file.read_text()).get(image.stem)
    if not isinstance(meta, dict) or "input_size" not in meta:
        return whole
    w, h = meta["input_size"]
    box = meta.get("crop_box")
    if not box:
        return time_ids((h, w), (0, 0), (resolution, resolution))
    left, top, right, _ = box
    scale = resolution / (right - left)  # the square's side -> resolution
    return time_ids((h, w), (round(top * scale), round(left * scale)), (resolution, resolution))
