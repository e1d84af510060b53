"""Typed YAML: dotted ``key=value`` overrides and YAML trees checked against (nested) dataclasses.

Generic machinery behind :mod:`reglab.config`: every value is coerced to its field's type hint
(bool/int/float/str, ``Optional``, ``Literal``, ``list[...]``, nested dataclasses), and every mistake becomes one
:class:`~reglab.errors.UserError` naming the key, what was expected and, for a near-miss key or choice, the
likely intended one.
"""
from __future__ import annotations

import dataclasses
import math
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} {rule}.")


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a UserError naming the key and the expected type."""
    origin = typing.get_origin(tp)
    bad = UserError(f"{key}: expected {_type_name(tp)}, got {value!r}.")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError:
                pass
        raise bad
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
            # YAML 1.1 reads off/no/false as False and on/yes/true as True: take the word the choices use
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in choices), value)
        if value in choices:
            return value
        raise UserError(f"{key}: {value!r} is not allowed; expected {_type_name(tp)}"
                        f"{suggest(str(value), [str(a) for a in choices])}.")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is float:
        out = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                out = float(value)
            except ValueError:
                pass
        if out is None:
            raise bad
        if not math.isfinite(out):
            raise UserError(f"{key}: expected a finite number, got {value!r}.")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not a user error


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(f"unknown config key {full!r}{suggest(key, names)}. "
                            f"Valid keys in {prefix.rstrip('.') or 'the config'}: {', '.join(names)}.")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise UserError(f"{full}: expected a mapping of keys ({', '.join(f.name for f in dataclasses.fields(tp))}), got {value!r}.")
            kwargs[key] = build(tp, value, f"{full}.")
        else:
            kwargs[key] = _coerce(value, tp, full)
    return cls(**kwargs)


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"override {dotted!r}: {part!r} is a value, not a section.")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is read as YAML."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like section.key=value, e.g. optim.lr=0.05.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise UserError(f"override {text!r}: the key must be dotted, e.g. train.epochs=5.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"override {text!r}: cannot read the value: {exc.problem or exc}.") from None
    return key, value


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of sections (data:, model:, train: ...), not {type(data).__name__}.")
    return data
