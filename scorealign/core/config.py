"""Typed configs: one frozen dataclass per command, read from YAML, overridden by `--key value`.

Unknown keys are rejected with a "did you mean" suggestion; values are converted to the field's
type; the resolved config is saved in the run directory and never mutated at run time. Each
field's trailing comment is its help text (``scorealign train --help`` prints them).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from pathlib import Path

import yaml

from ..errors import ConfigError
from .io import atomic_write_text

# ------------------------------------------------------------------------------------------------


def field_help(cls) -> dict[str, str]:
    """The trailing comment of each field in the class source, as help text."""
    helps = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): .*?  # (.*)$", line)
        if m:
            helps[m.group(1)] = m.group(2)
    return helps


def _convert(value, tp, key: str):
    """Convert a YAML value or CLI string to the annotated type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return tuple(_convert(v, args[0], key) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    try:
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return tp(float(value)) if tp is int and isinstance(value, str) and "e" in value else tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}") from None


def _check_key(cls, key: str, where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--lr', '1e-5', '--k=2'] -> {'lr': '1e-5', 'k': '2'} (dashes in names become underscores)."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"--{key}: missing value")
            value, i = args[i + 1], i + 1
        out[key.replace("-", "_")] = value
        i += 1
    return out


def load_config(cls, path: str | Path | None = None, overrides: list[str] | dict | None = None):
    """Build ``cls`` from a YAML file and CLI overrides (overrides win)."""
    values: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
        for key in values:
            _check_key(cls, key, str(path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for key in overrides or {}:
        _check_key(cls, key, f"--{key}")
    values = {**values, **(overrides or {})}
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(v, hints[k], k) for k, v in values.items()})


def to_dict(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(Path(path), yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


def config_from_argv(cls, argv: list[str], usage: str):
    """``CONFIG.yaml [--key value ...]`` (or overrides alone) -> ``cls``; None after ``--help``."""
    if "-h" in argv or "--help" in argv:
        print(f"usage: {usage}\n\n{cls.__doc__}\n\nkeys (YAML or --key value):")
        helps = field_help(cls)
        for f in dataclasses.fields(cls):
            print(f"  --{f.name:<20} {helps.get(f.name, '')} [default: {f.default!r}]")
        return None
    path = argv[0] if argv and not argv[0].startswith("--") else None
    return load_config(cls, path, argv[1:] if path else argv)
