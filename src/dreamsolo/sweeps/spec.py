"""sweeps.yaml: named grids and random searches over params keys, checked before anything is queued.

    lr_steps:
      description: Stage II learning rate x steps, per category
      pairs: [cat_grass, cup_brick]      # all | a category (object | animal | human) | a list of pair ids
      grid:                              # every combination; or `random: {count, seed, space}`
        train_instance.defaults.lr: [5.0e-5, 1.0e-4, 2.0e-4]
      rule: {max_class_drift: 0.35}      # optional: how the report picks the best point

A point is one combination; its DVC experiment is named `<sweep>-<hash of settings and pairs>`, so the
same point queued again is recognised as done. Every error is one line naming the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamsolo.config import CATEGORIES, STAGE_KEYS, Study, study_from
from dreamsolo.params import ParamsError, check_keys, read_yaml, suggest

SWEEPS_FILE = "sweeps.yaml"
ENTRY_KEYS = ("description", "pairs", "grid", "random", "rule")
RULE_KEYS = ("max_class_drift",)
DEFAULT_MAX_DRIFT = 0.35  # LPIPS of the class prompt's samples to the base model's (same seed)


class SweepError(ParamsError):
    """A bad sweep file: one line naming the file, the sweep and the key."""


@dataclass(frozen=True)
class Point:
    sweep: str
    settings: dict[str, Any]  # dotted params key -> value, in the file's key order
    pairs: tuple[str, ...]

    @property
    def name(self) -> str:
        """The DVC experiment name: the same settings and pairs always give the same name."""
        blob = json.dumps([sorted(self.settings.items()), list(self.pairs)], default=str)
        return f"{self.sweep}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    @property
    def label(self) -> str:
        return ", ".join(f"{short_key(k)}={fmt_value(v)}" for k, v in self.settings.items())

    def set_params(self) -> list[str]:
        """`dvc exp run -S` overrides (Hydra's `++`: set, or add a key the file lacks, e.g. under
        by_category), including the MLflow tags of tracking.sweep / sweep_point."""
        sets = {**self.settings, "tracking.sweep": self.sweep, "tracking.sweep_point": f"{self.name}: {self.label}"}
        return [f"++{k}={hydra_value(v)}" for k, v in sets.items()]


@dataclass(frozen=True)
class Sweep:
    name: str
    description: str
    keys: tuple[str, ...]
    points: tuple[Point, ...]
    pairs: tuple[str, ...]
    max_class_drift: float

    @property
    def targets(self) -> list[str]:
        """What each experiment reproduces: the swept pairs' scores and everything upstream of them."""
        return [f"evaluate@{p}" for p in self.pairs]


def short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def hydra_value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # quoted: spaces, colons and commas survive Hydra's parser


