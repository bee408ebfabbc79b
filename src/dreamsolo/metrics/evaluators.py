"""The evaluate stage's models, loaded once per pair, and whether their numbers mean anything."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from dreamsolo.config import Evaluate
from dreamsolo.config.sections import RANDOM
from dreamsolo.metrics import random_metrics, random_warning
from dreamsolo.metrics.clip import ClipEvaluator, load_clip
from dreamsolo.metrics.dino import DinoEvaluator, load_dino
from dreamsolo.metrics.lpips_metric import LpipsEvaluator, load_lpips


@dataclass
class Evaluators:
    clip: ClipEvaluator
    lpips: LpipsEvaluator
    dino: DinoEvaluator
    names: dict[str, str] = field(default_factory=dict)  # evaluator -> "model (weights)", as reports show it
    # derived from the three models, never passed in, so a report cannot claim more than was loaded
    pretrained: bool = field(init=False)
    random_metrics: tuple[str, ...] = field(init=False)  # the metrics whose evaluator is random
    warning: str | None = field(init=False)  # names exactly those metrics

    def __post_init__(self) -> None:
        self.pretrained = self.clip.pretrained and self.lpips.pretrained and self.dino.pretrained
        random = {name for name, ev in (("CLIP", self.clip), ("LPIPS", self.lpips), ("DINO", self.dino))
                  if not ev.pretrained}
        self.random_metrics = random_metrics(random)
        self.warning = random_warning(self.random_metrics)


def _weights(value: str, root: Path | None) -> str:
    """A weights file named relative to the study root, if it is one there; else the value unchanged
    (an open_clip tag, or a path open_clip / timm resolve themselves)."""
    if root is not None and not Path(value).is_absolute() and (root / value).is_file():
        return str(root / value)
    return value


def load_evaluators(cfg: Evaluate, device: str | torch.device = "cpu",
                    root: Path | None = None) -> Evaluators:
    """CLIP, LPIPS and DINO as `cfg` says; relative weights-file paths resolve against `root`."""
    clip_weights = None if cfg.clip_pretrained in (None, RANDOM) else _weights(cfg.clip_pretrained, root)
    dino_weights = False if cfg.dino_pretrained in (None, False, RANDOM) else cfg.dino_pretrained
    dino_weights = _weights(dino_weights, root) if isinstance(dino_weights, str) else dino_weights
    ev = Evaluators(
        clip=load_clip(cfg.clip_model, clip_weights, device),
        lpips=load_lpips(cfg.lpips_net, cfg.lpips_pretrained, device),
        dino=load_dino(cfg.dino_model, dino_weights, device),
    )
    ev.names = evaluator_names(cfg, ev)
    return ev


def evaluator_names(cfg: Evaluate, ev: Evaluators) -> dict[str, str]:
    """What each metric family was computed by, e.g. {"CLIP": "toy-clip (data/evaluators/toy-clip.safetensors)"};
    `random` where the loaded network is randomly initialised, whatever the settings asked for."""
    def name(model: str, weights: object, loaded: bool) -> str:
        return f"{model} ({weights if loaded else RANDOM})"

    dino_weights = "timm hub" if cfg.dino_pretrained is True else cfg.dino_pretrained
    return {"CLIP": name(cfg.clip_model, cfg.clip_pretrained, ev.clip.pretrained),
            "LPIPS": name(cfg.lpips_net, "lpips package", ev.lpips.pretrained),
            "DINO": name(cfg.dino_model, dino_weights, ev.dino.pretrained)}
