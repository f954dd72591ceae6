"""Typed settings trees: one declaration per setting drives the file, the variable, validation and the docs.

A service declares frozen dataclasses whose fields are made with :func:`setting`, which carries the
default, the reason for it and the check that guards it. This module then

* builds the tree from a YAML file and ``PREFIX_*`` variables (``PREFIX_A__B=1`` sets ``a.b``),
* validates every field with its own check, naming the dotted path on failure, then each class's
  ``check_relations()`` for rules that span fields,
* renders the reference page (:func:`reference_markdown`) from the same declarations,

so a setting cannot exist in the code without a check and a documented default (as gunicorn's
``Setting`` classes do). The checks are one family of small callables (:class:`Check`); the pure cores
(forecaster, policy) use the same ones in ``__post_init__`` so a bad value reads the same everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message names it."""


Check = Callable[[str, Any], None]
"""Raises ConfigError naming `name` when `value` is not acceptable."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def in_range(lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A finite number in the interval; `lo_open`/`hi_open` exclude the ends."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"

    def check(name: str, value: Any) -> None:
        ok = _is_number(value)
        if ok:
            ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
        if not ok:
            raise ConfigError(f"{name} must be a finite number in {left}{lo:g}, {hi:g}{right}, got {value!r}")

    return check


def positive() -> Check:
    """A finite number > 0."""

    def check(name: str, value: Any) -> None:
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")

    return check


def non_negative() -> Check:
    def check(name: str, value: Any) -> None:
        if not _is_number(value) or value < 0:
            raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}")

    return check


def boolean() -> Check:
    """A real bool: a pure core built in code must not take 1 or "yes" for True (files and variables are
    coerced before this check runs)."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")

    return check


def open_unit() -> Check:
    """A fraction strictly between 0 and 1 (probabilities, quantile levels, thresholds)."""
    return in_range(0.0, 1.0, lo_open=True, hi_open=True)


def int_range(lo: int, hi: int) -> Check:
    """An integer (not a bool) in [lo, hi]."""

    def check(name: str, value: Any) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")

    return check


def one_of(*choices: str, case_insensitive: bool = False) -> Check:
    def check(name: str, value: Any) -> None:
        probe = value.upper() if case_insensitive and isinstance(value, str) else value
        allowed = tuple(c.upper() for c in choices) if case_insensitive else choices
        if probe not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    return check


def host_port() -> Check:
    def check(name: str, value: Any) -> None:
        host, sep, port = str(value).rpartition(":")
        if not isinstance(value, str) or not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{name} must be host:port, got {value!r}")

    return check


def http_url() -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")

    return check


def non_empty() -> Check:
    def check(name: str, value: Any) -> None:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty string, got {value!r}")

    return check


def all_of(*checks: Check) -> Check:
    def check(name: str, value: Any) -> None:
        for c in checks:
            c(name, value)

    return check


LOG_LEVEL = one_of("DEBUG", "INFO", "WARNING", "ERROR", case_insensitive=True)


