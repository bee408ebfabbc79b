"""Strict params machinery: typed frozen dataclasses from YAML mappings, with messages naming the key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal

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
        for arg in (a for a in args if a is not type(None)):
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
    if hint in (str, bool) and not isinstance(value, hint):
        raise ParamsError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def build(cls: type, data: Any, where: str) -> Any:
    """Make a frozen dataclass from a mapping: every key known, every value of its type, defaults kept."""
    if not isinstance(data, dict):
        raise ParamsError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ParamsError(f"{where}.{key}: unknown key{suggest(key, fields)}")
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
