"""The isolating runner: untrusted code (model completions, ``py:``/``file:`` reward functions)
in a fresh process tree with its own user, PID, network and mount namespaces.

Made by bubblewrap (``bwrap``) where it works, else by util-linux ``unshare`` with ``nsmount.py``
doing the mounts inside. Inside: the whole filesystem read-only, a private size-limited ``/tmp``
as the only writable place (and the working directory), the user's home replaced by an empty
directory (the interpreter's and the import paths' folders under it are bound back, read-only),
the run directory hidden, no network but a loopback on which nothing listens, a minimal
environment (no tokens or keys from the caller's), and no devices but null/zero/random (no GPU).
Limits: CPU seconds, address space and file size per process, the number of processes
(``RLIMIT_NPROC`` in the user namespace; for root, whom the kernel exempts from it, a ``pids``
cgroup), and a wall-clock timeout after which the whole tree is killed: killing bubblewrap kills
the namespace's init, and with it every process of the namespace, sleeping grandchildren and
double-forked daemons included (``--die-with-parent`` does the same if the trainer dies).

Where both tools or user namespaces are missing, :func:`require_isolation` raises a one-line
error that says so, unless the user opted in to limits only (``reward_isolation: false``); then
a warning says so, once, loudly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from ..errors import ConfigError
from .harness import signal_reason

PIDS_CGROUP = Path("/sys/fs/cgroup/pids")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0   # wall clock of the whole process tree
    cpu_s: int = 10           # CPU seconds per process
    memory_mb: int = 1024     # address space per process (0: none)
    file_mb: int = 16         # largest file written (0: none)
    processes: int = 32       # processes in the tree
    tmp_mb: int = 64          # size of the private writable /tmp


UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--mount",
           "--mount-proc", "--kill-child"]


@cache
def backends() -> tuple[str, ...]:
    """The namespace tools that work here, preferred first: ``"bwrap"`` (bubblewrap), then
    ``"unshare"`` (util-linux; the mounts are then set up by ``nsmount.py``)."""
    probes = {"bwrap": ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc",
                        "--dev", "/dev", "true"],
              "unshare": [*UNSHARE, "true"]}
    return tuple(name for name, probe in probes.items() if shutil.which(probe[0]) is not None
                 and subprocess.run(probe, capture_output=True, timeout=30,
                                   check=False).returncode == 0)


def backend() -> str | None:
    """The namespace tool the runner uses (None: isolation is unavailable here)."""
    found = backends()
    return found[0] if found else None


def unavailable_reason() -> str:
    if shutil.which("bwrap") is None and shutil.which("unshare") is None:
        return ("neither bubblewrap nor util-linux unshare is installed (Debian/Ubuntu: "
                "apt-get install bubblewrap)")
    return "user namespaces cannot be created here (kernel.unprivileged_userns_clone=0?)"


_WARNED: set[str] = set()


def require_isolation(isolate: bool, what: str) -> bool:
    """Whether ``what`` runs isolated: True when asked and possible; False (with one loud
    warning per process) when the user opted out; a ConfigError when asked but impossible."""
    if isolate and backend():
        return True
    if isolate:
        raise ConfigError(f"{what} must run isolated, but {unavailable_reason()}; fix that, or "
                          "set reward_isolation: false to run it with resource limits only "
                          "(same user, same files, same network: NOT safe for model output)")
    if what not in _WARNED:
        _WARNED.add(what)
        warnings.warn(f"\n{'!' * 78}\n{what} runs WITHOUT isolation (reward_isolation: false): "
                      "resource limits only; it can read your files, write the run directory "
                      f"and use the network.\n{'!' * 78}", stacklevel=2)
    return False


def _home() -> Path:
    return Path(os.path.expanduser("~")).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def layout(readable: tuple[str, ...], hide: tuple[str, ...]) -> tuple[set[Path], set[Path]]:
    """(folders to hide, paths to bind back read-only): the home and ``hide`` folders are
    emptied; the ``readable`` paths (and the interpreter's) that fall inside those or /tmp are
    bound back. A readable path that is or holds a hidden folder is not bound back (the
    interpreter under ``~/.pyenv`` is; ``~`` itself never is)."""
    tmp = Path("/tmp")
    hidden = {h for h in (_home(), *(Path(x).resolve() for x in hide))
              if h != Path("/") and h.exists() and not _inside(h, tmp)}
    masked = hidden | {tmp}
    keep = {Path(p).resolve() for p in (*readable, sys.prefix, sys.base_prefix, sys.executable)}
    keep = {k for k in keep if k.exists() and not any(_inside(m, k) for m in masked)
            and any(_inside(k, m) for m in masked)}
    return hidden, {k for k in keep if not any(k != o and _inside(k, o) for o in keep)}


def unshare_argv(argv: list[str], limits: Limits, readable: tuple[str, ...] = (),
                 hide: tuple[str, ...] = ()) -> list[str]:
    """``argv`` under util-linux unshare, the same view as :func:`bwrap_argv` made by
    ``nsmount.py`` before ``argv`` runs."""
    hidden, keep = layout(readable, hide)
    spec = {"tmp_mb": limits.tmp_mb, "hidden": sorted(map(str, hidden)),
            "keep": sorted(map(str, keep))}
    return [*UNSHARE, "--", sys.executable, "-I", str(Path(__file__).with_name("nsmount.py")),
            json.dumps(spec), *argv]


def bwrap_argv(argv: list[str], limits: Limits, readable: tuple[str, ...] = (),
               hide: tuple[str, ...] = ()) -> list[str]:
    """``argv`` wrapped in bubblewrap: read-only /, a private /tmp, the :func:`layout`."""
    hidden, keep = layout(readable, hide)
    ops = [(len(h.parts), 0, ["--tmpfs", str(h)]) for h in hidden]
    ops += [(len(k.parts), 1, ["--ro-bind", str(k), str(k)]) for k in keep]
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
           "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
           "--size", str(limits.tmp_mb * (1 << 20)), "--tmpfs", "/tmp"]
    for _, _, op in sorted(ops):
        cmd += op
    for h in sorted(hidden):
        cmd += ["--remount-ro", str(h)]         # hidden and read-only: a write says EROFS
    return [*cmd, "--chdir", "/tmp", *argv]


def hidden_folders(hide: tuple[str, ...] = ()) -> str:
    """The folders :func:`bwrap_argv` hides, as ``SCOREALIGN_HIDDEN`` tells the code inside
    (so that an error there can say why a file is missing)."""
    return os.pathsep.join(str(p) for p in (_home(), *(Path(x).resolve() for x in hide)))


def masked_folders() -> str:
    """``SCOREALIGN_MASKED``: the caller's working directory when it lies under the host's /tmp,
    which the private /tmp masks (a checkout or run there is not visible inside, so a file in it
    is "not found" rather than read-only); empty otherwise. Only this path is told, not the
    host's other /tmp entries."""
    cwd = Path.cwd().resolve()
    return str(cwd) if _inside(cwd, Path("/tmp")) and cwd != Path("/tmp") else ""


def minimal_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment inside: nothing of the caller's but locale and path (no tokens, keys)."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
           "LANG": os.environ.get("LANG", "C.UTF-8"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return {**env, **(extra or {})}


def _pids_cgroup(limits: Limits) -> Path | None:
    """A fresh ``pids`` cgroup capped at ``processes`` (+2 for bubblewrap's own), for root only:
    the kernel does not apply RLIMIT_NPROC to uid 0, even in a user namespace."""
    if os.geteuid() != 0 or not limits.processes or not os.access(PIDS_CGROUP, os.W_OK):
        return None
    group = PIDS_CGROUP / "scorealign" / uuid.uuid4().hex[:12]
    for old in group.parent.iterdir() if group.parent.is_dir() else ():
        try:                         # left by killed trainers; rmdir refuses a busy one, and
            if old.is_dir() and time.time() - old.stat().st_mtime > 60:   # a new one is spared
                old.rmdir()
        except OSError:
            pass
    try:
        group.mkdir(parents=True)
        (group / "pids.max").write_text(str(limits.processes + 2))
    except OSError:
        return None
    return group


class ProcessTree:
    """One started process tree (isolated or not): ``proc``, :meth:`kill` (the whole tree) and
    :meth:`limit_hit` (which limit, in words, once it ended)."""

    def __init__(self, argv: list[str], limits: Limits, isolate: bool, *,
                 readable: tuple[str, ...] = (), hide: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, stderr=None) -> None:
        self.limits, self.isolate, self.timed_out, self.forks_refused = limits, isolate, False, 0
        self.cgroup = _pids_cgroup(limits) if isolate else None
        if isolate:
            wrap = bwrap_argv if backend() == "bwrap" else unshare_argv
            argv = wrap(argv, limits, readable, hide)
            env = minimal_env({**(env or {}), "SCOREALIGN_HIDDEN": hidden_folders(hide),
                               "SCOREALIGN_MASKED": masked_folders()})
        else:
            env = {**os.environ, **(env or {})}
        procs = os.open(self.cgroup / "cgroup.procs", os.O_WRONLY) if self.cgroup else None

        def enter() -> None:      # in the child, before exec: system calls only (threads)
            if procs is not None:
                os.write(procs, str(os.getpid()).encode())

        try:
            self.proc = subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout,
                                         stderr=stderr, start_new_session=True,
                                         preexec_fn=enter)  # noqa: PLW1509
        finally:
            if procs is not None:
                os.close(procs)

    def kill(self) -> None:
        """Kill every process of the tree (bubblewrap's namespace init takes its namespace
        with it; the process group and the cgroup catch the rest) and reap the root."""
        for target in (lambda: os.killpg(self.proc.pid, signal.SIGKILL),
                       lambda: self.proc.kill()):
            try:
                target()
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()
        self.release()

    def release(self) -> None:
        """Kill what is left in the tree's cgroup, wait for it to empty (up to 5 s), remove it."""
        if self.cgroup is None:
            return
        procs, deadline = self.cgroup / "cgroup.procs", time.monotonic() + 5.0
        try:
            while (pids := procs.read_text().split()) and time.monotonic() < deadline:
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.01)
            self.forks_refused = _forks_refused(self.cgroup)
            self.cgroup.rmdir()
        except OSError:
            pass                     # still emptying: an empty cgroup left behind, harmless
        self.cgroup = None

    def limit_hit(self) -> str | None:
        """The limit the ended tree ran into, in words (None: none that shows from outside)."""
        lim = self.limits
        if self.timed_out:
            return f"wall-clock timeout ({lim.timeout_s:g} s; the whole process tree was killed)"
        if self.forks_refused or (self.cgroup and _forks_refused(self.cgroup)):
            return f"process-count limit ({lim.processes} processes)"
        code = self.proc.returncode
        return signal_reason(code, asdict(lim)) if code is not None else None


