"""What runs INSIDE the isolating runner: resource limits, the limit an error means, and the
unit-test program (``python -I harness.py``).

Standard library only, and importable without its package: the unit-test program is started with
``python -I`` (no user site, no environment, no script directory on ``sys.path``), so this file
must stand alone. The reward worker (``sandbox.py``) imports :func:`apply_limits` and
:func:`describe` from here.

The unit-test protocol: stdin carries one JSON object ``{"limits", "code", "setup", "tests":
[[name, source], ...]}``; the program executes ``code`` (the completion), then ``setup`` (the
tests' helper statements and test functions), then each test, and writes one JSON line
``{"test": i, "ok": bool, "reason": str}`` per test to a private copy of fd 1, flushed at once,
so that the tests that finished before a timeout still count. The code's own prints go to stderr.
The code and the tests share one interpreter: a completion written to forge that channel could
(the limits still hold); see docs/verifiable.md.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import sys

MB = 1 << 20


def apply_limits(limits: dict) -> None:
    """Per-process limits of THIS process and everything it starts: address space
    (``memory_mb``), CPU seconds (``cpu_s``), file size (``file_mb``), processes of this user
    namespace (``processes``); no core dumps. A write past ``file_mb`` raises ``OSError(EFBIG)``
    (SIGXFSZ ignored) instead of killing the process, so the error can say which limit it was."""
    for res, key, scale in ((resource.RLIMIT_AS, "memory_mb", MB),
                            (resource.RLIMIT_FSIZE, "file_mb", MB),
                            (resource.RLIMIT_NPROC, "processes", 1)):
        value = int(limits.get(key) or 0) * scale
        if value > 0:
            resource.setrlimit(res, (value, value))
    cpu = int(limits.get("cpu_s") or 0)
    if cpu > 0:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))   # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _inside_any(name, variable: str) -> bool:
    """``name`` (an error's file name) is one of the folders listed in ``variable`` (set by the
    runner, ``isolation.py``) or inside one."""
    folders = [h for h in os.environ.get(variable, "").split(os.pathsep) if h]
    return isinstance(name, str) and any(name == h or name.startswith(h.rstrip("/") + "/")
                                         for h in folders)


def limit_reason(exc: BaseException, limits: dict) -> str | None:
    """The limit or isolation boundary that ``exc`` is the sign of, in words, or None."""
    if isinstance(exc, MemoryError):
        return f"memory limit ({limits.get('memory_mb')} MB of address space)"
    if isinstance(exc, RecursionError):
        return "recursion limit"
    code = getattr(exc, "errno", None)
    name = getattr(exc, "filename", None)
    if _inside_any(name, "SCOREALIGN_HIDDEN"):
        return "hidden folder (the home and run directories are not visible in the sandbox)"
    if code == errno.ENOENT and _inside_any(name, "SCOREALIGN_MASKED"):
        return ("hidden folder (the host's /tmp, where this folder is, is replaced by the "
                "sandbox's private /tmp)")
    reasons = {
        errno.EFBIG: f"file-size limit ({limits.get('file_mb')} MB per file)",
        errno.ENOSPC: f"disk limit (the private /tmp holds {limits.get('tmp_mb')} MB)",
        errno.EROFS: "read-only filesystem (only the private /tmp is writable)",
        errno.EAGAIN: f"process-count limit ({limits.get('processes')} processes)",
        errno.ECONNREFUSED: "no network (own network namespace: loopback only, nothing listening)",
        errno.ENETUNREACH: "no network (own network namespace)",
    }
    return reasons.get(code) if isinstance(exc, OSError) else None


def describe(exc: BaseException, limits: dict, limit: int = 300) -> str:
    """``Type: message [limit hit]`` on one line."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    reason = limit_reason(exc, limits)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{text} [{reason}]" if reason else text


def signal_reason(returncode: int, limits: dict) -> str | None:
    """The limit a death by signal means (``-N`` from Popen, ``128+N`` through bubblewrap)."""
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if sig == signal.SIGXCPU:
        return f"CPU-time limit ({limits.get('cpu_s')} s)"
    if sig == signal.SIGXFSZ:
        return f"file-size limit ({limits.get('file_mb')} MB per file)"
    if sig == signal.SIGKILL:
        return (f"killed (SIGKILL): CPU-time hard limit ({limits.get('cpu_s')} s + 1) "
                "or out of memory")
    return f"killed by signal {sig}" if sig else None


# ----------------------------------------------------------------------------- the test program


def run_tests(request: dict, channel) -> None:
    """Execute the completion's code, the setup, then each test; one JSON line per test."""
    limits, tests = request["limits"], request["tests"]

    def report_all(reason: str) -> None:
        for i in range(len(tests)):
            channel.write(json.dumps({"test": i, "ok": False, "reason": reason}) + "\n")
        channel.flush()

    scope: dict = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        program = compile(request["code"], "<completion>", "exec")
    except SyntaxError as e:
        return report_all(f"syntax error in the code, line {e.lineno}: {e.msg}")
    except (ValueError, MemoryError, RecursionError) as e:
        return report_all(f"the code does not compile: {describe(e, limits)}")
    for what, source in (("the code", program), ("the tests' setup", request["setup"])):
        try:
            exec(source, scope)                                   # noqa: S102 - the point
        except SystemExit as e:
            return report_all(f"{what} called exit({e.code}) before the tests ran")
        except BaseException as e:                                # noqa: BLE001
            return report_all(f"{what} raised {describe(e, limits)}")
    for i, (name, source) in enumerate(tests):
        try:
            exec(compile(source, f"<test {name}>", "exec"), scope)  # noqa: S102
            result = {"test": i, "ok": True, "reason": ""}
        except AssertionError as e:
            detail = " ".join(str(e).split())[:200]
            result = {"test": i, "ok": False,
                      "reason": f"{name}: assertion failed" + (f": {detail}" if detail else "")}
        except SystemExit as e:
            result = {"test": i, "ok": False, "reason": f"{name}: exit({e.code}) called"}
        except BaseException as e:                                # noqa: BLE001
            result = {"test": i, "ok": False, "reason": f"{name}: {describe(e, limits)}"}
        channel.write(json.dumps(result) + "\n")
        channel.flush()


def main() -> None:
    channel = os.fdopen(os.dup(1), "w")          # the protocol; the program's prints -> stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    request = json.loads(sys.stdin.read())
    os.close(0)                                  # input() gets EOF, not the protocol
    apply_limits(request["limits"])
    sys.setrecursionlimit(10_000)
    try:
        run_tests(request, channel)
    finally:
        try:
            channel.flush()
        finally:
            os._exit(0)                          # no atexit hooks of the code


if __name__ == "__main__":
    main()
