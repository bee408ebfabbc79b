"""The params loader: params.yaml read as DVC reads it (YAML 1.2, duplicate keys refused with their lines),
typed frozen dataclasses built from its mappings, and the messages that name a bad key (did-you-mean)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.resolver import VersionedResolver

from dreamsolo.errors import UserError


class ParamsError(UserError, ValueError):
    """A params.yaml problem; the message names the key."""


def suggest(key: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def blame(err: ParamsError, where: str, origin: dict[str, str], context: str) -> ParamsError:
    """`<where>.<key>: ...` -> `<layer that set key>.<key>: ... (<context>)`; other messages unchanged."""
    msg = str(err)
    if msg.startswith(f"{where}."):
        key = msg[len(where) + 1:].split(":", 1)[0].split("[", 1)[0]
        if key in origin:
            return ParamsError(f"{origin[key]}{msg[len(where):]} ({context})")
    return err


def _check_type(where: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        real = [a for a in args if a is not type(None)]
        if len(real) == 1 and len(args) == 2:  # an optional value: its own message, "or null"
            try:
                return _check_type(where, value, real[0])
            except ParamsError as err:
                raise ParamsError(str(err).replace(", got ", " or null, got ", 1)) from None
        for arg in real:
            try:
                return _check_type(where, value, arg)
            except ParamsError:
                continue
        raise ParamsError(f"{where}: expected {hint}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            options = ", ".join(map(str, typing.get_args(hint)))
            hint_ = suggest(value, map(str, typing.get_args(hint))) if isinstance(value, str) else ""
            raise ParamsError(f"{where}: {value!r} is not one of: {options}{hint_}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(hint)[:1]
        return tuple(_check_type(f"{where}[{i}]", v, inner) for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested section (arms.composite)
        return build(hint, value, where)
    if hint in (str, bool) and not isinstance(value, hint):
        raise ParamsError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def check_keys(data: dict, known, where: str, error: type[Exception] = ParamsError) -> None:
    """Every key of `data` is one of `known`; else `<where>.<key>: unknown key (did you mean ...?)`."""
    for key in data:
        if key not in known:
            raise error(f"{where}.{key}: unknown key{suggest(str(key), known)}")


def build(cls: type, data: Any, where: str) -> Any:
    """Make a frozen dataclass from a mapping: every key known, every value of its type, defaults kept."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(data, fields, where)
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _check_type(f"{where}.{name}", data[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{where}.{name}: missing required key")
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check:
        check(where)
    return obj


def positive(where: str, **values: float | int | None) -> None:
    for key, v in values.items():
        if v is not None and v <= 0:
            raise ParamsError(f"{where}.{key}: must be > 0, got {v}")


def non_negative(where: str, **values: float | int | None) -> None:
    for key, v in values.items():
        if v is not None and v < 0:
            raise ParamsError(f"{where}.{key}: must be >= 0, got {v}")


# --- params.yaml, read exactly as DVC reads it -------------------------------------------------------
# DVC (dvc/utils/serialize/_yaml.py: parse_yaml) loads params with ruamel.yaml YAML(typ="safe"): YAML 1.2,
# UTF-8, duplicate keys refused, an empty document is {}. PyYAML is YAML 1.1 (`1e-5` a string, `no` False,
# `010` 8, `1:20` 80), so a stage reading it with PyYAML could run other values than DVC tracks.

PLAIN = (bool, int, float, str, type(None))  # with dict and list: what dataclasses and json.dumps take


def shown(path: Path | str) -> str:
    """The path as messages show it: relative to the cwd (the study root under DVC) when inside it."""
    try:
        rel = os.path.relpath(path)
    except (OSError, ValueError):  # cwd gone, or another drive: the path as given
        return str(path)
    return str(path) if rel.startswith("..") else rel


def read_yaml(path: Path | str) -> Any:
    """The YAML file as DVC reads it (a dict for a params file), as plain dicts/lists/scalars; ParamsError
    (one line) if it is not valid YAML.

    A missing file raises FileNotFoundError, left to the caller to word."""
    name = shown(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{name}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                          "DVC reads params files as UTF-8") from None
    return load_yaml_text(text, name)


def load_yaml_text(text: str, name: str = "<text>") -> Any:
    """`read_yaml` of text already read (a file as one git commit holds it)."""
    try:
        data = YAML(typ="safe").load(text)
    except DuplicateKeyError as e:
        raise ParamsError(duplicate_message(e, text, name)) from None
    except MarkedYAMLError as e:
        raise ParamsError(syntax_message(e, name)) from None
    except YAMLError as e:  # ReaderError (control characters, ...) has a position, not a mark
        pos = getattr(e, "position", None)
        where = f":{text.count(chr(10), 0, pos) + 1}" if isinstance(pos, int) else ""
        raise ParamsError(f"{name}{where}: not valid YAML: {str(e).splitlines()[0]}") from None
    return plain(data or {}, "")  # `or {}`: as DVC does for an empty file


def syntax_message(e: MarkedYAMLError, name: str) -> str:
    mark = e.problem_mark or e.context_mark
    where = f":{mark.line + 1}" if mark else ""
    what = e.problem or e.context or type(e).__name__
    if e.problem and e.context:
        ctx = e.context_mark
        what += f" ({e.context}" + (f" from line {ctx.line + 1})" if ctx and ctx is not mark else ")")
    return f"{name}{where}: not valid YAML: {what}"


def duplicate_message(e: DuplicateKeyError, text: str, name: str) -> str:
    """`<file>:<line>: key '<dotted>' appears twice in one mapping (line A and B)`.

    ruamel marks the mapping's start and the second key, not the first one: find that in the node tree."""
    line = e.problem_mark.line + 1
    loader = YAML(typ="safe")
    found = _find_mapping(loader.compose(text), e.context_mark, "")
    if found is not None:
        node, where = found
        keys = [(_key(loader, k), (k.start_mark.line, k.start_mark.column)) for k, _ in node.value]
        at = (e.problem_mark.line, e.problem_mark.column)
        second = next((key for key, mark in keys if mark == at), _NO_KEY)
        first = next((mark for key, mark in keys if key is not _NO_KEY and key == second), at)
        if first != at:
            dotted = f"{where}.{second}" if where else str(second)
            return (f"{name}:{line}: key {dotted!r} appears twice in one mapping "
                    f"(line {first[0] + 1} and {line}); keep one")
    return f"{name}:{line}: not valid YAML: {e.problem}"  # the tree did not match: ruamel's own words


_NO_KEY = object()


def _key(loader: YAML, node: Node) -> Any:
    """The Python key a key node becomes (`1` and `1.0` are the same key); _NO_KEY for merge keys etc."""
    try:
        return loader.constructor.construct_object(node, deep=True)
    except Exception:  # noqa: BLE001 - a key ruamel cannot build alone is not the duplicate
        return _NO_KEY


def _find_mapping(node: Node, mark: Any, where: str) -> tuple[MappingNode, str] | None:
    """The mapping node starting at `mark`, with its dotted path (`a.b`, `a[0]`)."""
    if isinstance(node, MappingNode):
        if (node.start_mark.line, node.start_mark.column) == (mark.line, mark.column):
            return node, where
        for key, value in node.value:
            label = key.value if isinstance(key, ScalarNode) else "?"
            if (hit := _find_mapping(value, mark, f"{where}.{label}" if where else label)) is not None:
                return hit
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            if (hit := _find_mapping(item, mark, f"{where}[{i}]")) is not None:
                return hit
    return None


def plain(value: Any, where: str) -> Any:
    """dict / list / str / int / float / bool / None only; a YAML date, binary or set names its key."""
    if isinstance(value, dict):
        out: dict = {}
        for k, v in value.items():
            if not isinstance(k, PLAIN):
                raise ParamsError(f"{where or '<top>'}: a {type(k).__name__} key ({k!r}) is not a params key")
            out[k] = plain(v, f"{where}.{k}" if where else str(k))
        return out
    if isinstance(value, list):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    for kind in PLAIN:  # exact base types (bool before int), in case a loader hands out subclasses
        if isinstance(value, kind):
            return None if value is None else kind(value)
    raise ParamsError(f"{where}: YAML reads {value!r} as type {type(value).__name__}, not a params value "
                      "(text, number, boolean, null, list or mapping); quote it to make it text")


_YAML12 = VersionedResolver(version=(1, 2))


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, also quoting text that YAML 1.2 (DVC) reads as something else."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    node = dumper.represent_str(value)
    # PyYAML already quotes what 1.1 reads as non-text (`no`, `010`); `1e-5`, `0o10` it leaves plain
    if node.style is None and str(_YAML12.resolve(ScalarNode, value, (True, False))) != "tag:yaml.org,2002:str":
        node.style = "'"
    return node


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    """YAML text that read_yaml (YAML 1.2, DVC) and yaml.safe_load (1.1) both read back as `data`."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
