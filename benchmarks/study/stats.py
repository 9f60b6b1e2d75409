"""Means with 95% intervals over seeds, and the verdict rule for a claim.

Interval over seeds: mean ± t_{0.975, n-1} · s / sqrt(n) (Student t; s the sample standard
deviation over the n seeds). A comparison "a beats b" is judged on the paired per-seed
differences d_s = m(a, s) − m(b, s) (the two runs share the seed's SFT start, data and
evaluation draws): **reproduced** when the interval of mean d lies above 0, **not reproduced**
when it lies below 0, **not separable at this scale** when it contains 0 (or n < 2, or the differences are equal on
every seed, which estimates no spread); **no results yet** without a finished seed.
A claim of several comparisons is reproduced when all are, not reproduced when any is, and not
separable otherwise.
"""

from __future__ import annotations

import math

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
REPRODUCED, NOT_REPRODUCED, NOT_SEPARABLE = ("reproduced", "not reproduced",
                                             "not separable at this scale")
NO_RESULTS = "no results yet"      # a run of the comparison has not finished on any seed


def t975(df: int) -> float:
    """Two-sided 95% Student t quantile (table; the next smaller tabulated df above 10)."""
    if df in T975:
        return T975[df]
    return T975[max(k for k in T975 if k <= df)] if df < 30 else 1.96


def mean_ci(values: list[float]) -> tuple[float, float | None]:
    """(mean, half-width of the 95% interval; None for fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return float("nan"), None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t975(n - 1) * sd / math.sqrt(n)


def fmt(values: list[float], digits: int = 3) -> str:
    """'0.531 ± 0.024 (n=3)'; one seed: '0.531 (n=1)'; none: '-'."""
    if not values:
        return "-"
    mean, half = mean_ci(values)
    if half is None:
        return f"{mean:.{digits}f} (n={len(values)})"
    return f"{mean:.{digits}f} ± {half:.{digits}f} (n={len(values)})"


def comparison(a: list[float], b: list[float] | float) -> dict:
    """Paired comparison over seeds of ``a`` against ``b`` (per-seed values, or a constant)."""
    b_values = [float(b)] * len(a) if isinstance(b, (int, float)) else b
    diffs = [x - y for x, y in zip(a, b_values)]
    mean, half = mean_ci(diffs)
    if not diffs:
        verdict = NO_RESULTS
    elif half is None or half == 0.0:    # equal differences on every seed (ties of a
        verdict = NOT_SEPARABLE          # win-rate count): no estimate of the spread
    elif mean - half > 0:
        verdict = REPRODUCED
    elif mean + half < 0:
        verdict = NOT_REPRODUCED
    else:
        verdict = NOT_SEPARABLE
    return {"n": len(diffs), "mean": mean, "half": half, "verdict": verdict}


def combine(verdicts: list[str]) -> str:
    if NO_RESULTS in verdicts:
        return NO_RESULTS
    if verdicts and all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else NOT_SEPARABLE


def describe(c: dict) -> str:
    """'+0.012 [−0.034, +0.058] over 3 seeds' (one seed: no interval)."""
    if c["n"] == 0:
        return "no seed finished"
    if c["half"] is None:
        return f"{c['mean']:+.3f} over {c['n']} seed(s), no interval"
    return (f"{c['mean']:+.3f} [{c['mean'] - c['half']:+.3f}, {c['mean'] + c['half']:+.3f}] "
            f"over {c['n']} seeds")
