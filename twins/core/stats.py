"""Interval estimates: means with t-intervals, paired and unpaired differences."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def mean_ci(x, level: float = 0.95) -> dict:
    """Mean of ``x`` with a Student-t interval; n=1 gives an infinite interval."""
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    m = float(x.mean())
    if n == 1:
        return {"mean": m, "ci_low": -math.inf, "ci_high": math.inf, "n": 1}
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return {"mean": m, "ci_low": m - half, "ci_high": m + half, "n": n}


def paired_effect(treated, baseline, level: float = 0.95) -> dict:
    """Effect treated − baseline on the same replications, paired and unpaired intervals.

    The unpaired (Welch) interval is what the same data would give had the arms
    used independent noise: the ratio of widths is what common random numbers bought.
    """
    t = np.asarray(treated, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    ok = ~(np.isnan(t) | np.isnan(b))
    t, b = t[ok], b[ok]
    paired = mean_ci(t - b, level)
    n = t.size
    if n >= 2:
        vt, vb = t.var(ddof=1) / n, b.var(ddof=1) / n
        se = math.sqrt(vt + vb)
        dof = (vt + vb) ** 2 / (vt**2 / (n - 1) + vb**2 / (n - 1)) if vt + vb > 0 else n - 1
        half = float(stats.t.ppf(0.5 + level / 2, dof) * se) if se > 0 else 0.0
    else:
        half = math.inf
    m = paired["mean"]
    return {
        "effect": m,
        "ci_low": paired["ci_low"],
        "ci_high": paired["ci_high"],
        "n": paired["n"],
        "unpaired_ci_low": m - half,
        "unpaired_ci_high": m + half,
    }
