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


def effects(eff: pd.DataFrame, metrics: list[str] | None = None, group_metric: str = "mean_delay_s",
            title: str | None = None, fig=None):
    """Effects with intervals, as written in ``effects.parquet``.

    Left: one small panel per network metric — the mean effect (dot), its paired 95%
    interval (thick bar) and the unpaired interval of the same data (thin grey bar).
    Right: ``group_metric`` per group (origin zones, approaches) with paired intervals.
    """
    net = eff[eff["scope"] == "network"]
    if metrics is None:
        metrics = [m for m in net["metric"].unique() if net.loc[net["metric"] == m, "n"].max() > 0]
    grp = eff[(eff["scope"] == "group") & (eff["metric"] == group_metric)] if "scope" in eff else eff.iloc[:0]
    n = max(len(metrics), 1)
    if fig is None:
        fig = plt.figure(figsize=(11, max(3.0, 0.55 * n + 1.2)))
    gs = fig.add_gridspec(n, 2, width_ratios=[1.0, 1.0] if len(grp) else [1.0, 0.01])
    for i, m in enumerate(metrics):
        ax = fig.add_subplot(gs[i, 0])
        r = net[net["metric"] == m].iloc[0]
        ax.plot([r.ci_low, r.ci_high], [0, 0], color="C0", lw=5, solid_capstyle="butt", label="paired 95% CI")
        ax.plot([r.unpaired_ci_low, r.unpaired_ci_high], [0, 0], color="0.35", lw=1.0, marker="|", ms=8,
                label="unpaired 95% CI", zorder=3)
        ax.plot([r.effect], [0], "o", color="k", ms=4)
        ax.axvline(0, color="C3", lw=0.8, ls="--")
        ax.set_yticks([])
        ax.set_ylabel(m.replace("_", " "), rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, 2.3), ncol=2, frameon=False)
    if len(grp):
        ax = fig.add_subplot(gs[:, 1])
        grp = grp.sort_values(["group_kind", "group"])
        y = np.arange(len(grp))
        ax.errorbar(grp["effect"], y, xerr=[grp["effect"] - grp["ci_low"], grp["ci_high"] - grp["effect"]],
                    fmt="o", ms=4, color="C0", ecolor="C0", capsize=2)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{k}: {g}" for k, g in zip(grp["group_kind"], grp["group"])], fontsize=7)
        ax.axvline(0, color="C3", lw=0.8, ls="--")
        ax.invert_yaxis()
        ax.set_xlabel(f"effect on {group_metric.replace('_', ' ')} (paired 95% CI)", fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def sweep(summary: pd.DataFrame, metrics: list[str] | None = None, x: str | None = None, fig=None):
    """A sweep summary (``summary.parquet``): per metric, the effect (with its paired 95% CI) or,
    without an effect, each arm's mean — against the swept value ``x`` (or the job number)."""
    metrics = metrics or [m for m in ("mean_delay_s", "mean_travel_time_s", "throughput_veh", "mean_stops")
                          if m in set(summary["metric"])] or list(summary["metric"].unique())[:4]
    if x is None:
        cand = [c for c in summary.columns if c.startswith("override:") and summary[c].nunique() > 1]
        x = cand[0] if len(cand) == 1 else "job"
    if fig is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0), squeeze=False)
        axes = axes[0]
    else:
        axes = fig.axes
    for ax, m in zip(axes, metrics):
        d = summary[summary["metric"] == m].copy()
        xs = pd.to_numeric(d[x], errors="coerce")
        labels = None
        if xs.isna().any():
            labels, xs = d[x].astype(str).tolist(), pd.Series(np.arange(len(d)), index=d.index)
        order = np.argsort(xs.to_numpy())
        d, xs = d.iloc[order], xs.iloc[order]
        if d["effect"].notna().any():
            ax.errorbar(xs, d["effect"], yerr=[d["effect"] - d["ci_low"], d["ci_high"] - d["effect"]],
                        fmt="o-", ms=4, capsize=3, label="effect (paired 95% CI)")
            ax.axhline(0, color="C3", lw=0.8, ls="--")
            ax.set_ylabel("effect vs baseline", fontsize=8)
        else:
            ax.plot(xs, d["baseline_mean"], "o-", ms=4, label="mean")
        ax.set_title(m.replace("_", " "), fontsize=9)
        ax.set_xlabel(x.replace("override:", ""), fontsize=8)
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([labels[i] for i in order], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig



def search_convergence(candidates: pd.DataFrame, objective: str, direction: str = "minimize", ax=None,
                       title: str = ""):
    """A search's ``candidates.parquet``: each evaluation's objective (by trial) and the best so far
    (feasible candidates only; infeasible ones drawn hollow)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.2))
    d = candidates[candidates["state"] == "COMPLETE"].sort_values("trial") if len(candidates) else candidates
    if len(d):
        feas = d["feasible"].to_numpy(bool)
        y = d[objective].to_numpy(float)
        x = d["trial"].to_numpy()
        ax.scatter(x[feas], y[feas], s=12, color="C0", label="candidate")
        if (~feas).any():
            ax.scatter(x[~feas], y[~feas], s=12, facecolors="none", edgecolors="C7", label="infeasible")
        yb = np.where(feas, y, np.inf if direction == "minimize" else -np.inf)
        best = np.minimum.accumulate(yb) if direction == "minimize" else np.maximum.accumulate(yb)
        ok = np.isfinite(best)
        ax.step(x[ok], best[ok], where="post", color="C3", label="best so far")
    ax.axhline(0, color="k", lw=0.6, ls=":")
    ax.set_xlabel("trial", fontsize=8)
    ax.set_ylabel(objective.replace("objective:", "effect on ").replace("_", " "), fontsize=8)
    ax.set_title(title or "search convergence", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def pareto_front(candidates: pd.DataFrame, pareto: pd.DataFrame, x: str, y: str, ax=None):
    """Every completed candidate on two objectives, the Pareto front highlighted (with its confirmed
    estimates and intervals where ``pareto`` carries them)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    d = candidates[candidates["state"] == "COMPLETE"] if len(candidates) else candidates
    if len(d):
        ax.scatter(d[x], d[y], s=10, color="C7", alpha=0.6, label="candidates (search)")
    if len(pareto):
        p = pareto.sort_values(x)
        ax.plot(p[x], p[y], "o-", color="C0", ms=5, label="Pareto front (search)")
        mx, my = x.replace("objective:", ""), y.replace("objective:", "")
        if f"confirmed:{mx}" in p and f"confirmed:{my}" in p:
            cx, cy = p[f"confirmed:{mx}"], p[f"confirmed:{my}"]
            ax.errorbar(cx, cy, xerr=[cx - p[f"ci_low:{mx}"], p[f"ci_high:{mx}"] - cx],
                        yerr=[cy - p[f"ci_low:{my}"], p[f"ci_high:{my}"] - cy], fmt="s", ms=4, color="C3",
                        capsize=2, label="confirmed (held-out, 95% CI)")
    ax.set_xlabel(x.replace("objective:", "effect on ").replace("_", " "), fontsize=8)
    ax.set_ylabel(y.replace("objective:", "effect on ").replace("_", " "), fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def confirmed_effects(confirmed: pd.DataFrame, metrics: list[str] | None = None, fig=None):
    """Per confirmed candidate: the search estimate and the held-out confirmed effect with its 95% CI."""
    metrics = metrics or list(confirmed["metric"].unique())[:3]
    if fig is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.5 + 0.35 *
                                 max(3, confirmed["trial"].nunique())), squeeze=False)
        axes = axes[0]
    else:
        axes = fig.axes
    for ax, m in zip(axes, metrics):
        d = confirmed[confirmed["metric"] == m].reset_index(drop=True)
        yy = np.arange(len(d))
        ax.errorbar(d["confirmed_effect"], yy, xerr=[d["confirmed_effect"] - d["ci_low"],
                                                     d["ci_high"] - d["confirmed_effect"]],
                    fmt="o", color="C0", capsize=3, label="confirmed (held-out, 95% CI)")
        ax.scatter(d["search_effect"], yy, marker="x", color="C3", label="search estimate")
        ax.set_yticks(yy)
        ax.set_yticklabels([f"trial {t}" + (" (P)" if p else "") for t, p in zip(d["trial"], d["pareto"])],
                           fontsize=7)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.invert_yaxis()
        ax.set_title(m.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig_or_ax, path) -> None:
    fig = fig_or_ax.figure if hasattr(fig_or_ax, "figure") and not hasattr(fig_or_ax, "savefig") else fig_or_ax
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