def _forks_refused(group: Path) -> int:
    try:
        return int((group / "pids.events").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Outcome:
    returncode: int
    stdout: bytes
    stderr: bytes
    limit: str | None        # the limit hit, in words


def run_isolated(argv: list[str], stdin: bytes, limits: Limits, isolate: bool = True,
                 readable: tuple[str, ...] = ()) -> Outcome:
    """Run ``argv`` to completion (or to the wall-clock timeout) with ``stdin``. Its stdout and
    stderr go to files that the file-size limit caps (a pipe would let a program that prints
    without end fill the trainer's memory); the last 4000 bytes of stderr are kept."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        tree = ProcessTree(argv, limits, isolate, readable=readable, stdout=out, stderr=err)
        try:
            tree.proc.communicate(stdin, timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            tree.timed_out = True
        finally:
            tree.kill()                      # the whole tree, also when its root already exited
        out.seek(0)
        err.seek(max(0, err.seek(0, os.SEEK_END) - 4000))
        return Outcome(tree.proc.returncode, out.read(), err.read(), tree.limit_hit())


def workers() -> int:
    """Parallel programs: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def run_many(jobs: list[tuple[list[str], bytes]], limits: Limits, isolate: bool = True,
             readable: tuple[str, ...] = ()) -> list[Outcome]:
    """:func:`run_isolated` over ``jobs`` (argv, stdin), up to :func:`workers` at a time."""
    with ThreadPoolExecutor(max_workers=workers()) as pool:
        return list(pool.map(lambda job: run_isolated(*job, limits, isolate, readable), jobs))