def setting(default: Any, why: str, check: Check | None = None) -> Any:
    """A settings field: its default, why that default, and the check every value must pass.

    Mutable defaults (dicts, lists) are copied per instance. Nested settings classes pass the class
    itself as `default`.
    """
    metadata = {"why": why, "check": check}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    if isinstance(default, dict | list | set):
        frozen = default
        return dataclasses.field(default_factory=lambda: type(frozen)(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Run every field's check (recursing into nested settings), then the class's cross-field rules."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        path = prefix + f.name
        check = f.metadata.get("check")
        if check is not None:
            check(path, value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_fields(value, path + ".")
    relations = getattr(obj, "check_relations", None)
    if callable(relations):
        try:
            relations()
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}" if prefix and not str(exc).startswith(prefix) else str(exc)) from exc


S = TypeVar("S", bound="Validated")


class Validated:
    """Base of a settings tree's root: `validate()` runs every check and returns the object itself."""

    def validate(self: S) -> S:
        check_fields(self)
        return self


def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, target: Any) -> Any:
    """Turn YAML / environment values into the field's type, with the field named on failure."""
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        target = next(a for a in typing.get_args(target) if a is not type(None))
        origin = typing.get_origin(target)
    if isinstance(target, type) and dataclasses.is_dataclass(target) and not isinstance(value, target):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping")
        return _build(target, value, name + ".")
    if target is bool and isinstance(value, str):
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
    if target is tuple or origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(target)
        item = args[0] if args else None
        if item in (int, float):
            return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
        return tuple(value)
    if (target is dict or origin is dict) and isinstance(value, str):
        try:
            return dict(pair.split("=", 1) for pair in value.split(",") if pair)
        except ValueError as exc:
            raise ConfigError(f"{name} must be key=value pairs separated by commas, got {value!r}") from exc
    if (target is dict or origin is dict) and not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping, got {value!r}")
    if target is str and not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def _build(cls: Any, data: Mapping[str, Any], prefix: str = "") -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + u for u in sorted(unknown))}")
    hints = _hints(cls)
    kwargs = {k: _coerce(prefix + k, v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # A nested class that checks itself on construction (a pure core's settings) names its fields
        # without knowing where it sits in the tree; give them their dotted path.
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}{exc}") from exc
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {exc}") from exc


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


def build(cls: type[T], data: Mapping[str, Any]) -> T:
    """`cls` from a mapping, checked: the in-process twin of :func:`load` (tests, embedding)."""
    settings: T = _build(cls, data)
    check_fields(settings)
    return settings


def load(cls: type[T], prefix: str, path: Path | None = None, environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from a YAML file ($<PREFIX>_CONFIG or `path`) with <PREFIX>_* variables on top."""
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
    return build(cls, _merge(data, _env_overrides(environ, prefix)))


def _fmt_default(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return ""
    if isinstance(value, dict) and value:
        return "<br>".join(f"`{k}`: `{v}`" for k, v in value.items())
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`".replace("|", "\\|")


def _rows(cls: Any, prefix: str, env_prefix: str) -> list[str]:
    rows: list[str] = []
    instance = cls()
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        why = " ".join(str(f.metadata.get("why", "")).split())
        dotted = prefix + f.name
        env = f"{env_prefix}_{dotted.replace('.', '__').upper()}"
        if dataclasses.is_dataclass(value):
            rows.append(f"| **`{dotted}`** | | | {why} |".replace("  ", " "))
            rows.extend(_rows(type(value), dotted + ".", env_prefix))
            continue
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        escaped = why.replace("|", "\\|")
        rows.append(f"| `{dotted}` (`{env}`) | {kind} | {_fmt_default(value)} | {escaped} |")
    return rows


def undocumented(cls: Any, prefix: str = "") -> list[str]:
    """Dotted names of fields declared without a reason; a test keeps this list empty."""
    missing: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("why"):
            missing.append(prefix + f.name)
        value = getattr(cls(), f.name)
        if dataclasses.is_dataclass(value):
            missing.extend(undocumented(type(value), prefix + f.name + "."))
    return missing


def reference_markdown(cls: Any, title: str, env_prefix: str, intro: str) -> str:
    """The generated reference page of a service's settings (written by `hack/gen_settings_docs.py`)."""
    lines = [
        f"# {title}",
        "",
        "<!-- Generated by `python hack/gen_settings_docs.py` from the settings declarations; do not edit. -->",
        "",
        " ".join(intro.split()),
        "",
        f"Each setting is read from the YAML file given by `--config` or `${env_prefix}_CONFIG`, then from the",
        "variable shown, which wins (`__` descends into a group). A bad value stops start-up naming the setting.",
        "",
        "| setting (variable) | type | default | why this default |",
        "|---|---|---|---|",
        *_rows(cls, "", env_prefix),
        "",
    ]
    return "\n".join(lines)
