"""The mount setup of the isolating runner where bubblewrap is missing: run as the first program
inside ``unshare --user --map-root-user --net --pid --fork --mount --mount-proc``, it builds the
same view bubblewrap builds, then executes the real program.

``python -I nsmount.py SPEC_JSON PROGRAM [ARGS...]`` with SPEC = ``{"tmp_mb", "hidden": [...],
"keep": [...]}``: a private size-limited tmpfs on ``/tmp``; an empty tmpfs on every hidden
folder (home, run directory) and on ``/dev`` (null, zero, random, urandom, tty bound back); the
``keep`` paths bound back read-only; every other mount remounted read-only (flags it already has
kept); then ``chdir("/tmp")``, and the program runs as a child of this process, which stays the
namespace's init (PID 1 ignores signals it has no handler for; a child dies of SIGXCPU as it
should) and exits with the program's status, or 128 + the signal that killed it. Standard library only (``python -I`` puts no
package on ``sys.path``). Any step that fails stops here, before the program runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_RELATIME, MS_STRICTATIME = 1 << 21, 1 << 24
# statvfs f_flag bit -> mount flag (flags the kernel locks in a user namespace must be kept)
KEPT_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC,
              os.ST_NOATIME: MS_NOATIME, os.ST_NODIRATIME: MS_NODIRATIME,
              os.ST_RELATIME: MS_RELATIME}
DEVICES = ("null", "zero", "random", "urandom", "tty", "full")
LIBC = ctypes.CDLL(None, use_errno=True)


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None
    if LIBC.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def remount_read_only(target: str) -> None:
    """Make the mount at ``target`` read-only, keeping the flags it has (locked or not)."""
    have = os.statvfs(target).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for bit, flag in KEPT_FLAGS.items():
        if have & bit:
            flags |= flag
    mount(None, target, None, flags)


def mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")   # \040 -> space
            points.append(point)
    return sorted(set(points), key=lambda p: (p.count("/"), p))


def setup(spec: dict) -> None:
    hidden, keep = spec["hidden"], spec["keep"]
    paths = {p: os.open(p, os.O_PATH) for p in keep}           # reachable after covering
    devices = {d: os.open(f"/dev/{d}", os.O_PATH) for d in DEVICES if os.path.exists(f"/dev/{d}")}
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['tmp_mb']}m,mode=1777")
    for folder in sorted(hidden, key=len):
        mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, "size=1m,mode=755")
    for name, fd in devices.items():
        open(f"/dev/{name}", "w").close()
        mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
    for path in sorted(paths, key=len):
        if os.path.isdir(f"/proc/self/fd/{paths[path]}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
        mount(f"/proc/self/fd/{paths[path]}", path, None, MS_BIND | MS_REC)
    for point in mount_points():
        if point in ("/tmp", "/proc") or point.startswith("/proc/") or (
                point.startswith("/tmp/") and point not in keep):
            continue
        try:
            remount_read_only(point)
        except OSError:
            if point.startswith(("/sys/", "/dev/")):
                continue            # under a covered /dev, or sysfs (read-only to the namespace)
            raise
    for fd in (*paths.values(), *devices.values()):
        os.close(fd)


def main() -> None:
    spec, argv = json.loads(sys.argv[1]), sys.argv[2:]
    try:
        setup(spec)
    except OSError as e:
        sys.stderr.write(f"scorealign isolation (unshare): {e}\n")
        os._exit(125)
    os.chdir("/tmp")
    child = os.fork()
    if child == 0:
        os.execv(argv[0], argv)
    os.close(0)                     # the pipes belong to the program
    os.close(1)
    while True:                     # the namespace's init: reap orphans until the program ends
        pid, status = os.wait()
        if pid == child:            # exit as bubblewrap does: the code, or 128 + the signal
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status)
                     else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
