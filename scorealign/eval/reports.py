"""Evaluation reports: confidence intervals, markdown tables and atomic writes of JSON/MD/PNG.

* Wilson score interval (Wilson 1927) for a rate k/n:
  centre = (p + z²/2n) / (1 + z²/n),  half = z·sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n).
  Unlike the normal interval it stays inside [0, 1] and is not degenerate at k = 0 or k = n.
* Percentile bootstrap for a mean of per-item outcomes: resample items with replacement
  ``n_boot`` times from a seeded ``numpy`` generator, take the 2.5 and 97.5 percentiles.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..core.io import atomic_write_bytes
from ..errors import ConfigError

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95% Wilson interval of k successes in n trials; None when n == 0."""
    if n == 0:
        return None
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_cell(flags: Sequence[bool]) -> dict[str, Any]:
    """``{n, count, rate, ci95}`` of boolean outcomes (rate and ci95 None when n == 0)."""
    n, k = len(flags), int(sum(bool(f) for f in flags))
    ci = wilson_interval(k, n)
    return {"n": n, "count": k, "rate": k / n if n else None, "ci95": list(ci) if ci else None}


def bootstrap_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``mean(values)``; None for no values."""
    import numpy as np

    if len(values) == 0:
        return None
    x = np.asarray(values, dtype=np.float64)                           # [n]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))                # [n_boot, n]
    means = x[idx].mean(axis=1)                                         # [n_boot]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def fmt_rate(cell: dict[str, Any], key: str = "rate", ci: str = "ci95") -> tuple[str, str]:
    """('12.5%', '[4.1%, 30.0%]') or ('-', '-') for an empty cell."""
    if cell.get(key) is None:
        return "-", "-"
    lo, hi = cell[ci]
    return f"{100 * cell[key]:.1f}%", f"[{100 * lo:.1f}%, {100 * hi:.1f}%]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; '|' inside cells is escaped."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def require_matplotlib(alternative: str = ""):
    """``matplotlib.pyplot`` on the Agg backend, or a ConfigError saying how to get it (and
    ``alternative``, such as ``--plot false``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plots: matplotlib is not installed (pip install 'scorealign[plot]')"
                          f"{alternative}") from None
    return plt


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)             # clf() alone leaves it in pyplot's registry (20+ open figures)
    atomic_write_bytes(path, buf.getvalue())
