"""Typed settings from a YAML file and PREFIX_* environment variables, validated with named fields.

Each service declares frozen dataclasses with documented defaults and a `validate()` method; this
module only coerces strings and mappings into them, so the rules for every service read the same.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


def positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def open_unit(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}")


def int_range(name: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def host_port(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{name} must be host:port, got {value!r}")


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Turn YAML / environment values into the field's type, with the field named on failure."""
    if isinstance(target, type) and dataclasses.is_dataclass(target) and not isinstance(value, target):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping")
        return _build(target, value, name + ".")
    if isinstance(target, type) and target is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{name} must be a boolean, got {value!r}")
        return lowered in ("true", "1", "yes")
    if target in (int, float) and isinstance(value, str):
        try:
            return target(value)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a number, got {value!r}") from exc
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _build(cls: Any, data: Mapping[str, Any], prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + u for u in sorted(unknown))}")
    hints = {name: _resolve(cls, f.type) for name, f in fields.items()}
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def _resolve(cls: Any, annotation: Any) -> Any:
    if not isinstance(annotation, str):
        return annotation
    simple = {"str": str, "int": int, "float": float, "bool": bool}
    if annotation in simple:
        return simple[annotation]
    module_globals = vars(__import__(cls.__module__, fromlist=["_"]))
    return module_globals.get(annotation, annotation)


def _env_overrides(environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    start = f"{prefix}_"
    for key, value in environ.items():
        if not key.startswith(start) or key == f"{prefix}_CONFIG":
            continue
        path = key[len(start) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def load(cls: type[T], prefix: str, path: Path | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from a YAML file ($<PREFIX>_CONFIG or `path`) with <PREFIX>_* variables on top.

    `<PREFIX>_A__B=1` sets field `a.b`: a double underscore descends into a nested settings class.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    config_var = f"{prefix}_CONFIG"
    path = path or (Path(environ[config_var]) if environ.get(config_var) else None)
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read settings file {path}: {exc}") from exc
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"settings file {path} must hold a mapping at the top level")
        data = dict(loaded)
    data = _merge(data, _env_overrides(environ, prefix))
    settings: T = _build(cls, data)
    validate = getattr(settings, "validate", None)
    if callable(validate):
        validate()
    return settings
