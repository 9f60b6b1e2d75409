"""User code that scores completions runs in a sandboxed worker process.

``py:package.module:function`` and ``file:path.py:function`` specs (rewards, harm judges,
refusal detectors, translators) are loaded and called in a separate Python process, one per
source, started once and reused:

- isolation (``reward_isolation: true``, the default): the worker runs in the isolating runner
  (``isolation.py``): own user, PID, network and mount namespaces, read-only filesystem but a
  private ``/tmp``, the home and the run directory hidden, a minimal environment; processes it
  forks die with it. ``reward_isolation: false`` (rewards that need the network, a GPU or the
  caller's environment) keeps the limits only, and says so loudly once;
- limits (``SandboxLimits``): address space (``memory_mb``), size of any file it writes
  (``file_mb``), processes, no core dumps, and a wall-clock ``timeout_s`` per call after which
  the worker's whole process tree is killed (and restarted on the next call); errors name the
  limit hit;
- arguments and results cross as JSON over pipes (no pickle); the function's own prints go to
  stderr, never into the protocol;
- a crash, a timeout or a memory blow-up in user code becomes an error naming the source, not a
  dead training run (``on_reward_error: skip`` then drops the batch's rows).

Turn the worker off (``reward_sandbox: false``) for functions that need the caller's process (a
GPU model shared with it, arguments that are not JSON). This module imports only the standard
library and scorealign's ``errors``, ``harness`` and ``isolation``, so a worker starts in well
under a second.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import select
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RemoteError, RewardError, one_line
from .harness import apply_limits, describe
from .isolation import Limits, ProcessTree, require_isolation


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 60.0   # per call, wall clock
    memory_mb: int = 4096     # address space of the worker (0: no limit)
    file_mb: int = 256        # largest file the worker may write (0: no limit)
    isolate: bool = True      # namespaces (isolation.py); False: the limits only
    hide: tuple[str, ...] = ()  # folders the worker must not see (the run directory)

    def process_limits(self) -> Limits:
        """The runner's limits of the worker's tree (no CPU cap: the worker lives for the run)."""
        return Limits(timeout_s=self.timeout_s, cpu_s=0, memory_mb=self.memory_mb,
                      file_mb=self.file_mb, processes=64 if self.isolate else 0, tmp_mb=256)


DEFAULT_LIMITS = SandboxLimits()


def sandbox_limits(cfg, hide: tuple[str, ...] = ()) -> SandboxLimits | None:
    """The limits of a config's sandbox block (``reward_sandbox``, ``reward_timeout``,
    ``reward_memory_mb``, ``reward_isolation``), hiding the ``hide`` folders from the worker;
    None when ``reward_sandbox`` is off (user code runs in-process)."""
    if not cfg.reward_sandbox:
        return None
    return SandboxLimits(cfg.reward_timeout, cfg.reward_memory_mb,
                         isolate=cfg.reward_isolation, hide=tuple(hide))


class SandboxTimeout(RewardError):
    """The worker did not answer within ``timeout_s`` and was stopped."""


# ----------------------------------------------------------------------------- loading user code


def get_function(module: Any, function: str, where: str):
    """``module.function``, or a ConfigError listing the callables ``module`` defines."""
    fn = getattr(module, function, None)
    if fn is None:
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__)
        raise ConfigError(f"{where} has no function {function!r}; "
                          f"it defines: {', '.join(defined) or '(no callables)'}")
    if not callable(fn):
        raise ConfigError(f"{where}: {function!r} is a {type(fn).__name__}, not a callable")
    return fn


def load_file_module(path: Path) -> Any:
    """Execute the Python file ``path`` as a fresh module."""
    if not path.is_file():
        raise ConfigError(f"reward file not found: {str(path)!r}")
    mod_name = f"_scorealign_reward_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load reward file {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"syntax error in reward file {str(path)!r} line {e.lineno}: {e.msg}") from e
    except Exception as e:
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"error while loading reward file {str(path)!r}: {one_line(e)}") from e
    return module


def split_spec(spec: str) -> tuple[str, str, str]:
    """``py:mod:fn`` / ``file:path:fn`` -> (prefix, module or path, function), or ConfigError."""
    prefix, _, rest = spec.partition(":")
    target, sep, function = rest.rpartition(":")
    if prefix not in ("py", "file") or not sep or not target or not function:
        form = "py:package.module:function" if prefix == "py" else "file:path/to/rewards.py:function"
        raise ConfigError(f"reward spec {spec!r} must look like {form}")
    return prefix, target, function


def load_function(spec: str):
    """The callable named by a ``py:`` or ``file:`` spec, loaded in THIS process."""
    prefix, target, function = split_spec(spec)
    if prefix == "file":
        return get_function(load_file_module(Path(target)), function,
                            f"reward file {target!r}")
    try:
        module = importlib.import_module(target)
    except Exception as e:
        raise ConfigError(f"cannot import reward module {target!r}: {one_line(e)}") from e
    return get_function(module, function, f"module {target!r}")


# ----------------------------------------------------------------------------- the parent's proxy


def _plain(value: Any) -> Any:
    """JSON fallback for numpy / torch scalars and arrays; anything else is refused."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


