"""Typed configuration: dataclasses ⇄ plain dicts ⇄ YAML, with ``key=value`` overrides.

Every run writes its full config as ``config.yaml`` next to its outputs. Unknown keys and values of
the wrong type are refused with a message naming the key and suggesting the closest valid ones. A
dataclass field whose type has a ``select(value)`` classmethod is typed by its value (e.g. the model
config by its ``kind``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from physdiff.outputs import write_text

__all__ = [
    "ConfigError",
    "bounded",
    "one_of",
    "to_dict",
    "from_dict",
    "apply_overrides",
    "merge_onto",
    "save_yaml",
    "load_yaml",
    "load_yaml_dict",
    "closest",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value is invalid."""


def bounded(
    *, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None
) -> dict[str, Any]:
    """Field metadata declaring a numeric range (checked by :func:`from_dict`, element-wise for lists);
    non-finite floats, floats beyond float32's range and integers beyond int64's are always refused. Use as
    ``field(default=..., metadata=bounded(gt=0))``."""
    return {"range": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}}


def one_of(options: Any) -> dict[str, Any]:
    """Field metadata declaring the valid values: a collection, or a callable returning one (a registry
    read when the config is checked)."""
    return {"choices": options}


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b), "le": ("<=", lambda v, b: v <= b)}
_OPS["lt"] = ("<", lambda v, b: v < b)

#: every config number ends up in a float32 tensor or an int64 (torch sizes, seeds, HDF5 attributes): larger
#: values fail deep inside a run (overflow errors, inf losses) after its folder was written, so they are
#: refused when the config is read
FLOAT32_MAX = 3.4028234663852886e38
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_representable(v: Any, key: str) -> None:
    """Refuse a non-finite float, a float beyond float32's range or an integer beyond int64's, naming the key."""
    if isinstance(v, bool):
        return
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError(f"config key {key!r} must be a finite number, got {v!r}")
        if abs(v) > FLOAT32_MAX:
            raise ConfigError(f"config key {key!r} must be at most {FLOAT32_MAX:.4g} in magnitude (float32), got {v!r}")
    elif isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
        raise ConfigError(f"config key {key!r} must fit a 64-bit integer, got {v!r}")


def _check_declared(value: Any, meta: Any, key: str) -> None:
    """Refuse a value outside the field's declared range or choices, naming the key."""
    if value is None:
        return
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        _check_representable(v, key)
        for op, bound in meta.get("range", {}).items():
            sym, ok = _OPS[op]
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not ok(v, bound):
                raise ConfigError(f"config key {key!r} must be {sym} {bound}, got {v!r}")
        if "choices" in meta:
            options = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
            if v not in options:
                raise ConfigError(f"config key {key!r}: {v!r} is not one of {sorted(options)}{closest(v, options)}")


