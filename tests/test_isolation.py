"""Hostile code, in completions (``builtin:unit_tests``) and in reward files (``py:``/``file:``
workers), is contained by the isolating runner: each case is checked from OUTSIDE (the secret
file never came back, the listener heard nothing, the files are unchanged, no process is left)
and reported as an error naming the limit."""

import os
import re
import shutil
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from scorealign.errors import RewardError
from scorealign.rewards import isolation
from scorealign.rewards import sources as R
from scorealign.rewards.isolation import Limits, backend, backends
from scorealign.rewards.sandbox import SandboxedFunction, SandboxLimits
from scorealign.rewards.verifiers import UnitTestReward

pytestmark = pytest.mark.skipif(backend() is None, reason="no bubblewrap / user namespaces here")

MARK = f"{uuid.uuid4().int % 10**9:09d}"          # in the argv of every straggler we start
SECRET = f"secret-{MARK}"
LIMITS = Limits(timeout_s=8.0, cpu_s=3, memory_mb=512, file_mb=8, processes=16, tmp_mb=32)


def stragglers() -> list[int]:
    """Processes whose command line carries MARK (sleepers started by hostile code)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def no_stragglers(grace_s: float = 5.0) -> bool:
    """No MARK process left once the kernel has finished killing a namespace (killing a
    namespace's init is asynchronous: its processes die over a few milliseconds)."""
    import time

    deadline = time.monotonic() + grace_s
    while stragglers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(params=["bwrap", "unshare"])
def namespaces(request, monkeypatch):
    """Each test runs with each namespace tool that works here (bubblewrap, util-linux unshare
    with nsmount.py)."""
    if request.param not in backends():
        pytest.skip(f"{request.param} cannot create namespaces here")
    monkeypatch.setattr(isolation, "backend", lambda: request.param)
    return request.param


@pytest.fixture
def world(tmp_path, namespaces):
    """What hostile code goes for: a secret in the home directory, a listener on 127.0.0.1,
    a run directory and a file next to the code (outside /tmp)."""
    home_secret = Path.home() / f".scorealign-test-{MARK}"
    home_secret.write_text(SECRET)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    run_dir = Path(__file__).parent / f".hostile-run-{MARK}"      # outside /tmp, like runs/
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("steps: 1\n")
    beside = Path(__file__).parent / f".hostile-{MARK}"
    beside.write_text("untouched\n")
    yield {"secret": str(home_secret), "port": listener.getsockname()[1], "run": run_dir,
           "beside": beside}
    try:
        conn, _ = listener.accept()
        conn.close()
        heard = True
    except BlockingIOError:
        heard = False
    listener.close()
    home_secret.unlink()
    assert (run_dir / "config.yaml").read_text() == "steps: 1\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]
    shutil.rmtree(run_dir)
    assert beside.read_text() == "untouched\n"
    beside.unlink()
    assert not heard, "the listener on 127.0.0.1 was reached"
    assert no_stragglers(), "processes outlived the sandbox"


def hostile(world) -> dict[str, tuple[str, str]]:
    """case -> (body run when the function is called, the reason that must be reported)."""
    return {
        "fork_bomb": ("import os\nwhile True:\n    os.fork()", r"process-count limit"),
        "sleeping_children": (
            "import os, subprocess\n"
            f"subprocess.Popen(['sleep', '1000.{MARK}'], start_new_session=True)\n"
            f"os.system('(sleep 1001.{MARK} &) ; (setsid sleep 1002.{MARK} &)')\n"
            "raise RuntimeError('left children behind')", r"left children behind"),
        "read_home": (f"assert open({world['secret']!r}).read() != {SECRET!r}",
                      r"hidden folder"),
        "connect": ("import socket\n"
                    f"socket.create_connection(('127.0.0.1', {world['port']}), timeout=3)",
                    r"no network"),
        "write_run_dir": (f"open({str(world['run'] / 'config.yaml')!r}, 'a').write('x')\n"
                          f"import os; os.makedirs({str(world['run'] / 'checkpoints')!r})",
                          r"read-only filesystem|hidden folder"),
        "write_beside": (f"open({str(world['beside'])!r}, 'w').write('pwned')",
                         r"read-only filesystem|hidden folder \(the host's /tmp"),
        "fill_disk": ("for i in range(10**6):\n"
                      f"    open(f'/tmp/fill-{MARK}-{{i}}', 'wb').write(b'x' * (1 << 20))",
                      r"disk limit \(the private /tmp holds \d+ MB\)"),
        "big_file": ("open('/tmp/big', 'wb').write(b'x' * (64 << 20))",
                     r"file-size limit \(8 MB|memory limit"),
        "allocate": ("block = bytearray(4 << 30)", r"memory limit \(512 MB"),
        "endless_loop": ("while True:\n    pass", r"CPU-time limit|wall-clock timeout"),
    }


CASES = ["fork_bomb", "sleeping_children", "read_home", "connect", "write_run_dir",
         "write_beside", "fill_disk", "big_file", "allocate", "endless_loop"]


@pytest.mark.parametrize("case", CASES)
def test_hostile_completion_is_contained(world, case):
    body, reason = hostile(world)[case]
    code = "def add(a, b):\n" + textwrap.indent(body, "    ") + "\n    return a + b\n"
    reward = UnitTestReward(limits=LIMITS)
    completion = f"Here you go:\n```python\n{code}```\n"
    scores = reward(["p"], [completion], tests=["assert add(1, 2) == 3"])
    info = reward.details[0]
    assert scores == [0.0], info
    assert len(info["failures"]) == 1
    assert re.search(reason, info["failures"][0]), info
    assert not list(Path("/tmp").glob(f"fill-{MARK}-*"))


@pytest.mark.parametrize("case", CASES)
def test_hostile_reward_file_is_contained(world, case, tmp_path):
    body, reason = hostile(world)[case]
    if case == "endless_loop":
        reason = r"did not answer within 4 s \(reward_timeout\)"
    if case == "allocate":
        reason = r"memory limit \(512 MB"
    path = tmp_path / "hostile_reward.py"
    path.write_text("def reward(prompts, completions, **kw):\n"
                    + textwrap.indent(body, "    ") + "\n    return [1.0] * len(completions)\n")
    limits = SandboxLimits(timeout_s=4.0, memory_mb=512, file_mb=8, hide=(str(world["run"]),))
    source = SandboxedFunction(f"file:{path}:reward", limits)
    try:
        with pytest.raises(RewardError, match=reason):
            R.score_batch(source, ["p"], ["a"])
    finally:
        source.close()
    assert not list(Path("/tmp").glob(f"fill-{MARK}-*"))


def test_children_die_with_the_worker(world, tmp_path):
    """Sleepers forked by a reward function that returns normally live only as long as its
    worker: closing the source (or the trainer exiting) leaves no process behind."""
    path = tmp_path / "sleepy.py"
    path.write_text(textwrap.dedent(f"""
        import subprocess
        def reward(prompts, completions, **kw):
            subprocess.Popen(['sleep', '1003.{MARK}'], start_new_session=True)
            return [1.0] * len(completions)
    """))
    source = SandboxedFunction(f"file:{path}:reward", SandboxLimits(timeout_s=10.0))
    assert source(["p"], ["a"]) == [1.0]
    source.close()
    assert no_stragglers()


def test_unit_tests_opt_out_warns_loudly(monkeypatch):
    monkeypatch.setattr(isolation, "_WARNED", set())         # warned once per process
    with pytest.warns(UserWarning, match="WITHOUT isolation"):
        reward = UnitTestReward(isolate=False, limits=LIMITS)
    assert reward(["p"], ["def f():\n    return 1\n"], tests=["assert f() == 1"]) == [1.0]


def test_children_die_with_a_killed_trainer(tmp_path):
    """A trainer that dies without closing its sources (os._exit, SIGKILL) takes the worker and
    the worker's children with it (--die-with-parent), so nothing holds a pipe open after it."""
    import subprocess
    import sys
    import time

    path = tmp_path / "sleepy.py"
    path.write_text(textwrap.dedent(f"""
        import subprocess
        def reward(prompts, completions, **kw):
            subprocess.Popen(['sleep', '1004.{MARK}'], start_new_session=True)
            return [1.0] * len(completions)
    """))
    trainer = textwrap.dedent(f"""
        import os
        from scorealign.rewards.sandbox import SandboxedFunction
        src = SandboxedFunction("file:{path}:reward")
        print(src(["p"], ["a"]), flush=True)
        os._exit(0)
    """)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", trainer], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[1.0]", out.stderr
    assert time.monotonic() - t0 < 60                     # the pipe did not stay open
    assert no_stragglers()


def test_endless_output_is_capped_by_the_file_size_limit(namespaces):
    """A completion that prints without end fills a file capped at file_mb, not the trainer's
    memory, and still gets its tests' verdicts."""
    reward = UnitTestReward(limits=LIMITS)
    code = ("import sys, os\ndef f():\n    return 1\nfor _ in range(10**6):\n"
            "    try:\n        os.write(1, b'x' * 65536)\n    except OSError:\n        break\n")
    assert reward(["p"], [code], tests=["assert f() == 1"]) == [1.0], reward.details
