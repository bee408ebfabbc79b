"""Typed, frozen params sections. Unknown keys and bad values stop with a message naming the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from dreamsolo.paths import check_id
from dreamsolo.strict import ParamsError, blame, build, non_negative, positive, read_yaml, suggest

__all__ = ["ParamsError", "build", "load_study", "Study", "Train"]

CATEGORIES = ("object", "animal", "human")
# dtype of the sampling models; auto = fp16 on CUDA, bf16 on CPUs with native bf16, else fp32
Precision = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class Preset:
    source: str
    revision: str | None = None
    resolution: int = 512
    seed: int = 0
    train_steps: int | None = None
    sample_steps: int | None = None  # caps priors.steps and sample.steps (denoising steps)
    config: str | None = None  # single-file sources: diffusers folder or hub id giving the architecture

    def validate(self, where: str) -> None:
        positive(where, resolution=self.resolution, train_steps=self.train_steps, sample_steps=self.sample_steps)
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
class Priors:
    num_images: int = 8
    steps: int = 20
    guidance_scale: float = 7.5
    batch_size: int = 8
    seed: int = 0
    precision: Precision = "auto"

    def validate(self, where: str) -> None:
        positive(where, num_images=self.num_images, steps=self.steps, batch_size=self.batch_size)
        non_negative(where, guidance_scale=self.guidance_scale)


@dataclass(frozen=True)
class Train:
    """One training stage's settings after merging: train <- train_<stage> <- by_category <- pair."""

    steps: int
    lr: float
    prior_weight: float = 1.0
    replay_weight: float = 0.0
    seed: int = 0
    batch_size: int = 1
    grad_accum: int = 1
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    log_every: int = 5
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    method: Literal["full", "lora"] = "full"
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    train_text_encoder: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    allow_tf32: bool = True
    use_8bit_adam: bool = False

    def validate(self, where: str) -> None:
        positive(where, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                 grad_accum=self.grad_accum, log_every=self.log_every,
                 checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
                 lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                 adam_epsilon=self.adam_epsilon, max_grad_norm=self.max_grad_norm)
        if not 0 <= self.lora_dropout < 1:
            raise ParamsError(f"{where}.lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if self.method == "lora" and not self.lora_targets:
            raise ParamsError(f"{where}.lora_targets: LoRA needs at least one target module")
        non_negative(where, prior_weight=self.prior_weight, replay_weight=self.replay_weight,
                     warmup_steps=self.warmup_steps, adam_weight_decay=self.adam_weight_decay)
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ParamsError(f"{where}.{key}: must be in [0, 1), got {getattr(self, key)}")


@dataclass(frozen=True)
class Sample:
    num_images: int = 4
    steps: int = 20
    guidance_scale: float = 7.5
    batch_size: int = 8
    seed: int = 0
    precision: Precision = "auto"

    def validate(self, where: str) -> None:
        positive(where, num_images=self.num_images, steps=self.steps, batch_size=self.batch_size)
        non_negative(where, guidance_scale=self.guidance_scale)


@dataclass(frozen=True)
class Evaluate:
    clip_model: str = "ViT-B-32"
    clip_pretrained: str | None = "openai"
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    lpips_pretrained: bool = True
    dino_model: str = "vit_small_patch16_224.dino"
    dino_pretrained: bool | str = True  # True = timm hub weights, a str = local weights file, False = random
    batch_size: int = 16

    @property
    def pretrained(self) -> bool:
        """False when any evaluator is randomly initialised: its numbers are not meaningful."""
        return self.clip_pretrained is not None and self.lpips_pretrained and self.dino_pretrained is not False

    def validate(self, where: str) -> None:
        positive(where, batch_size=self.batch_size)
        for key in ("clip_pretrained", "dino_pretrained"):
            if getattr(self, key) == "":
                raise ParamsError(f"{where}.{key}: empty string; use null / false for random init")


@dataclass(frozen=True)
class Tracking:
    log_weights: Literal["reference", "artifact"] = "reference"


STAGE_KEYS = ("train_scene", "train_instance")
TOP_KEYS = ("model", "presets", "prompts", "classes", "pairs", "prepare", "priors", "train",
            *STAGE_KEYS, "sample", "evaluate", "tracking")


@dataclass(frozen=True)
class Study:
    root: Path
    preset_name: str
    preset: Preset
    prompts: Prompts
    classes: dict[str, str]
    pairs: dict[str, Pair]
    prepare: Prepare
    priors: Priors
    sample: Sample
    evaluate: Evaluate
    raw: dict
    tracking: Tracking = field(default_factory=Tracking)

    def pair(self, pair_id: str) -> Pair:
        if pair_id not in self.pairs:
            raise ParamsError(f"pairs.{pair_id}: no such pair{suggest(pair_id, self.pairs)}")
        return self.pairs[pair_id]

    def class_noun(self, class_id: str) -> str:
        if class_id not in self.classes:
            raise ParamsError(f"classes.{class_id}: no such class{suggest(class_id, self.classes)}")
        return self.classes[class_id]

    def train(self, pair_id: str, stage: Literal["train_scene", "train_instance"]) -> Train:
        """Merge train <- train_<stage> <- by_category[category] <- pairs.<id>.<stage>."""
        pair = self.pair(pair_id)
        section = self.raw[stage]
        if not isinstance(section, dict):
            raise ParamsError(f"{stage}: expected a mapping with `defaults` and `by_category`, "
                              f"got {section!r}")
        for key in section:
            if key not in ("defaults", "by_category"):
                raise ParamsError(f"{stage}.{key}: unknown key{suggest(key, ('defaults', 'by_category'))}")
        if set(section) != {"defaults", "by_category"}:
            raise ParamsError(f"{stage}: expected exactly two keys, `defaults` and `by_category`")
        by_cat = section["by_category"] or {}
        if not isinstance(by_cat, dict):
            raise ParamsError(f"{stage}.by_category: expected a mapping of category -> overrides")
        for cat in by_cat:
            if cat not in CATEGORIES:
                raise ParamsError(f"{stage}.by_category.{cat}: unknown category"
                                  f"{suggest(str(cat), CATEGORIES)}")
        known = [f.name for f in dataclasses.fields(Train)]
        # (where, overrides, merged for this pair?): every category's overrides are checked, so a typo
        # in a category no pair uses yet does not wait for the first such pair
        layers = [("train", self.raw.get("train") or {}, True),
                  (f"{stage}.defaults", section["defaults"] or {}, True)]
        layers += [(f"{stage}.by_category.{cat}", by_cat[cat] or {}, cat == pair.category) for cat in by_cat]
        layers += [(f"pairs.{pair_id}.{stage}", getattr(pair, stage), True)]
        merged: dict = {}
        origin: dict[str, str] = {}  # key -> the params layer that set it last, named in messages
        for where_layer, layer, use in layers:
            if not isinstance(layer, dict):
                raise ParamsError(f"{where_layer}: expected a mapping, got {layer!r}")
            for key in layer:
                if key not in known:
                    raise ParamsError(f"{where_layer}.{key}: unknown key{suggest(key, known)}")
            if use:
                merged.update(layer)
                origin.update(dict.fromkeys(layer, where_layer))
        if stage == "train_scene" and "replay_weight" in merged:
            raise ParamsError(f"{origin['replay_weight']}.replay_weight: scene replay only exists in "
                              "train_instance (set it under train_instance)")
        where = f"{stage} (pair {pair_id}, category {pair.category})"
        try:
            cfg = build(Train, merged, where)
        except ParamsError as e:  # name the layer that set the bad value, not the merged result
            raise blame(e, where, origin, f"{stage} of pair {pair_id}, category {pair.category}") from None
        cap = self.preset.train_steps
        if cap is not None and cfg.steps > cap:
            cfg = dataclasses.replace(cfg, steps=cap)
        return cfg


def cap_steps(cfg, cap: int | None):
    """`cfg` (Priors or Sample) with its denoising steps capped by the preset: what actually runs, so
    MLflow params, manifests and sampling.json record the steps used, not the requested ones."""
    return cfg if cap is None or cfg.steps <= cap else dataclasses.replace(cfg, steps=cap)


def load_study(root: Path, params_file: str = "params.yaml") -> Study:
    path = root / params_file
    try:
        raw = read_yaml(path)  # as DVC reads it (YAML 1.2, duplicate keys refused)
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    for key in raw:
        if key not in TOP_KEYS:
            raise ParamsError(f"{key}: unknown params section{suggest(key, TOP_KEYS)}")
    for key in TOP_KEYS:
        if key not in raw:
            raise ParamsError(f"{key}: missing params section")
    model = raw["model"]
    if not isinstance(model, dict) or set(model) != {"preset"}:
        raise ParamsError("model: expected exactly one key, `preset`")
    for key in ("presets", "classes", "pairs"):
        if not isinstance(raw[key] or {}, dict):
            raise ParamsError(f"{key}: expected a mapping of id -> entry, got {type(raw[key]).__name__}")
    presets = raw["presets"] or {}
    name = model["preset"]
    if not isinstance(name, str):
        raise ParamsError(f"model.preset: expected a preset name, got {name!r}")
    if name not in presets:
        raise ParamsError(f"model.preset: unknown preset {name!r}{suggest(str(name), presets)} "
                          f"(known: {', '.join(presets)})")
    for other, entry in presets.items():  # a broken preset fails now, not when someone switches to it
        build(Preset, entry, f"presets.{other}")
    classes = raw["classes"] or {}
    for cid, noun in classes.items():
        check_id("class", cid)
        if not isinstance(noun, str) or not noun.strip():
            raise ParamsError(f"classes.{cid}: expected a class noun, got {noun!r}")
    pairs = {}
    for pid, entry in (raw["pairs"] or {}).items():
        check_id("pair", pid)
        pair = build(Pair, entry, f"pairs.{pid}")
        for key in ("scene_class", "instance_class"):
            cid = getattr(pair, key)
            if cid not in classes:
                raise ParamsError(f"pairs.{pid}.{key}: {cid!r} is not a key of `classes`{suggest(cid, classes)}")
        pairs[pid] = pair
    if not pairs:
        raise ParamsError("pairs: the study needs at least one pair")
    preset = build(Preset, presets[name], f"presets.{name}")
    study = Study(
        root=root, preset_name=name, preset=preset,
        prompts=build(Prompts, raw["prompts"], "prompts"), classes=dict(classes), pairs=pairs,
        prepare=build(Prepare, raw["prepare"], "prepare"),
        priors=cap_steps(build(Priors, raw["priors"], "priors"), preset.sample_steps),
        sample=cap_steps(build(Sample, raw["sample"], "sample"), preset.sample_steps),
        evaluate=build(Evaluate, raw["evaluate"], "evaluate"),
        raw=raw, tracking=build(Tracking, raw["tracking"], "tracking"),
    )
    for pid in pairs:  # fail on a bad train key now, not halfway through the study
        for stage in STAGE_KEYS:
            study.train(pid, stage)
    return study
