"""The study's params: `load_study` reads params.yaml once into a `Study`. Unknown keys and bad values
stop with a message naming the key; every pair's training settings are merged and checked at load."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from dreamsolo.config.sections import (Arms, Evaluate, Pair, Prepare, Preset, Prompts,
                                       Sampling, Tracking)
from dreamsolo.config.train import Train, merge_train, written_at
from dreamsolo.layout import TrainStage, check_id
from dreamsolo.params import ParamsError, build, read_yaml, suggest

STAGE_KEYS: tuple[TrainStage, ...] = ("train_scene", "train_instance")
TOP_KEYS = ("model", "presets", "prompts", "classes", "pairs", "prepare", "priors", "train",
            *STAGE_KEYS, "sample", "evaluate", "arms", "tracking")


@dataclass(frozen=True)
class Study:
    root: Path
    preset_name: str
    preset: Preset
    prompts: Prompts
    classes: dict[str, str]
    pairs: dict[str, Pair]
    prepare: Prepare
    priors: Sampling
    sample: Sampling
    evaluate: Evaluate
    raw: dict
    tracking: Tracking = field(default_factory=Tracking)
    arms: Arms = field(default_factory=Arms)
    trains: dict[tuple[str, str], Train] = field(default_factory=dict)  # (pair, stage) -> merged settings

    def pair(self, pair_id: str) -> Pair:
        if pair_id not in self.pairs:
            raise ParamsError(f"pairs.{pair_id}: no such pair{suggest(pair_id, self.pairs)}")
        return self.pairs[pair_id]

    def class_noun(self, class_id: str) -> str:
        if class_id not in self.classes:
            raise ParamsError(f"classes.{class_id}: no such class{suggest(class_id, self.classes)}")
        return self.classes[class_id]

    def train(self, pair_id: str, stage: TrainStage) -> Train:
        """The pair's merged settings for one training stage (built and checked when the params loaded)."""
        self.pair(pair_id)
        return self.trains[(pair_id, stage)]

    def written_at(self, pair_id: str, stage: TrainStage, key: str) -> str:
        """Where params.yaml sets the pair's merged training `key` (`train.mixed_precision`), for messages."""
        return written_at(self.raw, pair_id, self.pairs[pair_id], stage, (self.preset_name, self.preset), key)


def resolve_sampling(cfg: Sampling, preset: Preset) -> Sampling:
    """`cfg` as it runs: denoising steps capped by the preset, guidance left null taken from the preset;
    so MLflow params, manifests and sampling.json record the settings used, not the requested ones."""
    steps = cfg.steps if preset.sample_steps is None else min(cfg.steps, preset.sample_steps)
    scale = preset.guidance_scale if cfg.guidance_scale is None else cfg.guidance_scale
    rescale = preset.guidance_rescale if cfg.guidance_rescale is None else cfg.guidance_rescale
    return dataclasses.replace(cfg, steps=steps, guidance_scale=float(scale), guidance_rescale=float(rescale))


def _read(path: Path) -> dict:
    try:
        raw = read_yaml(path)  # as DVC reads it (YAML 1.2, duplicate keys refused)
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    return _check_sections(raw, path)


def _check_sections(raw: object, path: Path) -> dict:
    if not raw:  # DVC reads an empty file as {} and stops at dvc.yaml's first ${...}, in its own words
        raise ParamsError(f"{path.name}: the file is empty (no params sections); restore it "
                          f"(git checkout -- {path.name}) or write every section")
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
    return raw


def _preset(raw: dict) -> tuple[str, Preset]:
    presets = raw["presets"] or {}
    name = raw["model"]["preset"]
    if not isinstance(name, str):
        raise ParamsError(f"model.preset: expected a preset name, got {name!r}")
    if name not in presets:
        raise ParamsError(f"model.preset: unknown preset {name!r}{suggest(str(name), presets)} "
                          f"(known: {', '.join(presets)})")
    for other, entry in presets.items():  # a broken preset fails now, not when someone switches to it
        build(Preset, entry, f"presets.{other}")
    return name, build(Preset, presets[name], f"presets.{name}")


