"""Every path of the study (docs/FORMATS.md), anchored at the study root. Ids are checked and every
path a stage writes stays inside data/, models/ or reports/. Imports nothing from the project, so
any module (config included) can use it without a cycle."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: no trailing newline
# Folders a stage may write below; a path that resolves elsewhere is refused.
WRITABLE = ("data", "models", "reports")

TrainStage = Literal["train_scene", "train_instance"]
SUBDIR = {"train_scene": "scene", "train_instance": "instance"}
MODEL_INFO = "dreamsolo_model.json"  # in trained folders: {"method": full|lora, "base": relative path}


def repo_root() -> Path:
    """The study root: $DREAMSOLO_ROOT, else the nearest parent of the cwd holding params.yaml."""
    env = os.environ.get("DREAMSOLO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "params.yaml").is_file():
            return p
    raise FileNotFoundError(f"no params.yaml in {here} or its parents: run from the study root")


def check_id(kind: str, value: str) -> str:
    """Pair and class ids become folder names: refuse anything that is not a plain name."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{kind} id {value!r} is not a safe folder name "
            "(letters, digits, '_', '-', '.'; must start with a letter or digit; at most 64 chars)"
        )
    return value


def inside(root: Path, path: Path) -> Path:
    """Resolve `path` under `root` and refuse it if it escapes data/, models/ or reports/."""
    full = (root / path).resolve()
    for top in WRITABLE:
        if full.is_relative_to((root / top).resolve()):
            return full
    raise ValueError(f"path {path} leaves the study's data/, models/ and reports/ folders")


def _under(root: Path, top: str, kind: str, value: str, suffix: str = "") -> Path:
    return inside(root, Path(top) / f"{check_id(kind, value)}{suffix}")


def raw_pairs_dir(root: Path) -> Path:
    """data/pairs/: the raw photos (git); read, never written."""
    return root / "data" / "pairs"


def base_dir(root: Path, preset: str) -> Path:
    return _under(root, "models/base", "preset", preset)


def prepared_dir(root: Path, pair_id: str) -> Path:
    return _under(root, "data/prepared", "pair", pair_id)


def priors_dir(root: Path, class_id: str) -> Path:
    return _under(root, "data/priors", "class", class_id)


def model_dir(root: Path, pair_id: str, stage: TrainStage) -> Path:
    return _under(root, "models", "pair", pair_id) / SUBDIR[stage]


def checkpoint_dir(root: Path, pair_id: str, stage: TrainStage) -> Path:
    return _under(root, "models/.checkpoints", "pair", pair_id) / SUBDIR[stage]


def train_log(root: Path, pair_id: str, stage: TrainStage) -> Path:
    """reports/train/<pair>/<scene|instance>.csv: the loss curve, a DVC plots file."""
    return _under(root, "reports/train", "pair", pair_id) / f"{SUBDIR[stage]}.csv"


def samples_dir(root: Path, pair_id: str, base: bool = False) -> Path:
    """data/samples/<pair>/ (Stage II weights) or data/samples_base/<pair>/ (the base model: the floor)."""
    return _under(root, "data/samples_base" if base else "data/samples", "pair", pair_id)


def pair_json(root: Path, pair_id: str) -> Path:
    """reports/pairs/<pair>.json: the pair's summary (tuned and floor) written by `evaluate`."""
    return _under(root, "reports/pairs", "pair", pair_id, ".json")


def pair_csv(root: Path, pair_id: str, base: bool = False) -> Path:
    """reports/pairs/<pair>.csv (fine-tuned) or reports/pairs_base/<pair>.csv (floor): per-sample scores."""
    return _under(root, "reports/pairs_base" if base else "reports/pairs", "pair", pair_id, ".csv")


def run_receipt(root: Path, dvc_stage: str) -> Path:
    """reports/runs/<dvc stage>.json: that its MLflow run was logged (DVC-cached, so a fresh clone reruns
    the stages whose other outputs git holds, and its MLflow store gets their runs)."""
    stage, _, key = dvc_stage.partition("@")
    name = check_id("stage", stage) + (f"@{check_id('stage key', key)}" if key else "")
    return inside(root, Path("reports/runs") / f"{name}.json")


def is_model(folder: Path) -> bool:
    """A base or trained model folder: a diffusers pipeline, or a LoRA folder with its model info."""
    return (folder / "model_index.json").is_file() or (folder / MODEL_INFO).is_file()


# The arms (params `arms`): one more model, sample set and score set per (pair, arm), beside the method's.
def arm_inputs_dir(root: Path, pair_id: str) -> Path:
    """data/arm_inputs/<pair>/: what a pair's arm stages read of params and priors, resolved by `arm_inputs`."""
    return _under(root, "data/arm_inputs", "pair", pair_id)


def arm_model_dir(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "models", "pair", pair_id) / "arms" / check_id("arm", arm)


def arm_checkpoint_dir(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "models/.checkpoints", "pair", pair_id) / "arms" / check_id("arm", arm)


def arm_train_log(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "reports/train", "pair", pair_id) / f"arm_{check_id('arm', arm)}.csv"


def arm_samples_dir(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "data/samples_arms", "arm", arm) / check_id("pair", pair_id)


def arm_json(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "reports/arms", "arm", arm) / f"{check_id('pair', pair_id)}.json"


def arm_csv(root: Path, pair_id: str, arm: str) -> Path:
    return _under(root, "reports/arms", "arm", arm) / f"{check_id('pair', pair_id)}.csv"
