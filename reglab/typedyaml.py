"""Typed YAML: dotted ``key=value`` overrides and YAML trees checked against (nested) dataclasses.

Generic machinery behind :mod:`reglab.config`: every value is coerced to its field's type hint
(bool/int/float/str, ``Optional``, ``Literal``, ``list[...]``, nested dataclasses), and every mistake becomes one
:class:`~reglab.errors.UserError` naming the key, what was expected and, for a near-miss key or choice, the
likely intended one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import UserError


def require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise UserError(f"{key}={short(value)} {rule}.")


def short(value: Any) -> str:
    """``repr`` cut to a readable size (a YAML alias bomb's repr would never finish)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother, r.maxlong = 3, 8, 8, 8, 80, 80, 40
    return r.repr(value)


MERGE = "tag:yaml.org,2002:merge"
MAX_MERGED = 100_000  # keys a mapping may hold after its merge keys are expanded


def _merged_size(node: yaml.MappingNode, memo: dict[int, int]) -> int:
    """How many keys ``node`` holds once its merge keys are expanded (each node counted once: linear time)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 0  # a mapping that merges itself
    n = 0
    for key_node, value in node.value:
        if key_node.tag != MERGE:
            n += 1
            continue
        for sub in value.value if isinstance(value, yaml.SequenceNode) else [value]:
            if isinstance(sub, yaml.MappingNode):
                n += _merged_size(sub, memo)
    memo[id(node)] = n
    return n


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (YAML says keys are unique; PyYAML would
    keep the last one silently). Merge keys (``<<: *base``) work as in PyYAML: a key of the mapping itself
    overrides a merged one, which is not a duplicate; only keys written twice in the mapping itself are."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self._refuse_duplicates(node, deep)
            if _merged_size(node, {}) > MAX_MERGED:  # PyYAML copies merged keys: nested merges grow exponentially
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"its merge keys (<<) expand it to more than {MAX_MERGED} keys",
                    node.start_mark,
                )
            self.flatten_mapping(node)  # merged keys first, then the mapping's own (which win)
        return super().construct_mapping(node, deep=deep)

    def _refuse_duplicates(self, node, deep):
        """Raise if a key appears twice among ``node``'s own keys, or among those of a mapping it merges."""
        checked = self.__dict__.setdefault("_checked", set())  # each node once (aliases repeat them)
        if id(node) in checked:
            return
        checked.add(id(node))
        own = [k for k, _ in node.value if k.tag != MERGE]
        for key_node, value in node.value:
            if key_node.tag == MERGE:
                for sub in value.value if isinstance(value, yaml.SequenceNode) else [value]:
                    if isinstance(sub, yaml.MappingNode):
                        self._refuse_duplicates(sub, deep)
        seen: dict[Any, Any] = {}
        for key_node in own:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {short(key)} (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark


def load_yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML (duplicate keys refused); every failure a one-line UserError naming ``where``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())[:300]  # one line
        raise UserError(f"{where} is not valid YAML{at}: {problem}.") from None
    except RecursionError:
        raise UserError(f"{where} is nested too deeply to read as YAML.") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date 2021-13-45, an int of 5000 digits
        raise UserError(f"{where} is not valid YAML: {' '.join(str(exc).split())[:200]}.") from None


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
    if dataclasses.is_dataclass(tp):
        return f"a mapping of keys ({', '.join(f.name for f in dataclasses.fields(tp))})"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` as type ``tp`` or raise a UserError naming the key and the expected type."""
    origin = typing.get_origin(tp)
    bad = UserError(f"{key}: expected {_type_name(tp)}, got {short(value)}.")
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
        raise UserError(
            f"{key}: {short(value)} is not allowed; expected {_type_name(tp)}"
            f"{suggest(value if isinstance(value, str) else short(value), [str(a) for a in choices])}."
        )
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise bad
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):  # an entry of a list of mappings, e.g. optim.param_groups[0]
        if not isinstance(value, dict):
            raise bad
        return dataclass_from_dict(tp, value, f"{key}.")
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
            raise UserError(f"{key}: expected a finite number, got {short(value)}.")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {tp!r} for {key}")  # a bug, not a user error


def dataclass_from_dict(cls: type, values: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise UserError(
                f"{prefix.rstrip('.') or 'the config'}: key {short(key)} is not a name; valid keys: "
                f"{', '.join(names)}."
            )
        full = f"{prefix}{key}"
        if key not in names:
            raise UserError(
                f"unknown config key {full!r}{suggest(key, names)}. "
                f"Valid keys in {prefix.rstrip('.') or 'the config'}: {', '.join(names)}."
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise UserError(
                    f"{full}: expected a mapping of keys ({', '.join(f.name for f in dataclasses.fields(tp))}), got {short(value)}."
                )
            kwargs[key] = dataclass_from_dict(tp, value, f"{full}.")
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


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted keys (``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``); the inverse of
    :func:`set_dotted` over every leaf."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten_tree(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(before: dict[str, Any], after: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    """The dotted keys (sorted) whose values differ between two flat trees (:func:`flatten_tree`), a key missing
    on one side counting as None; keys in ``ignore`` are left out."""
    return sorted(k for k in before.keys() | after.keys() if k not in ignore and before.get(k) != after.get(k))


LIST_ALL_UP_TO = 10  # a "not found" message lists every name up to this many; beyond, the nearest ones


def named_yaml(name: str | Path, folder: Path, what: str, give: str, lister: str | None = None) -> Path:
    """``folder/NAME.yaml`` (or ``folder/NAME``) for a name such as a recipe's or a study's; otherwise one
    :class:`UserError` saying to ``give`` a file or one of the names in ``folder``, with the nearest one. With
    more than :data:`LIST_ALL_UP_TO` names and a ``lister`` (the command that lists them all), the message
    names only the closest few and that command, so it stays readable."""
    for cand in (folder / f"{name}.yaml", folder / str(name)):
        if cand.is_file():
            return cand
    known = sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []
    if lister is None or len(known) <= LIST_ALL_UP_TO:
        raise UserError(
            f"{what} {str(name)!r} not found: give {give} or one of: "
            f"{', '.join(known) or f'(no {what} files installed)'}{suggest(str(name), known)}."
        )
    word = str(name).lower()
    near = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    near += [k for k in known if word and word in k.lower() and k not in near]
    if len(near) == 1:
        hint = f" (did you mean {near[0]!r}?)"
    elif near:
        shown = ", ".join(repr(k) for k in near[:5])
        hint = f" (closest: {shown}{f' and {len(near) - 5} more' if len(near) > 5 else ''})"
    else:
        hint = ""
    raise UserError(
        f"{what} {str(name)!r} not found{hint}: give {give} or a {what} name; `{lister}` lists all {len(known)}."
    )


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=0.05"`` -> ``("optim.lr", 0.05)``; the value is read as YAML."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a byte that is not UTF-8 on the command line (Python keeps it as a surrogate)
        shown = text.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        raise UserError(f"override '{shown}' is not valid UTF-8 text; retype it.") from None
    if "=" not in text:
        raise UserError(f"override {short(text)} must look like section.key=value, e.g. optim.lr=0.05.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise UserError(f"override {short(text)}: the key must be dotted, e.g. train.epochs=5.")
    if not raw.strip():
        return key, None
    return key, load_yaml(raw, f"override {short(text)}: the value")


def read_yaml(path: Path, what: str = "a mapping of sections (data:, model:, train: ...)") -> dict[str, Any]:
    import stat

    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise UserError(f"{path} is a directory, not a YAML file; give the recipe file inside it.")
        if not stat.S_ISREG(mode):
            raise UserError(f"{path} is not a regular file (a FIFO or device); give a YAML file.")
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8."
        ) from None
    data = load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold {what}, not {type(data).__name__}.")
    return data
