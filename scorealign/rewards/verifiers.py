"""Verifiable rewards: ``builtin:unit_tests`` (run the row's tests against the completion's code,
in the isolating runner) and ``builtin:math`` (answer equivalence through ``math-verify``).

Both keep what they found per row in ``details`` (one dict per completion of the last call:
tests passed, the reason of each failure, the limit hit, how the answer was compared), next to
the scores the ``RewardSource`` protocol returns; :func:`scorealign.rewards.sources.reward_details`
reads it for the completions log.
"""

from __future__ import annotations

import ast
import json
import math
import re
import sys
import threading
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import ConfigError, DataError, RewardError
from . import harness
from .isolation import Limits, require_isolation, run_many

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
PYTHON_TAGS = ("python", "py", "python3", "")
UNIT_TEST_LIMITS = Limits(timeout_s=10.0, cpu_s=5, memory_mb=1024, file_mb=16, processes=32,
                          tmp_mb=64)


def extract_code(completion: str) -> str | None:
    """The Python code of a completion, or None when there is none.

    The last fenced block tagged ``python``/``py`` or untagged; without fences, the whole text.
    A completion that does not start with a fence but closes one (the prompt opened it) gives
    the text before its first fence. Blocks in other languages only: None.
    """
    text = completion.strip()
    if not text.startswith("```") and text.count("```") % 2 == 1:
        return text.split("```", 1)[0].strip("\n") or None
    blocks = [(tag.lower(), body) for tag, body in FENCE.findall(text)]
    python = [body for tag, body in blocks if tag in PYTHON_TAGS]
    if python:
        return python[-1].strip("\n") or None
    if blocks:
        return None
    return text or None


def split_tests(tests, row: int) -> tuple[str, list[tuple[str, str]]]:
    """A row's ``tests`` -> (setup source, [(test name, test source)]).

    A list of strings: one test each. A string: its ``test_*`` functions are the tests (called
    with no arguments; the rest is setup) if it defines any; otherwise each top-level ``assert``
    or expression statement is a test and the other statements (imports, assignments, helper
    definitions) are setup.
    """
    where = f"row {row}, field 'tests'"
    if isinstance(tests, (list, tuple)):
        if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
            raise DataError(f"{where}: a list of tests must hold non-empty strings")
        return "", [(f"test {i + 1}", t) for i, t in enumerate(tests)]
    if not isinstance(tests, str) or not tests.strip():
        raise DataError(f"{where}: expected Python assert lines, test functions or a list "
                        f"of them, got {type(tests).__name__}")
    try:
        tree = ast.parse(tests)
    except SyntaxError as e:
        raise DataError(f"{where}: syntax error in the tests, line {e.lineno}: {e.msg}") from None
    source = lambda node: ast.get_source_segment(tests, node)
    functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and n.name.startswith("test")]
    if functions:
        setup = "\n".join(source(n) for n in tree.body)
        return setup, [(f.name, f"{f.name}()") for f in functions]
    setup, cases = [], []
    for node in tree.body:
        if isinstance(node, (ast.Assert, ast.Expr)):
            text = source(node)
            cases.append((" ".join(text.split())[:80], text))
        else:
            setup.append(source(node))
    if not cases:
        raise DataError(f"{where}: no assert statement or test_* function found")
    return "\n".join(setup), cases


def _row_details(lines: list[str], n_tests: int, outcome, all_or_nothing: bool) -> tuple[float, dict]:
    """(reward, details) of one program from its result lines and how it ended."""
    results: dict[int, dict] = {}
    for line in lines:
        try:
            r = json.loads(line)
            results.setdefault(int(r["test"]), r)
        except (ValueError, KeyError, TypeError):
            continue                                 # a program's own bytes on the channel
    missing = outcome.limit or f"the program ended (exit status {outcome.returncode})"
    if not outcome.limit and outcome.stderr.strip():
        missing += ": " + outcome.stderr.decode(errors="replace").strip().splitlines()[-1][:200]
    failures, passed = [], 0
    for i in range(n_tests):
        r = results.get(i)
        if r is not None and r.get("ok") is True:
            passed += 1
        else:
            failures.append(r["reason"] if r is not None else f"test {i + 1} not run: {missing}")
    score = passed / n_tests
    if all_or_nothing:
        score = float(passed == n_tests)
    return score, {"passed": passed, "total": n_tests, "failures": failures,
                   "limit": outcome.limit}