def _classes_and_pairs(raw: dict) -> tuple[dict[str, str], dict[str, Pair]]:
    classes = raw["classes"] or {}
    for cid, noun in classes.items():
        _check_id("classes", "class", cid)
        if not isinstance(noun, str) or not noun.strip():
            raise ParamsError(f"classes.{cid}: expected a class noun, got {noun!r}")
    pairs = {}
    for pid, entry in (raw["pairs"] or {}).items():
        _check_id("pairs", "pair", pid)
        pair = build(Pair, entry, f"pairs.{pid}")
        for key in ("scene_class", "instance_class"):
            cid = getattr(pair, key)
            if cid not in classes:
                raise ParamsError(f"pairs.{pid}.{key}: {cid!r} is not a key of `classes`{suggest(cid, classes)}; "
                                  f"name one of {', '.join(classes) or '(none)'}, or add `{cid}: <noun>` under classes")
        pairs[pid] = pair
    if not pairs:
        raise ParamsError("pairs: the study needs at least one pair")
    return dict(classes), pairs


def _check_id(section: str, kind: str, value: object) -> None:
    """A pair or class id is a folder name and part of DVC stage names (`train_scene@<id>`): refused here,
    with the section it sits in, before DVC meets it (an empty id is DVC's "unexpected error")."""
    try:
        check_id(kind, value)  # type: ignore[arg-type]
    except ValueError as e:
        folder = " (and its folder under data/pairs/)" if kind == "pair" else ""
        raise ParamsError(f"{section}: {e}; rename it{folder}") from None


def load_study(root: Path, params_file: str = "params.yaml") -> Study:
    return study_from(root, _read(root / params_file))


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_weight_files(ev: Evaluate, mine: dict | None, root: Path, preset: str) -> None:
    """Local evaluator weights must exist and be safetensors: a pickle can run code when loaded."""
    _check_clip_model(ev.clip_model, "evaluate.clip_model" if (mine or {}).get("clip_model") is not None
                      else f"presets.{preset}.evaluate.clip_model")
    for key in ("clip_pretrained", "dino_pretrained"):
        value = getattr(ev, key)
        if not isinstance(value, str) or not ("/" in value or value.endswith(WEIGHT_SUFFIXES)):
            continue  # an open_clip tag, `random`, or timm's hub weights (true)
        written = f"evaluate.{key}" if (mine or {}).get(key) is not None else f"presets.{preset}.evaluate.{key}"
        path = Path(value) if Path(value).is_absolute() else root / value
        if not path.is_file():
            raise ParamsError(f"{written}: {value}: file not found")
        if path.suffix != ".safetensors":
            raise ParamsError(f"{written}: {value}: pickled weights are not loaded (unpickling can run code); "
                              "convert the file with safetensors.torch.save_file and name the .safetensors")


def _check_clip_model(name: str | None, written: str) -> None:
    """An open_clip model name open_clip knows (its config files, read without importing it) or one of
    the configs shipped here (tiny-clip, toy-clip); hub and local-dir schemas are left to open_clip."""
    import importlib.util

    if not name or name.startswith(("hf-hub:", "local-dir:")):
        return
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return  # not installed: the evaluate stage says so
    known = {p.stem for p in (Path(spec.submodule_search_locations[0]) / "model_configs").glob("*.json")}
    known |= {p.stem for p in Path(__file__).resolve().parents[1].glob("*-clip.json")}
    if name not in known:
        raise ParamsError(f"{written}: unknown open_clip model {name!r}{suggest(name, sorted(known))}")


def study_from(root: Path, raw: dict, where: str = "params.yaml") -> Study:
    """The study of an already-read params mapping (a sweep point's params, checked before it is queued)."""
    raw = _check_sections(raw, root / where)
    name, preset = _preset(raw)
    classes, pairs = _classes_and_pairs(raw)
    # every pair's training settings, merged once: a bad train key fails now, not halfway through the study
    trains = {(pid, stage): merge_train(raw, pid, pair, stage, (name, preset))
              for pid, pair in pairs.items() for stage in STAGE_KEYS}
    evaluate = build(Evaluate, raw["evaluate"], "evaluate").over(preset.evaluate)
    _check_weight_files(evaluate, raw["evaluate"], root, name)
    return Study(
        root=root, preset_name=name, preset=preset,
        prompts=build(Prompts, raw["prompts"], "prompts"), classes=classes, pairs=pairs,
        prepare=build(Prepare, raw["prepare"], "prepare"),
        priors=resolve_sampling(build(Sampling, raw["priors"], "priors"), preset),
        sample=resolve_sampling(build(Sampling, raw["sample"], "sample"), preset),
        evaluate=evaluate,
        raw=raw, tracking=build(Tracking, raw["tracking"], "tracking"), trains=trains,
        arms=build(Arms, raw["arms"], "arms"),
    )
