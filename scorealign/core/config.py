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

DTYPE_CHOICES = ("float32", "bfloat16", "float16")

# ------------------------------------------------------------------------------- shared blocks
# Field blocks shared by the commands' configs (inherit them; a command may re-declare a field to
# change its default or help, which keeps its place). ``check_blocks`` validates them all.


@dataclasses.dataclass(frozen=True)
class Block:
    def __post_init__(self):
        check_blocks(self)


@dataclasses.dataclass(frozen=True)
class ModelBlock(Block):
    trust_remote_code: bool = False  # allow custom modelling code shipped with a model repo
    dtype: str = "float32"  # float32 | bfloat16 | float16 (half precision needs a GPU)


@dataclasses.dataclass(frozen=True)
class SamplingBlock(ModelBlock):
    max_prompt_tokens: int = 256  # longer prompts keep their last tokens
    max_new_tokens: int = 128  # completion length limit
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling threshold
    batch_size: int = 16  # prompts per generation call
    seed: int = 0  # seeds the per-prompt sampling uniforms


@dataclasses.dataclass(frozen=True)
class RewardSourcesBlock(Block):
    rewards: tuple[str, ...] = ("builtin:count:yes",)  # py:mod:fn | file:path.py:fn | model:path | builtin:name[:arg]
    reward_weights: tuple[float, ...] | None = None  # one weight per reward source (default 1.0 each)


@dataclasses.dataclass(frozen=True)
class RewardErrorBlock(Block):
    on_reward_error: str = "fail"  # fail | skip (rows whose reward fails or is not finite are left out)


@dataclasses.dataclass(frozen=True)
class SandboxBlock(Block):
    reward_sandbox: bool = True  # py:/file: user code runs in a worker process with the limits below (README, Reward sources)
    reward_timeout: float = 60.0  # seconds per call of user code before the worker is stopped
    reward_memory_mb: int = 4096  # address-space limit of the worker (0: none)
    reward_isolation: bool = True  # py:/file: workers and builtin:unit_tests run in namespaces (docs/verifiable.md); false: limits only (network/GPU rewards)


@dataclasses.dataclass(frozen=True)
class RewardBlock(SandboxBlock, RewardErrorBlock, RewardSourcesBlock):
    """rewards, reward_weights, on_reward_error, then the sandbox settings."""


def check_blocks(cfg) -> None:
    """The checks of every shared block ``cfg`` has: one place for all commands."""
    if isinstance(cfg, ModelBlock) and cfg.dtype not in DTYPE_CHOICES:
        raise ConfigError(f"dtype={cfg.dtype!r}: choose one of {', '.join(DTYPE_CHOICES)}")
    if isinstance(cfg, SamplingBlock):
        for key in ("max_prompt_tokens", "max_new_tokens", "batch_size"):
            if getattr(cfg, key) < 1:
                raise ConfigError(f"{key}={getattr(cfg, key)}: must be >= 1")
        if cfg.temperature <= 0 or not 0 < cfg.top_p <= 1:
            raise ConfigError("temperature must be > 0 and top_p in (0, 1]")
    if isinstance(cfg, RewardSourcesBlock) and cfg.reward_weights is not None and len(
            cfg.reward_weights) != len(cfg.rewards):
        raise ConfigError(f"reward_weights has {len(cfg.reward_weights)} entries for "
                          f"{len(cfg.rewards)} reward sources")
    if isinstance(cfg, RewardErrorBlock) and cfg.on_reward_error not in ("fail", "skip"):
        raise ConfigError(f"on_reward_error={cfg.on_reward_error!r}: choose one of fail, skip")
    if isinstance(cfg, SandboxBlock) and (cfg.reward_timeout <= 0 or cfg.reward_memory_mb < 0):
        raise ConfigError(f"reward_timeout={cfg.reward_timeout}, reward_memory_mb="
                          f"{cfg.reward_memory_mb}: the timeout must be > 0 and the memory "
                          "limit >= 0 (0: no limit)")


GENERATION_KEYS = tuple(f.name for f in dataclasses.fields(SamplingBlock))


# ------------------------------------------------------------------------------------------------


def field_help(cls) -> dict[str, str]:
    """The trailing comment of each field, as help text, read from the source of ``cls`` and of
    every dataclass it inherits fields from (the nearest declaration wins)."""
    helps = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is Block:
            continue
        for line in inspect.getsource(klass).splitlines():
            m = re.match(r"\s+(\w+): .*?  # (.*)$", line)
            if m:
                helps[m.group(1)] = m.group(2)
    return helps