class UnitTestReward:
    """``builtin:unit_tests[:all]``: the fraction of the row's tests the completion's code
    passes (``:all``: 1 only if all pass), every program in the isolating runner."""

    def __init__(self, all_or_nothing: bool = False, isolate: bool = True,
                 limits: Limits = UNIT_TEST_LIMITS) -> None:
        self.name = "unit_tests:all" if all_or_nothing else "unit_tests"
        self.all_or_nothing, self.limits = all_or_nothing, limits
        self.isolate = require_isolation(isolate, "builtin:unit_tests (it runs model-written code)")
        self.details: list[dict] = []

    def __call__(self, prompts: list, completions: list[str], tests: list | None = None,
                 **row_fields: list) -> list[float]:
        if tests is None:
            raise RewardError(f"builtin:{self.name} needs a 'tests' column in the dataset "
                              "(assert lines or test_* functions per row)")
        plans = [split_tests(t, i) for i, t in enumerate(tests)]
        codes = [extract_code(c) for c in completions]
        inner = asdict(self.limits if self.isolate else replace(self.limits, processes=0))
        argv = [sys.executable, "-I", str(Path(harness.__file__))]
        runs = [i for i, code in enumerate(codes) if code is not None]
        jobs = [(argv, json.dumps({"limits": inner, "code": codes[i], "setup": plans[i][0],
                                   "tests": plans[i][1]}).encode()) for i in runs]
        outcomes = dict(zip(runs, run_many(jobs, self.limits, self.isolate,
                                           readable=(str(Path(harness.__file__).parent),))))
        scores, self.details = [], []
        for i, (setup, cases) in enumerate(plans):
            if i not in outcomes:
                scores.append(0.0)
                self.details.append({"passed": 0, "total": len(cases), "limit": None,
                                     "failures": ["no Python code in the completion"]})
                continue
            lines = outcomes[i].stdout.decode(errors="replace").splitlines()
            score, info = _row_details(lines, len(cases), outcomes[i], self.all_or_nothing)
            if "```" not in completions[i]:
                info["failures"] = [f.replace("syntax error in the code", "no code block, and "
                                              "the text is not Python: syntax error", 1)
                                    for f in info["failures"]]
            scores.append(score)
            self.details.append(info)
        return scores


# ----------------------------------------------------------------------------- math


NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?(?:/\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``3``, ``-2.5``, ``2,5``, ``3/4``), or None."""
    found = NUMBER.findall(text)
    if not found:
        return None
    token = found[-1].replace(",", ".")
    try:
        if "/" in token:
            num, den = token.split("/")
            return float(num) / float(den) if float(den) else None
        return float(token)
    except ValueError:
        return None


class MathReward:
    """``builtin:math``: 1 if the completion's final answer equals the row's ``answer``, through
    math-verify (boxed answers, fractions, LaTeX, sets, ...); where math-verify cannot parse the
    gold or the completion, the last number of each compared within 1e-6 (noted per row)."""

    name = "math"

    def __init__(self) -> None:
        try:
            import math_verify
        except ImportError:
            raise ConfigError("builtin:math needs the math-verify package: "
                              "pip install 'scorealign[math]'") from None
        self.parse, self.verify = math_verify.parse, math_verify.verify
        self.details: list[dict] = []

    def judge(self, completion: str, gold) -> tuple[float, dict]:
        timeout = 5 if threading.current_thread() is threading.main_thread() else None
        gold_text = str(gold)
        try:
            gold_parsed = self.parse(gold_text, parsing_timeout=timeout)
            pred = self.parse(completion, parsing_timeout=timeout)
            if gold_parsed and pred:
                ok = self.verify(gold_parsed, pred, timeout_seconds=timeout)
                return float(ok), {"method": "math-verify", "predicted": str(pred[-1])[:80]}
            why = "the gold answer" if not gold_parsed else "the completion"
        except Exception as e:                                    # noqa: BLE001 - fall back
            why = f"an error ({type(e).__name__})"
        want, got = last_number(gold_text), last_number(completion)
        ok = want is not None and got is not None and math.isclose(want, got, rel_tol=1e-6,
                                                                   abs_tol=1e-9)
        return float(ok), {"method": f"numeric fallback (math-verify could not parse {why})",
                           "predicted": got}

    def __call__(self, prompts: list, completions: list[str], answer: list | None = None,
                 **row_fields: list) -> list[float]:
        if answer is None:
            raise RewardError("builtin:math needs an 'answer' column in the dataset")
        judged = [self.judge(c, a) for c, a in zip(completions, answer)]
        self.details = [info for _, info in judged]
        return [score for score, _ in judged]
