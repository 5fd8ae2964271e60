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


def replications_to_bound(mean: float, ci_high: float, n: int, bound: float, level: float = 0.95,
                          most: int = 4096) -> int | None:
    """How many replications a t-interval like this one (``mean``, upper end ``ci_high`` on ``n``) needs for its
    upper end to fall to ``bound``, taking the observed mean and spread as the truth (a planning estimate, not a
    promise). None where more replications cannot settle it (the mean itself is past ``bound``, or n < 2), or
    where it would take more than ``most``."""
    if not (n >= 2 and math.isfinite(mean) and math.isfinite(ci_high) and mean < bound):
        return None
    sd = (ci_high - mean) * math.sqrt(n) / float(stats.t.ppf(0.5 + level / 2, n - 1))
    if sd <= 0:
        return n

    def bounds(k: int) -> bool:  # (monotone in k: the least such k by bisection)
        return mean + float(stats.t.ppf(0.5 + level / 2, k - 1)) * sd / math.sqrt(k) <= bound

    if not bounds(most):
        return None
    lo, hi = n, most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if bounds(mid) else (mid + 1, hi)
    return lo


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
