"""Where each stage's outputs live (docs/FORMATS.md). Ids are checked; paths stay in data/models/reports."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dreamsolo.config import Study
from dreamsolo.paths import check_id, inside

Stage = Literal["train_scene", "train_instance"]
SUBDIR = {"train_scene": "scene", "train_instance": "instance"}


def base_dir(study: Study) -> Path:
    return inside(study.root, Path("models/base") / check_id("preset", study.preset_name))


def prepared_dir(study: Study, pair_id: str) -> Path:
    return inside(study.root, Path("data/prepared") / check_id("pair", pair_id))


def priors_dir(study: Study, class_id: str) -> Path:
    return inside(study.root, Path("data/priors") / check_id("class", class_id))


def model_dir(study: Study, pair_id: str, stage: Stage) -> Path:
    return inside(study.root, Path("models") / check_id("pair", pair_id) / SUBDIR[stage])


def checkpoint_dir(study: Study, pair_id: str, stage: Stage) -> Path:
    return inside(study.root, Path("models/.checkpoints") / check_id("pair", pair_id) / SUBDIR[stage])


def samples_dir(study: Study, pair_id: str) -> Path:
    return inside(study.root, Path("data/samples") / check_id("pair", pair_id))


def pair_report(study: Study, pair_id: str) -> tuple[Path, Path]:
    """(summary json, per-sample csv) of `evaluate@<pair>`."""
    folder = inside(study.root, Path("reports/pairs"))
    return folder / f"{check_id('pair', pair_id)}.json", folder / f"{pair_id}.csv"