def closest(word: str, options: Any) -> str:
    """`` (did you mean 'a' or 'b'?)`` for the valid options nearest to ``word``, or ``""``."""
    near = difflib.get_close_matches(str(word), [str(o) for o in options], n=3, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


def to_dict(cfg: Any) -> dict:
    """A dataclass (nested) as plain dicts/lists/scalars."""
    return dataclasses.asdict(cfg)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"config key {key!r}: value {value!r} fits none of {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        if hasattr(tp, "select"):
            tp = tp.select(value)
        return from_dict(tp, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = safe_yaml(value, f"config key {key!r}")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}.{i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key {key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {key!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "", where: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) dict; unknown keys are errors (``where``: a file
    name for the message)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where + ': ' if where else ''}config must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        hint = closest(unknown[0], names)
        raise ConfigError(
            f"{where + ': ' if where else ''}unknown config key(s) {[prefix + u for u in unknown]}{hint}; valid keys "
            f"under {prefix.rstrip('.') or 'the top level'}: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):  # declared ranges and choices, defaults included
        value = getattr(obj, f.name)
        _check_declared(value, f.metadata, prefix + f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {prefix + f.name!r} must be a finite number, got {value!r}")
    return obj


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars) and re-validate."""
    d = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = d
        obj: Any = cfg  # the typed object alongside: plain dict fields (free-form settings) accept new keys
        for p in parts[:-1]:
            node = _child(node, p, key)
            obj = _typed_child(obj, p)
        last = parts[-1]
        if not (isinstance(obj, dict) and not dataclasses.is_dataclass(obj) and isinstance(node, dict)):
            _child(node, last, key)
        if isinstance(node, list):
            last = int(last)
        try:
            value = safe_yaml(raw, f"override {item!r}") if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        if last == "kind" and hasattr(type(obj), "select") and value != node.get("kind"):
            node.clear()  # another kind of model: start from that kind's defaults
        node[last] = value
    return from_dict(type(cfg), d)


def merge_onto(cfg: T, data: dict, where: str = "") -> T:
    """``cfg`` with a (partial) mapping merged onto it, key by key: nested mappings merge, any other value
    (a list such as ``priors``, a scalar) replaces the one in ``cfg``; a ``kind``-typed section (the model)
    whose ``kind`` changes starts from that kind's defaults. Unknown keys and bad values are refused naming
    ``where`` (a file name) and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where + ': ' if where else ''}config must be a mapping, got {type(data).__name__}")
    try:
        return from_dict(type(cfg), _merge(to_dict(cfg), data, cfg), where=where)
    except ConfigError as e:  # a nested key's error names the file too
        if where and not str(e).startswith(where):
            raise ConfigError(f"{where}: {e}") from None
        raise


def _merge(base: dict, over: dict, typed: Any) -> dict:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        child = _typed_child(typed, key) if typed is not None else None
        if isinstance(value, dict) and isinstance(old, dict):
            if hasattr(type(child), "select") and value.get("kind", old.get("kind")) != old.get("kind"):
                out[key] = dict(value)  # another kind (model.kind): that kind's defaults, not the old kind's keys
            else:
                out[key] = _merge(old, value, child)
        else:
            out[key] = value
    return out


def _typed_child(obj: Any, part: str) -> Any:
    if dataclasses.is_dataclass(obj):
        return getattr(obj, part, None)
    if isinstance(obj, dict):
        return obj.get(part)
    if isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
        return obj[int(part)]
    return None


def _child(node: Any, part: str, key: str) -> Any:
    """``node[part]`` for a dict key or a list index, or a ConfigError naming the key (and the nearest ones)."""
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return node[int(part)]
    if isinstance(node, list):
        raise ConfigError(f"unknown config key {key!r}: index {part!r} is not in a list of {len(node)} entries")
    prefix = key[: len(key) - len(part)] if key.endswith(part) else ""
    if not isinstance(node, dict):  # e.g. `data=null` and then `data.path=...` (the CLI's --data)
        raise ConfigError(
            f"cannot set config key {key!r}: {prefix.rstrip('.')!r} is {node!r}, not a mapping (an earlier "
            "override replaced it?)"
        )
    valid = sorted(node) if isinstance(node, dict) else []
    raise ConfigError(
        f"unknown config key {key!r}{closest(part, valid)}; valid keys under {prefix.rstrip('.') or 'the top level'}: "
        f"{valid}"
    )


def save_yaml(cfg: Any, path: str | Path) -> None:
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    text = yaml.safe_dump(_plain(data), sort_keys=False)
    write_text(path, text)


#: bounds of the YAML a config may hold: nesting depth and nodes after expanding aliases (a 490-byte alias
#: "bomb" expands to billions of nodes; a real config has a few hundred)
YAML_MAX_DEPTH = 64
YAML_MAX_NODES = 100_000


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` bounded: the composed node graph is measured (without expanding aliases) and a
    document nested deeper than :data:`YAML_MAX_DEPTH` or expanding to more than :data:`YAML_MAX_NODES`
    nodes is refused with one :class:`ConfigError` naming ``where``, before anything is constructed."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            node = None
            raise ConfigError(f"{where}: the YAML is nested too deeply (more than {YAML_MAX_DEPTH} levels)") from None
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n: yaml.Node, depth: int) -> int:
            if depth > YAML_MAX_DEPTH:
                raise ConfigError(f"{where}: the YAML is nested too deeply (more than {YAML_MAX_DEPTH} levels)")
            if id(n) in sizes:
                return sizes[id(n)]
            total = 1
            if isinstance(n, yaml.SequenceNode):
                total += sum(size(c, depth + 1) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
            if total > YAML_MAX_NODES:
                raise ConfigError(
                    f"{where}: the YAML expands to more than {YAML_MAX_NODES} values (aliases repeating anchors); "
                    "a config needs no such size"
                )
            sizes[id(n)] = total
            return total

        size(node, 0)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_dict(path: str | Path) -> dict:
    """The mapping in a YAML file (``safe_load``), with errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = safe_yaml(path.read_text(), f"config file {path}") or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    return data


def load_yaml(cls: type[T], path: str | Path) -> T:
    return from_dict(cls, load_yaml_dict(path), where=str(path))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