class SandboxedFunction:
    """A ``py:``/``file:`` callable run in a worker process; ``__call__`` has the reward signature
    and ``fn`` accepts any JSON arguments (judges, translators)."""

    def __init__(self, spec: str, limits: SandboxLimits = DEFAULT_LIMITS) -> None:
        prefix, target, function = split_spec(spec)
        if prefix == "file":
            path = Path(target).expanduser()
            if not path.is_file():
                raise ConfigError(f"reward file not found: {target!r}")
            spec = f"file:{path.resolve()}:{function}"
        self.spec, self.limits, self.name = spec, limits, function
        self.fn, self.proc, self.buffer = self.call, None, b""
        self.start()

    def __call__(self, prompts: list, completions: list[str], **row_fields: list) -> Any:
        return self.call(prompts, completions, **row_fields)

    def __repr__(self) -> str:
        return f"SandboxedFunction({self.spec!r})"

    def start(self) -> None:
        """Start the worker and load the function there (a ConfigError if it cannot be loaded)."""
        lim = self.limits
        if self.proc is not None:
            self.close()                     # a worker that died: its tree goes too
        isolate = require_isolation(lim.isolate, f"reward source {self.name!r}")
        paths = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]  # same imports
        readable = tuple(paths)
        if self.spec.startswith("file:"):
            path = Path(split_spec(self.spec)[1])
            readable += (str(path), str(path.parent))
        self.tree = ProcessTree([sys.executable, "-m", "scorealign.rewards.sandbox"],
                                lim.process_limits(), isolate, readable=readable, hide=lim.hide,
                                env={"PYTHONPATH": os.pathsep.join(paths)})
        self.proc, self.buffer = self.tree.proc, b""
        inner = asdict(lim.process_limits())
        self.send({"spec": self.spec, "limits": inner})
        reply = self.receive(max(lim.timeout_s, 60.0))
        if "config_error" in reply:
            self.close()
            raise ConfigError(reply["config_error"])

    def call(self, *args: Any, **kwargs: Any) -> Any:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        try:
            self.send({"args": args, "kwargs": kwargs})
        except TypeError as e:
            raise RewardError(f"reward source {self.name!r}: its arguments cannot be sent to the "
                              f"sandbox ({e}); set reward_sandbox: false to call it in-process"
                              ) from None
        reply = self.receive(self.limits.timeout_s)
        if "error" in reply:
            if " limit (" in reply["error"]:
                self.close()         # forked copies, full /tmp: the next call gets a fresh tree
            raise RemoteError(reply["error"])
        return reply["ok"]

    def send(self, message: dict) -> None:
        data = (json.dumps(message, default=_plain) + "\n").encode()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass    # the worker died; receive() reports how

    def receive(self, timeout: float) -> dict:
        """The worker's next JSON line; SandboxTimeout after ``timeout`` s, RemoteError if it died."""
        deadline, fd = time.monotonic() + timeout, self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.tree.timed_out = True
                self.close()
                raise SandboxTimeout(f"reward source {self.name!r} did not answer within "
                                     f"{timeout:g} s (reward_timeout); its worker was stopped")
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                code = self.proc.wait()
                self.close()
                hit = self.tree.limit_hit()
                hint = (f" ({hit})" if hit else f"; it may have hit its memory limit "
                        f"({self.limits.memory_mb} MB, reward_memory_mb)" if code == 1 else "")
                raise RemoteError(f"the sandboxed worker of {self.name!r} died with exit "
                                  f"status {code}{hint}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        """Kill the worker's whole process tree (its forked children too)."""
        if self.proc is not None:
            self.tree.kill()
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.proc = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------- the worker


def _reply(channel, result: Any) -> dict:
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):
        result = result.tolist()
    try:
        channel.write(json.dumps({"ok": result}, default=_plain) + "\n")
    except (TypeError, ValueError):
        channel.write(json.dumps({"error": f"TypeError: it returned {type(result).__name__}, "
                                           "which cannot leave the sandbox (not JSON)"}) + "\n")


def worker() -> None:
    """Worker loop: first line = spec and limits, then one call per line."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)      # the protocol; user prints -> stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    init = json.loads(sys.stdin.readline())             # sys.path: the parent's, via PYTHONPATH
    limits = init["limits"]
    apply_limits(limits)
    try:
        fn = load_function(init["spec"])
    except ConfigError as e:
        channel.write(json.dumps({"config_error": str(e)}) + "\n")
        return
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = fn(*request["args"], **request["kwargs"])
        except BaseException as e:       # noqa: BLE001 - everything goes back to the parent
            channel.write(json.dumps({"error": describe(e, limits)}) + "\n")
            continue
        _reply(channel, result)


if __name__ == "__main__":
    worker()
