"""The params sections that load into one typed, frozen dataclass each (all but the training ones)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dreamsolo.params import ParamsError, non_negative, positive

CATEGORIES = ("object", "animal", "human")
# One dtype vocabulary for training and sampling (torch dtypes: sampling.DTYPES)
Dtype = Literal["fp32", "bf16", "fp16"]
# dtype of the sampling models; auto = fp16 on CUDA, fp32 on a CPU (bf16 only when asked)
Precision = Literal["auto", "fp32", "bf16", "fp16"]


RANDOM = "random"
"""Evaluator weights `random`: randomly initialised (every surface then names the metrics it makes)."""


@dataclass(frozen=True)
class EvaluatorChoice:
    """`presets.<name>.evaluate`: the evaluators a model's samples are scored with (`evaluate.*` overrides)."""

    clip_model: str = "ViT-B-32"  # open_clip model name
    clip_pretrained: str = "openai"  # open_clip tag | local weights file | random
    dino_model: str = "vit_small_patch16_224.dino"  # timm model name | toy-dino
    dino_pretrained: bool | str = True  # true = timm hub weights | local weights file | random

    def validate(self, where: str) -> None:
        for key in ("clip_model", "clip_pretrained", "dino_model", "dino_pretrained"):
            if getattr(self, key) in ("", False):
                raise ParamsError(f"{where}.{key}: {getattr(self, key)!r}; name the weights, or `random`")


@dataclass(frozen=True)
class Preset:
    source: str
    revision: str | None = None
    resolution: int = 512
    seed: int = 0
    train_steps: int | None = None
    sample_steps: int | None = None  # caps priors.steps and sample.steps (denoising steps)
    # the model's sampler settings (SDXL samples at 5.0, a zero-terminal-SNR model wants guidance_rescale):
    # used where `priors.*` / `sample.*` leave them null
    guidance_scale: float = 7.5
    guidance_rescale: float = 0.0
    config: str | None = None  # single-file sources: diffusers folder or hub id giving the architecture
    # the preset's own training settings (a toy model wants 100x SD's lr): under by_category and the pair
    train_scene: dict = field(default_factory=dict)
    train_instance: dict = field(default_factory=dict)
    evaluate: EvaluatorChoice = field(default_factory=EvaluatorChoice)  # evaluators follow the model

    def validate(self, where: str) -> None:
        positive(where, resolution=self.resolution, train_steps=self.train_steps, sample_steps=self.sample_steps)
        check_guidance(where, self.guidance_scale, self.guidance_rescale)
        if self.resolution % 8:
            raise ParamsError(f"{where}.resolution: must be a multiple of 8, got {self.resolution}")
        suffix = Path(self.source).suffix
        if suffix == ".ckpt":
            raise ParamsError(f"{where}.source: {self.source} is a pickled .ckpt; only .safetensors single files "
                              "are loaded (nothing is unpickled): convert it to .safetensors first")
        if self.config is not None and suffix != ".safetensors":
            raise ParamsError(f"{where}.config: only used when `source` is a single-file .safetensors "
                              f"checkpoint (source is {self.source!r}); set it to null")
        if self.config == "":
            raise ParamsError(f"{where}.config: empty string; use null or a diffusers folder / hub id")


@dataclass(frozen=True)
class Prompts:
    scene_token: str
    instance_token: str
    recontext: tuple[str, ...] = ()

    def validate(self, where: str) -> None:
        for key in ("scene_token", "instance_token"):
            tok = getattr(self, key)
            if not tok.isalnum():
                raise ParamsError(f"{where}.{key}: {tok!r} must be a single alphanumeric word")
        if self.scene_token == self.instance_token:
            raise ParamsError(f"{where}: scene_token and instance_token must differ")
        for i, p in enumerate(self.recontext):
            if "{instance}" not in p:
                raise ParamsError(f"{where}.recontext[{i}]: {p!r} has no {{instance}} placeholder")


@dataclass(frozen=True)
class Pair:
    category: Literal["object", "animal", "human"]
    scene_class: str
    instance_class: str
    train_scene: dict = field(default_factory=dict)
    train_instance: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Prepare:
    crop: Literal["center", "none"] = "center"
    min_size: int = 64

    def validate(self, where: str) -> None:
        positive(where, min_size=self.min_size)


@dataclass(frozen=True)
class Sampling:
    """`priors` (class images for prior preservation) and `sample` (the pair's prompt set) alike."""

    num_images: int = 4  # per prompt
    steps: int = 20
    guidance_scale: float | None = None  # null = the preset's (`Study.priors` / `Study.sample` hold it resolved)
    batch_size: int = 8
    seed: int = 0  # image i uses seed + i
    precision: Precision = "auto"
    guidance_rescale: float | None = None  # null = the preset's

    def validate(self, where: str) -> None:
        positive(where, num_images=self.num_images, steps=self.steps, batch_size=self.batch_size)
        check_guidance(where, self.guidance_scale, self.guidance_rescale)


