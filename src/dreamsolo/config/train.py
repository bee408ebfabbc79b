"""The training stages' settings: `train` <- `train_<stage>.defaults` <- the preset's `train_<stage>` <-
`by_category` <- the pair, merged once per (pair, stage) when the params load."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from dreamsolo.config.sections import CATEGORIES, Dtype, Pair, Preset
from dreamsolo.layout import TrainStage
from dreamsolo.params import ParamsError, blame, build, check_keys, non_negative, positive, suggest


@dataclass(frozen=True)
class Train:
    """One training stage's settings after merging: train <- train_<stage> <- preset <- by_category <- pair."""

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
    mixed_precision: Dtype = "fp32"  # autocast dtype; fp32 = no mixed precision
    gradient_checkpointing: bool = False
    allow_tf32: bool = True
    use_8bit_adam: bool = False
    eval_every: int | None = None  # steps between evaluations of the model in training; None = off
    eval_images: int = 2  # seeds per evaluated prompt
    stop: Literal["fixed", "adaptive"] = "fixed"  # adaptive: stop early on the evaluations (training/evals.py)
    stop_patience: int = 2  # evaluations without a fidelity gain of stop_min_delta before stopping
    stop_min_delta: float = 0.005
    stop_max_drift: float = 0.35  # class drift (LPIPS to the base model's class samples) that stops training

    def validate(self, where: str) -> None:
        positive(where, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                 grad_accum=self.grad_accum, log_every=self.log_every,
                 checkpoint_every=self.checkpoint_every, keep_checkpoints=self.keep_checkpoints,
                 lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                 adam_epsilon=self.adam_epsilon, max_grad_norm=self.max_grad_norm)
        if not 0 <= self.lora_dropout < 1:
            raise ParamsError(f"{where}.lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        positive(where, eval_every=self.eval_every, eval_images=self.eval_images,
                 stop_patience=self.stop_patience, stop_max_drift=self.stop_max_drift)
        non_negative(where, stop_min_delta=self.stop_min_delta)
        if self.stop == "adaptive" and self.eval_every is None:
            raise ParamsError(f"{where}.stop: adaptive stops on the evaluations; set eval_every too")
        if self.method == "lora" and not self.lora_targets:
            raise ParamsError(f"{where}.lora_targets: LoRA needs at least one target module")
        non_negative(where, prior_weight=self.prior_weight, replay_weight=self.replay_weight,
                     warmup_steps=self.warmup_steps, adam_weight_decay=self.adam_weight_decay)
        for key in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ParamsError(f"{where}.{key}: must be in [0, 1), got {getattr(self, key)}")


def _stage_section(raw: dict, stage: TrainStage) -> tuple[dict, dict]:
    """(defaults, by_category) of `train_<stage>`, every category name checked."""
    section = raw[stage]
    if not isinstance(section, dict):
        raise ParamsError(f"{stage}: expected a mapping with `defaults` and `by_category`, got {section!r}")
    check_keys(section, ("defaults", "by_category"), stage)
    if set(section) != {"defaults", "by_category"}:
        raise ParamsError(f"{stage}: expected exactly two keys, `defaults` and `by_category`")
    by_cat = section["by_category"] or {}
    if not isinstance(by_cat, dict):
        raise ParamsError(f"{stage}.by_category: expected a mapping of category -> overrides")
    for cat in by_cat:
        if cat not in CATEGORIES:
            raise ParamsError(f"{stage}.by_category.{cat}: unknown category{suggest(str(cat), CATEGORIES)}")
    return section["defaults"] or {}, by_cat


def merge_train(raw: dict, pair_id: str, pair: Pair, stage: TrainStage, preset: tuple[str, Preset]) -> Train:
    """Merge train <- train_<stage>.defaults <- presets.<name>.<stage> <- by_category[category] <-
    pairs.<id>.<stage>, then cap the steps by the preset's train_steps; a bad value is blamed on the
    layer that set it."""
    merged, origin = _merge(raw, pair_id, pair, stage, preset)
    if stage == "train_scene" and "replay_weight" in merged:
        raise ParamsError(f"{origin['replay_weight']}.replay_weight: scene replay only exists in "
                          "train_instance (set it under train_instance)")
    where = f"{stage} (pair {pair_id}, category {pair.category})"
    if merged.get("mixed_precision") == "no":  # the old spelling: one dtype vocabulary now (fp32 | bf16 | fp16)
        raise ParamsError(f"{origin['mixed_precision']}.mixed_precision: 'no' is now spelled 'fp32' "
                          "(no mixed precision), as sample.precision spells it")
    try:
        cfg = build(Train, merged, where)
    except ParamsError as e:  # name the layer that set the bad value, not the merged result
        raise blame(e, where, origin, f"{stage} of pair {pair_id}, category {pair.category}") from None
    cap = preset[1].train_steps
    return cfg if cap is None or cfg.steps <= cap else dataclasses.replace(cfg, steps=cap)


def written_at(raw: dict, pair_id: str, pair: Pair, stage: TrainStage, preset: tuple[str, Preset], key: str) -> str:
    """The dotted key where the pair's merged `key` was set, as the user wrote it (`train.mixed_precision`),
    or `train.<key>` for a built-in default."""
    return f"{_merge(raw, pair_id, pair, stage, preset)[1].get(key, 'train')}.{key}"


def _merge(raw: dict, pair_id: str, pair: Pair, stage: TrainStage, preset: tuple[str, Preset]) -> tuple[dict, dict]:
    """(merged overrides, key -> the params layer that set it last); every layer's keys checked."""
    preset_name, preset_cfg = preset
    defaults, by_cat = _stage_section(raw, stage)
    known = [f.name for f in dataclasses.fields(Train)]
    # (where, overrides, merged for this pair?): every category's overrides are checked, so a typo
    # in a category no pair uses yet does not wait for the first such pair
    # the preset's layer (what this model needs) under the category's (what this kind of subject
    # needs on the study's model: what a sweep report's by_category block sets)
    layers = [("train", raw.get("train") or {}, True), (f"{stage}.defaults", defaults, True)]
    layers += [(f"presets.{preset_name}.{stage}", getattr(preset_cfg, stage), True)]
    layers += [(f"{stage}.by_category.{cat}", by_cat[cat] or {}, cat == pair.category) for cat in by_cat]
    layers += [(f"pairs.{pair_id}.{stage}", getattr(pair, stage), True)]
    merged: dict = {}
    origin: dict[str, str] = {}  # key -> the params layer that set it last, named in messages
    for where_layer, layer, use in layers:
        if not isinstance(layer, dict):
            raise ParamsError(f"{where_layer}: expected a mapping, got {layer!r}")
        check_keys(layer, known, where_layer)
        if use:
            merged.update(layer)
            origin.update(dict.fromkeys(layer, where_layer))
    return merged, origin
