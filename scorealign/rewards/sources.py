"""Reward sources behind one protocol (TRL's reward-function signature), and batch scoring.

A reward source is any callable ``source(prompts, completions, **row_fields) -> list[float]``
with a ``name``. ``prompts`` entries are strings or lists of chat messages, ``completions`` are
strings, and every extra dataset column arrives as a keyword list with one entry per completion.
:func:`score_batch` turns a source's output into ``(scores[B] float32, valid[B] bool)`` tensors
and raises :class:`~scorealign.errors.RewardError` naming the source and the row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ..data.formats import completion_text, row_fields
from ..data.readers import Row
from ..errors import ConfigError, RewardError, one_line
from .classifier import ModelReward
from .sandbox import (
    DEFAULT_LIMITS,
    SandboxedFunction,
    SandboxLimits,
    SandboxTimeout,
    get_function,
    load_file_module,
    load_function,
    sandbox_limits,
)

SPEC_FORMS = ("py:package.module:function", "file:path/to/rewards.py:function",
              "model:path_or_hub_id", "builtin:name[:arg]")


@runtime_checkable
class RewardSource(Protocol):
    """Anything with a ``name`` that scores completions, one float per completion."""

    name: str

    def __call__(self, prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        ...


class _BadReturn(RewardError):
    """A source returned something other than one number per completion (never retried)."""


class CallableReward:
    """Wrap any Python callable with the reward signature; ``name`` defaults to its qualname."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"reward function {fn!r} is not callable")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or type(fn).__name__

    def __call__(self, prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        return self.fn(prompts, completions, **row_fields)

    def __repr__(self) -> str:
        return f"CallableReward({self.name!r})"


class FileReward(CallableReward):
    """Load ``function`` from the Python file ``path`` in THIS process (``reward_sandbox: false``;
    the default runs it in a worker, ``sandbox.SandboxedFunction``)."""

    def __init__(self, path: str | Path, function: str) -> None:
        self.path = Path(path)
        module = load_file_module(self.path)
        fn = get_function(module, function, f"reward file {str(self.path)!r}")
        super().__init__(fn, name=function)


def _import_function(target: str) -> CallableReward:
    """``package.module:function`` imported by dotted name, in this process, and wrapped."""
    return CallableReward(load_function(f"py:{target}"))


def _check_scores(name: str, result: Any, n: int) -> list[float]:
    """``result`` as ``n`` floats, or a ``_BadReturn`` saying what the source returned instead."""
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()  # tensors and numpy arrays
    if isinstance(result, (str, bytes)) or not isinstance(result, (list, tuple)):
        raise _BadReturn(f"reward source {name!r} returned {type(result).__name__}, "
                         f"expected a list of {n} numbers")
    if len(result) != n:
        raise _BadReturn(f"reward source {name!r} returned a list of length {len(result)} "
                         f"for {n} completions")
    out = []
    for i, v in enumerate(result):
        try:
            if isinstance(v, (str, bytes)):
                raise TypeError
            out.append(float(v))
        except Exception:
            raise _BadReturn(f"reward source {name!r} returned a non-number at row {i}: "
                             f"{repr(v)[:40]}") from None
    return out


class WeightedSum:
    """``sum_i weights[i] * sources[i](...)``; name like ``0.5*a+1.0*b``."""

    def __init__(self, sources: list[RewardSource], weights: list[float]) -> None:
        if len(sources) != len(weights):
            raise ConfigError(f"{len(sources)} reward sources but {len(weights)} weights")
        if not sources:
            raise ConfigError("WeightedSum needs at least one reward source")
        self.sources, self.weights = list(sources), [float(w) for w in weights]
        self.name = "+".join(f"{w}*{s.name}" for s, w in zip(self.sources, self.weights))

    def __call__(self, prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        total, self.parts = [0.0] * len(completions), {}
        for source, w in zip(self.sources, self.weights):
            part = _check_scores(source.name, source(prompts, completions, **row_fields),
                                 len(completions))
            total = [t + w * s for t, s in zip(total, part)]
            self.parts[source.name] = part
        return total

    def __repr__(self) -> str:
        return f"WeightedSum({self.name!r})"


def reward_parts(source, n: int) -> dict[str, torch.Tensor]:
    """Each summed source's unweighted scores [n] from ``source``'s last call, when it is a
    :class:`WeightedSum` ({} otherwise); NaN when that call did not cover the ``n`` rows (a row
    retried alone after a failure)."""
    parts = getattr(source, "parts", None) if isinstance(source, WeightedSum) else None
    if parts is None:
        return {}
    return {s.name: torch.tensor(parts[s.name] if len(parts.get(s.name, ())) == n
                                 else [math.nan] * n, dtype=torch.float32)
            for s in source.sources}


def _builtin_count(arg: str, sandbox: SandboxLimits | None = None) -> RewardSource:
    """``count:<word>``: whitespace-separated occurrences of ``<word>`` in the completion."""
    if not arg:
        raise ConfigError("builtin reward 'count' needs a word: builtin:count:<word>")

    def count(prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        return [float(c.split().count(arg)) for c in completions]

    return CallableReward(count, name=f"count:{arg}")


def _builtin_length(arg: str, sandbox: SandboxLimits | None = None) -> RewardSource:
    """``length``: number of whitespace-separated words in the completion."""
    if arg:
        raise ConfigError(f"builtin reward 'length' takes no argument, got {arg!r}")

    def length(prompts: list, completions: list[str], **row_fields: list) -> list[float]:
        return [float(len(c.split())) for c in completions]

    return CallableReward(length, name="length")


def _builtin_language(arg: str, sandbox: SandboxLimits | None = None) -> RewardSource:
    """``language[:code]``: 1 if the completion is in ``code`` (default: the row's ``language``
    field), 0 if not, 0.5 when too short to judge (``scorealign.rewards.language``)."""
    from .language import LanguageFidelity

    try:
        return LanguageFidelity(arg or None)
    except ValueError as e:
        raise ConfigError(f"builtin reward 'language:{arg}': {e}") from None


def _builtin_unit_tests(arg: str, sandbox: SandboxLimits | None = None) -> RewardSource:
    """``unit_tests[:all]``: the fraction of the row's ``tests`` the completion's code passes
    (``:all``: 1 only if every test passes), run isolated (``verifiers.py``)."""
    from .verifiers import UnitTestReward

    if arg not in ("", "all"):
        raise ConfigError(f"builtin:unit_tests:{arg}: the argument is 'all' (all-or-nothing) "
                          "or none (fraction passed)")
    return UnitTestReward(all_or_nothing=arg == "all",
                          isolate=sandbox.isolate if sandbox is not None else True)


def _builtin_math(arg: str, sandbox: SandboxLimits | None = None) -> RewardSource:
    """``math``: 1 if the completion's answer equals the row's ``answer`` (math-verify)."""
    from .verifiers import MathReward

    if arg:
        raise ConfigError(f"builtin reward 'math' takes no argument, got {arg!r}")
    return MathReward()


BUILTIN_REWARDS: dict[str, Callable[[str, SandboxLimits | None], RewardSource]] = {
    "count": _builtin_count,
    "length": _builtin_length,
    "language": _builtin_language,
    "unit_tests": _builtin_unit_tests,
    "math": _builtin_math,
}


def reward_details(source: RewardSource) -> list[dict] | None:
    """What a source kept per completion of its last call (``details``: the verifiers' failure
    reasons, limits hit, comparison method), or None; a weighted sum merges its parts' by name."""
    parts = getattr(source, "sources", None)
    if parts is None:
        return getattr(source, "details", None)
    merged = None
    for part in parts:
        details = getattr(part, "details", None)
        if details:
            merged = merged or [{} for _ in details]
            for row, info in zip(merged, details):
                row[part.name] = info
    return merged


def reward_from_spec(spec: str, sandbox: SandboxLimits | None = DEFAULT_LIMITS,
                     **model_kwargs: Any) -> RewardSource:
    """Build a source from its string form; ``model_kwargs`` go to :class:`ModelReward` only.

    Forms: ``py:package.module:function``, ``file:path/to/rewards.py:function``,
    ``model:path_or_hub_id``, ``builtin:name[:arg]``. ``py:``/``file:`` functions run in a
    sandboxed worker process with ``sandbox``'s limits (``sandbox.py``); ``None`` loads them here.
    """
    prefix, sep, rest = str(spec).partition(":")
    if not sep or prefix not in ("py", "file", "model", "builtin"):
        raise ConfigError(f"unknown reward spec {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")
    if not rest:
        raise ConfigError(f"empty reward spec {spec!r}; valid forms: {', '.join(SPEC_FORMS)}")
    if prefix in ("py", "file") and sandbox is not None:
        return SandboxedFunction(spec, sandbox)
    if prefix == "py":
        return _import_function(rest)
    if prefix == "file":
        path, sep, function = rest.rpartition(":")
        if not sep or not path or not function:
            raise ConfigError(f"reward spec {spec!r} must look like file:path/to/rewards.py:function")
        return FileReward(path, function)
    if prefix == "model":
        return ModelReward(rest, **model_kwargs)
    name, _, arg = rest.partition(":")
    if name not in BUILTIN_REWARDS:
        raise ConfigError(f"unknown builtin reward {name!r}; builtins: "
                          f"{', '.join(sorted(BUILTIN_REWARDS))}")
    return BUILTIN_REWARDS[name](arg, sandbox)


def load_user_function(spec: str, limits: SandboxLimits | None = DEFAULT_LIMITS) -> RewardSource:
    """The callable of a ``py:``/``file:`` spec (harm judges, refusal detectors, translators),
    with a ``name``; in a sandboxed worker under ``limits`` (``None``: in this process). Its
    ``fn`` takes the caller's own arguments (JSON ones through the sandbox)."""
    if not str(spec).startswith(("py:", "file:")):
        raise ConfigError(f"{spec!r}: user code is named py:package.module:function or "
                          "file:path/to/code.py:function")
    return reward_from_spec(spec, limits)


def rewards_from_config(cfg, **model_kwargs: Any) -> RewardSource:
    """The summed reward sources of a config with a reward block (``rewards``, ``reward_weights``
    and the sandbox settings)."""
    weights = list(cfg.reward_weights) if cfg.reward_weights is not None else None
    return rewards_from_specs(list(cfg.rewards), weights, sandbox_limits(cfg), **model_kwargs)


def rewards_from_specs(specs: list[str], weights: list[float] | None = None,
                       sandbox: SandboxLimits | None = DEFAULT_LIMITS,
                       **model_kwargs: Any) -> RewardSource:
    """One source for one spec (weight 1), else a :class:`WeightedSum` (weights default 1.0)."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise ConfigError("no reward source given; valid forms: " + ", ".join(SPEC_FORMS))
    if weights is not None and len(weights) != len(specs):
        raise ConfigError(f"{len(specs)} reward specs but {len(weights)} reward weights")
    sources = [reward_from_spec(s, sandbox, **model_kwargs) for s in specs]
    if len(sources) == 1 and (weights is None or float(weights[0]) == 1.0):
        return sources[0]
    return WeightedSum(sources, list(weights) if weights is not None else [1.0] * len(sources))


def _rows(row_fields: dict[str, list], i: int) -> dict[str, list]:
    """The keyword lists of row ``i`` alone (for the row-by-row retry)."""
    return {k: [v[i]] for k, v in row_fields.items()}


def score_batch(source: RewardSource, prompts: list, completions: list[str],
                row_fields: dict[str, list] | None = None,
                on_error: str = "fail") -> tuple[torch.Tensor, torch.Tensor]:
    """Score a batch with one call: ``(scores [B] float32, valid [B] bool)``.

    ``on_error="fail"`` raises :class:`RewardError` (naming source, and row for non-finite
    scores); ``"skip"`` marks failing rows (retried one by one) and non-finite scores invalid
    with score 0.0. A result that is not ``B`` numbers always raises. Callers count
    ``(~valid).sum()``.
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    n, fields = len(completions), dict(row_fields or {})
    name = getattr(source, "name", None) or getattr(source, "__qualname__", repr(source))
    if len(prompts) != n or any(len(v) != n for v in fields.values()):
        raise ValueError(f"score_batch: prompts and row fields must have {n} entries each")
    scores, valid = [0.0] * n, [True] * n
    try:
        scores = _check_scores(name, source(prompts, completions, **fields), n)
    except _BadReturn:
        raise
    except SandboxTimeout:
        if on_error == "fail":
            raise
        scores, valid = [0.0] * n, [False] * n      # no row-by-row retry: each could time out
    except Exception as e:
        if on_error == "fail":
            raise RewardError(f"reward source {name!r} raised {one_line(e)}") from e
        for i in range(n):
            try:
                result = source([prompts[i]], [completions[i]], **_rows(fields, i))
            except Exception:
                scores[i], valid[i] = 0.0, False
                continue
            scores[i] = _check_scores(name, result, 1)[0]
    for i, s in enumerate(scores):
        if valid[i] and not math.isfinite(s):
            if on_error == "fail":
                raise RewardError(f"reward source {name!r} returned {s} at row {i} "
                                  f"(completion {str(completions[i])[:40]!r})")
            scores[i], valid[i] = 0.0, False
    return torch.tensor(scores, dtype=torch.float32), torch.tensor(valid, dtype=torch.bool)


def score_rows(source, rows: list[Row], batch_size: int, on_error: str) -> tuple[list[Row], int]:
    """Rows with ``score`` added, in input order -> (scored rows, number skipped)."""
    texts = [completion_text(r) for r in rows]       # validate every row before any reward call
    out, skipped = [], 0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        fields = row_fields(chunk, exclude=("prompt", "completion"))
        scores, valid = score_batch(source, [r["prompt"] for r in chunk],
                                    texts[start:start + batch_size], fields, on_error)
        for row, score, ok in zip(chunk, scores.tolist(), valid.tolist()):
            if ok:
                out.append({**row, "score": score})
            skipped += not ok
    return out, skipped