def check_guidance(where: str, scale: float | None, rescale: float | None) -> None:
    non_negative(where, guidance_scale=scale)
    if rescale is not None and not 0.0 <= rescale <= 1.0:
        raise ParamsError(f"{where}.guidance_rescale: must be in [0, 1] (0 = off), got {rescale}")


@dataclass(frozen=True)
class Evaluate:
    """`evaluate`; its evaluator keys are null where the preset's (`presets.<name>.evaluate`) apply.
    `Study.evaluate` holds it resolved: every key set, `random` where an evaluator is random."""

    clip_model: str | None = None
    clip_pretrained: str | None = None
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    lpips_pretrained: bool = True
    dino_model: str | None = None
    dino_pretrained: bool | str | None = None  # True = timm hub weights, a str = local weights file or random
    batch_size: int = 16

    @property
    def pretrained(self) -> bool:
        """False when any evaluator is randomly initialised: its numbers are not meaningful."""
        return self.clip_pretrained not in (None, RANDOM) and self.lpips_pretrained and \
            self.dino_pretrained not in (None, False, RANDOM)

    def over(self, preset: EvaluatorChoice) -> Evaluate:
        """These settings over the preset's: each evaluator key left null takes the preset's value."""
        mine = {k: getattr(self, k) for k in ("clip_model", "clip_pretrained", "dino_model", "dino_pretrained")}
        return dataclasses.replace(self, **{k: getattr(preset, k) if v is None else v for k, v in mine.items()})

    def validate(self, where: str) -> None:
        positive(where, batch_size=self.batch_size)
        for key in ("clip_model", "clip_pretrained", "dino_model", "dino_pretrained"):
            if getattr(self, key) == "":
                raise ParamsError(f"{where}.{key}: empty string; use null for the preset's, or `random`")
        if self.dino_pretrained is False:
            raise ParamsError(f"{where}.dino_pretrained: false; use `random` for random init (or null for the preset's)")


@dataclass(frozen=True)
class Tracking:
    log_weights: Literal["reference", "artifact"] = "reference"
    sweep: str | None = None  # set per experiment by `dreamsolo sweep`: MLflow tags, no stage output
    sweep_point: str | None = None


ARMS = ("two_stage", "joint", "composite", "masked", "lora_merge", "sine")
"""The arms a study can run beside its method (two stages, Stage II with scene replay) and the floor."""


@dataclass(frozen=True)
class Composite:
    weight: float = 1.0  # loss weight of the composite (instance pasted into the scene, composed prompt)

    def validate(self, where: str) -> None:
        positive(where, weight=self.weight)


@dataclass(frozen=True)
class Merge:
    scene_weight: float = 1.0  # weights of the two deltas from the base in the merged model
    instance_weight: float = 1.0

    def validate(self, where: str) -> None:
        positive(where, scene_weight=self.scene_weight, instance_weight=self.instance_weight)


@dataclass(frozen=True)
class Sine:
    min_crop: float = 0.1  # a patch's side, per axis, as a share of the photo: uniform in [min_crop, max_crop]
    max_crop: float = 1.0
    patches: int = 64  # patches drawn (seeded) and encoded once; each step draws among them

    def validate(self, where: str) -> None:
        positive(where, min_crop=self.min_crop, patches=self.patches)
        if not self.min_crop <= self.max_crop <= 1.0:
            raise ParamsError(f"{where}: need min_crop <= max_crop <= 1, got {self.min_crop}, {self.max_crop}")


@dataclass(frozen=True)
class Arms:
    """`arms`: which methods run beside the study's own (their stages: train_arm/sample_arm/evaluate_arm)."""

    run: tuple[str, ...] = ()
    two_stage: dict = field(default_factory=dict)
    joint: dict = field(default_factory=dict)
    composite: Composite = field(default_factory=Composite)
    masked: dict = field(default_factory=dict)
    lora_merge: Merge = field(default_factory=Merge)
    sine: Sine = field(default_factory=Sine)

    def validate(self, where: str) -> None:
        from dreamsolo.params import suggest

        for i, arm in enumerate(self.run):
            if arm not in ARMS:
                raise ParamsError(f"{where}.run[{i}]: unknown arm {arm!r}{suggest(str(arm), ARMS)} "
                                  f"(known: {', '.join(ARMS)})")
        if len(set(self.run)) != len(self.run):
            raise ParamsError(f"{where}.run: an arm is listed twice")
        for key in ("two_stage", "joint", "masked"):
            if getattr(self, key):
                raise ParamsError(f"{where}.{key}: this arm has no settings; expected {{}}")