def print_config_help(cls, usage: str) -> None:
    """``usage``, the config's docstring, then every key with its help and default."""
    print(f"usage: {usage}\n\n{cls.__doc__}\n\nkeys (YAML or --key value):")
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        print(f"  --{f.name:<20} {helps.get(f.name, '')} [default: {f.default!r}]")
    if trl_names(cls):
        print("\nTRL argument names (mapped to the key shown, with a notice, or refused):")
        for name, (target, note) in trl_names(cls).items():
            print(f"  --{name:<28} " + (f"-> {target}" if target else "refused")
                  + (f": {note}" if note else ""))


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
    """Refuse a key ``cls`` does not have, suggesting the closest key, or the key a close TRL
    name stands for (``lerning_rate`` -> 'lr', TRL's learning_rate)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if key in names:
        return
    aliases = {name: target for name, (target, _) in trl_names(cls).items() if target}
    close = difflib.get_close_matches(key, names + list(aliases), n=1, cutoff=0.6)
    close = close or difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    if not close:
        hint = ""
    elif close[0] in aliases:
        hint = f" (did you mean '{aliases[close[0]]}'? TRL's name for it is '{close[0]}')"
    else:
        hint = f" (did you mean '{close[0]}'?)"
    raise ConfigError(f"{where}: unknown key '{key}'{hint}")


def trl_names(cls) -> dict[str, tuple[str | None, str]]:
    """``cls.TRL_NAMES``: {TRL argument name: (the key it maps to, or None to refuse; a note)}."""
    return getattr(cls, "TRL_NAMES", {})


def resolve_trl_names(cls, values: dict, where: str, notice=None) -> dict:
    """Rename TRL argument names in ``values`` to ``cls``'s keys, with a one-line notice each, or
    refuse them naming the key that means the same thing (``cls.TRL_NAMES``). A key set under
    both names is refused."""
    notice = notice or (lambda text: print(text, flush=True))
    names, out = {f.name for f in dataclasses.fields(cls)}, {}
    for key, value in values.items():
        target, note = trl_names(cls).get(key, (key, ""))
        if key in names or key not in trl_names(cls):
            out[key] = value
            continue
        prefix = f"--{key}" if where == "--" else f"{where}: {key}"
        if target is None:
            raise ConfigError(f"{prefix}: TRL's {key} has no scorealign key of that name: {note}")
        if target in values:
            raise ConfigError(f"{prefix}: TRL's name for '{target}', which is also set: keep one")
        notice(f"scorealign: notice: {prefix} is TRL's name for '{target}': using "
               f"{target}={value!r}" + (f" ({note})" if note else ""))
        out[target] = value
    return out


# Flags that may be given bare (``--overwrite`` = ``--overwrite true``; the demos' ``--quick``).
BARE_FLAGS = ("overwrite", "quick", "toy")
# Keys of a command's invocation, not of its run: never saved in a run's config.yaml.
NOT_SAVED = ("overwrite",)


def parse_overrides(args: list[str]) -> dict[str, str]:
    """['--lr', '1e-5', '--k=2'] -> {'lr': '1e-5', 'k': '2'} (dashes in names become underscores;
    a bare ``--overwrite`` is ``--overwrite true``)."""
    out, i = {}, 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq and key in BARE_FLAGS and (i + 1 == len(args) or args[i + 1].startswith("--")):
            value = "true"
        elif not eq:
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
        values = resolve_trl_names(cls, values, str(path))
        for key in values:
            _check_key(cls, key, str(path))
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = resolve_trl_names(cls, overrides or {}, "--")
    for key in overrides:
        _check_key(cls, key, f"--{key}")
    values = {**values, **overrides}
    hints = typing.get_type_hints(cls)
    return cls(**{k: _convert(v, hints[k], k) for k, v in values.items()})


def to_dict(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    values = {k: v for k, v in to_dict(cfg).items() if k not in NOT_SAVED}
    atomic_write_text(Path(path), yaml.safe_dump(values, sort_keys=False, allow_unicode=True))


def config_from_argv(cls, argv: list[str], usage: str):
    """``CONFIG.yaml [--key value ...]`` (or overrides alone) -> ``cls``; None after ``--help``."""
    if "-h" in argv or "--help" in argv:
        print_config_help(cls, usage)
        return None
    path = argv[0] if argv and not argv[0].startswith("--") else None
    return load_config(cls, path, argv[1:] if path else argv)
