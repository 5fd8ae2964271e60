"""Plotting helpers shared by the CLI's figures and the notebooks (one implementation).

Each helper takes tidy DataFrames as written in a run folder and an optional
matplotlib ``Axes``; it returns the Axes (or Figure) so callers can style it.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402


def network_map(edges: pd.DataFrame, value: str = "delay_veh_h", ax=None, cmap: str = "viridis_r",
                label: str | None = None, offset_m: float | None = None):
    """Draw each edge as a segment coloured by ``value`` (averaged over worlds).

    ``edges`` needs ``edge, x1, y1, x2, y2`` and ``value``; two-way streets are
    drawn side by side, shifted to the right of their direction of travel.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 6))
    g = edges.groupby("edge", sort=False).agg({"x1": "first", "y1": "first", "x2": "first", "y2": "first",
                                               value: "mean"}).reset_index()
    p1 = g[["x1", "y1"]].to_numpy(float)
    p2 = g[["x2", "y2"]].to_numpy(float)
    d = p2 - p1
    n = np.linalg.norm(d, axis=1, keepdims=True)
    n[n == 0] = 1
    right = np.stack([d[:, 1], -d[:, 0]], axis=1) / n
    span = float(np.ptp(np.concatenate([p1, p2]), axis=0).max() or 1.0)
    off = offset_m if offset_m is not None else span * 0.008
    segs = np.stack([p1 + right * off, p2 + right * off], axis=1)
    vals = g[value].to_numpy(float)
    lc = LineCollection(segs, array=vals, cmap=cmap, linewidths=3.0)
    ax.add_collection(lc)
    ax.autoscale()
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    cb = ax.figure.colorbar(lc, ax=ax, shrink=0.8)
    cb.set_label(label or value)
    return ax


def timeseries(ts: pd.DataFrame, columns: list[str] | None = None, time: str = "time_s", fig=None):
    """One panel per column: the mean over worlds with the 5–95% band across worlds."""
    columns = columns or [c for c in ts.columns if c not in (time, "world", "arm", "replication")]
    if fig is None:
        fig, axes = plt.subplots(len(columns), 1, figsize=(7, 1.9 * len(columns)), sharex=True, squeeze=False)
        axes = axes[:, 0]
    else:
        axes = fig.axes
    by = ts.groupby(time)
    for ax, col in zip(axes, columns):
        m = by[col].mean()
        lo, hi = by[col].quantile(0.05), by[col].quantile(0.95)
        x = m.index.to_numpy() / 60.0
        ax.plot(x, m.to_numpy(), lw=1.6)
        ax.fill_between(x, lo.to_numpy(), hi.to_numpy(), alpha=0.25, lw=0)
        ax.set_ylabel(col.replace("_", " "), fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (min)")
    fig.tight_layout()
    return fig


def save(fig_or_ax, path) -> None:
    fig = fig_or_ax.figure if hasattr(fig_or_ax, "figure") and not hasattr(fig_or_ax, "savefig") else fig_or_ax
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