def get_key(params: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def set_key(params: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def load_sweeps(root: Path, declared: set[str] | None = None) -> dict[str, Sweep]:
    """Every sweep of `root/sweeps.yaml`, checked against params.yaml; `declared` (the params keys the
    stages depend on, `queue.declared_params`) also refuses keys no stage reads."""
    path = root / SWEEPS_FILE
    if not path.is_file():
        raise SweepError(f"{SWEEPS_FILE}: no such file in {root.name or root} (docs/SWEEPS.md shows one)")
    data = read_yaml(path)
    if not isinstance(data, dict) or not data:
        raise SweepError(f"{SWEEPS_FILE}: expected a mapping of sweep name -> sweep")
    raw = read_yaml(root / "params.yaml")
    base = study_from(root, raw)
    return {str(n): _sweep(root, str(n), e, raw, base, declared) for n, e in data.items()}


def load_sweep(root: Path, name: str, declared: set[str] | None = None) -> Sweep:
    sweeps = load_sweeps(root, declared)
    if name not in sweeps:
        raise SweepError(f"{SWEEPS_FILE}: no sweep {name!r}{suggest(name, sweeps)} (known: {', '.join(sweeps)})")
    return sweeps[name]


def _sweep(root: Path, name: str, entry: Any, raw: dict, base: Study, declared: set[str] | None) -> Sweep:
    where = f"{SWEEPS_FILE}: {name}"
    if not isinstance(entry, dict):
        raise SweepError(f"{where}: expected a mapping with `grid` or `random`, got {entry!r}")
    check_keys(entry, ENTRY_KEYS, where, SweepError)
    if ("grid" in entry) == ("random" in entry):
        raise SweepError(f"{where}: give exactly one of `grid` and `random`")
    pairs = _pairs(where, entry.get("pairs", "all"), base)
    combos = _grid(where, entry["grid"]) if "grid" in entry else _random(where, entry["random"])
    keys = tuple(combos[0])
    for key in keys:
        _check_key(where, key, [c[key] for c in combos], raw, base, pairs, declared)
    points = tuple(Point(name, c, pairs) for c in combos)
    for point in points:  # every point loads as a study: wrong types and bad values stop here
        params = copy.deepcopy(raw)
        for k, v in point.settings.items():
            set_key(params, k, v)
        try:
            study_from(root, params)
        except ParamsError as e:
            raise SweepError(f"{where}: point {point.label}: {e}") from None
    return Sweep(name, str(entry.get("description") or ""), keys, points, pairs, _rule(where, entry.get("rule")))


def _pairs(where: str, spec: Any, base: Study) -> tuple[str, ...]:
    if spec == "all":
        return tuple(base.pairs)
    if isinstance(spec, str):
        if spec not in CATEGORIES:
            raise SweepError(f"{where}.pairs: {spec!r} is not `all`, a category ({', '.join(CATEGORIES)}) "
                             "or a list of pair ids")
        chosen = tuple(p for p, pair in base.pairs.items() if pair.category == spec)
        if not chosen:
            raise SweepError(f"{where}.pairs: no pair of category {spec!r} in params.yaml")
        return chosen
    if not isinstance(spec, list) or not spec:
        raise SweepError(f"{where}.pairs: expected all, a category or a non-empty list of pair ids, got {spec!r}")
    for p in spec:
        if p not in base.pairs:
            raise SweepError(f"{where}.pairs: {p!r} is not a pair of params.yaml{suggest(str(p), base.pairs)}")
    return tuple(dict.fromkeys(spec))


def _values(where: str, key: str, values: Any) -> list[Any]:
    if not isinstance(values, list):
        raise SweepError(f"{where}.{key}: expected a list of values, got {values!r}")
    if not values:
        raise SweepError(f"{where}.{key}: empty list (give at least one value)")
    return values


def _grid(where: str, grid: Any) -> list[dict[str, Any]]:
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{where}.grid: empty grid (give key: [values, ...])")
    lists = {str(k): _values(f"{where}.grid", str(k), v) for k, v in grid.items()}
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def _random(where: str, spec: Any) -> list[dict[str, Any]]:
    where = f"{where}.random"
    if not isinstance(spec, dict) or set(spec) - {"count", "seed", "space"} or "space" not in spec:
        raise SweepError(f"{where}: expected {{count, seed, space}}, got {spec!r}")
    count, seed, space = spec.get("count", 4), spec.get("seed", 0), spec["space"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise SweepError(f"{where}.count: expected a positive integer, got {count!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SweepError(f"{where}.seed: expected an integer, got {seed!r}")
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{where}.space: empty (give key: [choices] or key: {{low, high, log}})")
    draws = {str(k): _sampler(f"{where}.space.{k}", v) for k, v in space.items()}
    rng = random.Random(seed)
    points: list[dict[str, Any]] = []
    for _ in range(count * 20):  # distinct points; a small choice space gives fewer than count
        point = {k: draw(rng) for k, draw in draws.items()}
        if point not in points:
            points.append(point)
        if len(points) == count:
            break
    return points


def _sampler(where: str, spec: Any):
    if isinstance(spec, list):
        choices = _values(where.rsplit(".", 1)[0], where.rsplit(".", 1)[1], spec)
        return lambda rng: rng.choice(choices)
    if not isinstance(spec, dict) or set(spec) - {"low", "high", "log", "int"} or not {"low", "high"} <= set(spec):
        raise SweepError(f"{where}: expected a list of choices or {{low, high, log, int}}, got {spec!r}")
    low, high, log, as_int = spec["low"], spec["high"], bool(spec.get("log")), bool(spec.get("int"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise SweepError(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
    if log and low <= 0:
        raise SweepError(f"{where}: a log range needs low > 0, got {low!r}")

    def draw(rng: random.Random):
        x = math.exp(rng.uniform(math.log(low), math.log(high))) if log else rng.uniform(low, high)
        return int(round(x)) if as_int else float(f"{x:.3g}")
    return draw


def _check_key(where: str, key: str, values: list[Any], raw: dict, base: Study, pairs: tuple[str, ...],
               declared: set[str] | None) -> None:
    where = f"{where}: {key}"
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    exists, current = get_key(raw, key)
    if not exists and not (parent and get_key(raw, parent)[0]):
        top = key.split(".")[0]
        raise SweepError(f"{where}: no such params key{suggest(top, raw) if top not in raw else ''}")
    if exists and isinstance(current, (dict, list)):
        raise SweepError(f"{where}: a whole section; sweep its keys one by one")
    for v in values:
        if exists and not _same_type(current, v):
            raise SweepError(f"{where}: value {v!r} is {type(v).__name__}, params.yaml has "
                             f"{type(current).__name__} ({current!r})")
    if declared is not None and not any(key == d or key.startswith(d + ".") for d in declared):
        raise SweepError(f"{where}: no stage reads this key (dvc.yaml declares no param over it), "
                         "so a point would rerun nothing and change no result")
    _check_effect(where, key, values, raw, base, pairs)


def _same_type(current: Any, value: Any) -> bool:
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float))
    return type(current) is type(value)


def _check_effect(where: str, key: str, values: list[Any], raw: dict, base: Study, pairs: tuple[str, ...]) -> None:
    """A key whose values all give the swept pairs the same settings (a higher params layer sets it,
    or a preset caps it) would make a sweep of identical points: refuse it, naming the cause."""
    seen = []
    for v in values:
        params = copy.deepcopy(raw)
        set_key(params, key, v)
        try:
            study = study_from(base.root, params)
        except ParamsError:
            return  # the per-point check names the bad value
        seen.append(_effective(study, pairs))
    if len(values) > 1 and all(s == seen[0] for s in seen[1:]):
        raise SweepError(f"{where}: every value gives the swept pairs the same settings ({_why_no_effect(key, base, pairs)})")


def _effective(study: Study, pairs: tuple[str, ...]) -> Any:
    trains = {(p, s): study.train(p, s) for p in pairs for s in STAGE_KEYS}
    rest = dataclasses.replace(study, raw={}, trains={}, pairs={p: study.pairs[p] for p in pairs})
    return trains, rest


def _why_no_effect(key: str, base: Study, pairs: tuple[str, ...]) -> str:
    field = short_key(key)
    stage = next((s for s in STAGE_KEYS if s in key.split(".")), None)
    if stage is None:
        return "a preset cap or a higher layer overrides it"
    parts = key.split(".")
    if "by_category" in parts and parts.index("by_category") + 1 < len(parts):
        cat = parts[parts.index("by_category") + 1]
        if all(base.pairs[p].category != cat for p in pairs):
            return f"no swept pair is of category {cat!r}"
    layers = [f"presets.{base.preset_name}.{stage}"] + [f"{stage}.by_category.{base.pairs[p].category}" for p in pairs]
    layers += [f"pairs.{p}.{stage}" for p in pairs]
    setters = [lay for lay in dict.fromkeys(layers) if field in (get_key(base.raw, lay)[1] or {})]
    return f"overridden by {', '.join(setters)}" if setters else "capped by the preset"


def _rule(where: str, rule: Any) -> float:
    if rule is None:
        return DEFAULT_MAX_DRIFT
    if not isinstance(rule, dict) or set(rule) - set(RULE_KEYS):
        raise SweepError(f"{where}.rule: expected {{max_class_drift: <LPIPS>}}, got {rule!r}")
    value = rule.get("max_class_drift", DEFAULT_MAX_DRIFT)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise SweepError(f"{where}.rule.max_class_drift: expected a positive number, got {value!r}")
    return float(value)
