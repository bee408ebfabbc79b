"""Typed, frozen params: `load_study` reads params.yaml once into a `Study` (config/study.py); the sections'
dataclasses live in config/sections.py, the training layers' merge in config/train.py. Re-exports only."""

from dreamsolo.config.sections import (ARMS, CATEGORIES, Arms, Dtype, Evaluate, Pair, Precision, Prepare, Preset,
                                       Prompts, Sampling, Tracking)
from dreamsolo.config.study import STAGE_KEYS, Study, load_study, resolve_sampling, study_from
from dreamsolo.config.train import Train
from dreamsolo.params import ParamsError, build

__all__ = ["ARMS", "Arms", "CATEGORIES", "Dtype", "Evaluate", "Pair", "ParamsError", "Precision", "Prepare", "Preset",
           "Prompts", "STAGE_KEYS", "Sampling", "Study", "Tracking", "Train", "build", "load_study",
           "resolve_sampling", "study_from"]
