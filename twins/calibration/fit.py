"""Fit route flows per interval to observed counts: the assignment measured in the twin, a fit of the flows
on it, repeated (the assignment depends on the demand through congestion), then an ensemble.

The model: count ``c`` (an edge, or a turn, in an interval) is ``m_c ~ Poisson(sum_u A[c, u] x_u)``, with
``x_u`` the expected vehicles of unit ``u`` (a route in an interval) and ``A[c, u]`` the entries into count
``c`` per vehicle of unit ``u``, measured by running the current demand in the batched twin
(:func:`twins.calibration.measure.simulate`: travel times, spillback, vehicles still waiting to enter at
the end all shape it). Two fits of ``x`` on a measured ``A`` (``calibrate.method``):

* ``em``: Poisson maximum likelihood by the EM (Richardson-Lucy) update
  ``x <- x * A^T(m / A x) / A^T 1``, started at the prior; a unit the prior leaves empty stays empty,
  and the prior's route shares survive where the counts do not tell routes apart.
* ``ls``: weighted least squares, GEH-like weights ``1 / max((m + s) / 2, 1)`` on each count, with a ridge
  ``calibrate.regularization`` toward the prior, ``x >= 0`` (``scipy.optimize.lsq_linear``).

The outer loop (``calibrate.iterations``) re-measures ``A`` at the new demand; the iterate whose own
twin run fits the counts best (mean GEH) is the point estimate. The **ensemble**
(``calibrate.ensemble`` members) is a bootstrap: each member refits on counts redrawn as Poisson around the
observed ones and on the assignment of a resample of the replications, so it spans the demands that the
count noise and the twin's own noise leave plausible; the members are then run as worlds of one batch
and their simulated counts give each count's 90% band.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def geh(m, c) -> np.ndarray:
    """GEH = sqrt(2 (m - c)^2 / (m + c)) per count (0 where both are 0)."""
    m, c = np.asarray(m, float), np.asarray(c, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.sqrt(2.0 * (m - c) ** 2 / (m + c))
    return np.where((m + c) > 0, g, 0.0)


def stats(m, c) -> dict:
    """GEH share below 5, mean GEH, total-flow error (simulated total / observed total - 1)."""
    g = geh(m, c)
    tot_m, tot_c = float(np.sum(m)), float(np.sum(c))
    return {"geh_share_below_5": float(np.mean(g < 5.0)) if g.size else float("nan"),
            "mean_geh": float(np.mean(g)) if g.size else float("nan"),
            "max_geh": float(np.max(g)) if g.size else float("nan"),
            "total_observed": tot_m, "total_simulated": tot_c,
            "total_flow_error": (tot_c / tot_m - 1.0) if tot_m > 0 else float("nan"), "counts": int(g.size)}


def fit_em(A: sp.csr_matrix, m: np.ndarray, x_start: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Poisson ML of ``x`` on ``m ~ Poisson(A x)`` by EM, from ``x_start`` (zeros stay zero)."""
    A = sp.csr_matrix(A)
    At = A.T.tocsr()
    col = np.asarray(A.sum(axis=0)).ravel()
    x = np.clip(np.asarray(x_start, float), 0.0, None).copy()
    seen = col > 0
    for _ in range(int(iterations)):
        s = A @ x
        ratio = np.where(s > 0, m / np.where(s > 0, s, 1.0), np.where(m > 0, 1.0, 0.0))
        x[seen] *= (At @ ratio)[seen] / col[seen]
    return x


def fit_ls(A: sp.csr_matrix, m: np.ndarray, prior: np.ndarray, s: np.ndarray, lam: float) -> np.ndarray:
    """Weighted least squares with a ridge toward ``prior``, ``x >= 0``."""
    from scipy.optimize import lsq_linear

    w = 1.0 / np.sqrt(np.maximum((m + s) / 2.0, 1.0))
    sc = 1.0 / np.sqrt(np.maximum(prior, 1.0))
    U = A.shape[1]
    M = sp.vstack([sp.diags(w) @ A, np.sqrt(lam) * sp.diags(sc)]).tocsr()
    b = np.concatenate([w * m, np.sqrt(lam) * sc * prior])
    res = lsq_linear(M, b, bounds=(0.0, np.inf), method="trf", lsmr_tol="auto", max_iter=200)
    x = np.clip(res.x, 0.0, None)
    x[~np.isfinite(x)] = 0.0
    return x if U else x


def fit(method: str, A, m, prior, x_start, s, lam: float, em_iterations: int) -> np.ndarray:
    if method == "em":
        return fit_em(A, m, x_start if x_start is not None else prior, em_iterations)
    return fit_ls(A, m, prior, s, lam)
