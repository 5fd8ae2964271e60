"""Plotting helpers shared by the CLI's figures and the notebooks (one implementation).

Each helper takes tidy DataFrames as written in a run folder and an optional
matplotlib ``Axes``; it returns the Axes (or Figure) so callers can style it.

Length: one function per figure, no shared state; a views library (tables in, figures out) that imports
nothing of the project but ``twins.core``.
"""
from __future__ import annotations

import os
import sys

import matplotlib

# headless CLI figures; in Jupyter, or with $MPLBACKEND set, keep the backend chosen there (inline plots)
if "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

# a reader of a figure has no code at hand: every axis says its quantity and unit
UNITS = {"delay_veh_h": ("delay", "veh·h"), "total_delay_veh_h": ("total delay", "veh·h"),
         "flow_veh_h": ("flow", "veh/h"), "density_veh_km": ("density", "veh/km"),
         "throughput_veh": ("throughput", "veh"), "arrivals": ("arrivals", "veh per interval"),
         "queued_vehicles": ("queued vehicles", "veh"), "waiting_to_insert": ("waiting to insert", "veh"),
         "vehicles_in_network": ("vehicles in network", "veh"), "mean_stops": ("mean stops", "stops per vehicle"),
         "free_ligand_uM": ("free ligand", "µM"), "n_receptors": ("receptors", "count")}
SUFFIX_UNITS = (("_mps", "m/s"), ("_veh_h", "veh/h"), ("_uM", "µM"), ("_veh", "veh"), ("_s", "s"), ("_m", "m"),
                ("_j", "J"), ("_w", "W"))


def _axis_label(name: str, prefix: str = "") -> str:
    """A metric or column name as an axis label with its unit: ``mean_delay_s`` -> ``mean delay (s)``."""
    name = str(name)
    verbatim = name.startswith("override:")  # a swept setting keeps its exact name: the reader types it
    for tag in ("objective:", "confirmed:", "override:"):
        name = name.replace(tag, "")
    text, unit = UNITS.get(name, (name, None))
    if unit is None:
        for suf, u in SUFFIX_UNITS:
            if name.endswith(suf):
                unit, text = u, name[: -len(suf)]
                break
    if verbatim:
        return f"{name} ({unit})" if unit else name
    if unit is None and ("occupancy" in name or name == "time_in_window"):
        unit = "fraction"
    if unit is None and name.startswith(("vehicles_", "bus_passengers_", "bus_trips")):
        unit = "count"
    text = (prefix + text.replace("_", " ")).strip()
    return f"{text} ({unit})" if unit else text


def _band_handle(n_worlds: int | None, color="C0", alpha=0.25) -> Patch:
    n = f" of {n_worlds} worlds" if n_worlds else " of worlds"
    return Patch(color=color, alpha=alpha, lw=0, label=f"5–95% band: spread{n} (5th to 95th percentile)")


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
    cb.set_label(label or _axis_label(value) + ", mean over worlds")
    ax.set_title(f"{value.replace('_', ' ')} per edge (mean over worlds)", fontsize=9)
    return ax


def timeseries(ts: pd.DataFrame, columns: list[str] | None = None, time: str = "time_s", fig=None,
               title: str | None = None):
    """One panel per column: the mean over worlds with the 5–95% band across worlds (the legend says so)."""
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
        ax.plot(x, m.to_numpy(), lw=1.6, label="mean over worlds")
        ax.fill_between(x, lo.to_numpy(), hi.to_numpy(), alpha=0.25, lw=0)
        ax.set_ylabel(_axis_label(col), fontsize=8)
        ax.grid(alpha=0.3)
    n = int(ts["world"].nunique()) if "world" in ts else None
    axes[0].legend(handles=[axes[0].lines[0], _band_handle(n)], fontsize=7, loc="lower left",
                   bbox_to_anchor=(0.0, 1.02), ncol=2, frameon=False)
    axes[-1].set_xlabel("time (min)")
    fig.suptitle(title or "network over time: mean over worlds, shaded 5–95% across worlds", fontsize=10)
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
        ax.plot([r.effect], [0], "o", color="k", ms=4, label="mean effect")
        ax.axvline(0, color="C3", lw=0.8, ls="--")
        ax.set_yticks([])
        ax.set_ylabel(_axis_label(m), rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, 2.3), ncol=3, frameon=False)
        if i == len(metrics) - 1:
            ax.set_xlabel("effect: treated − baseline, in each metric's unit (dashed: no effect)", fontsize=8)
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
        ax.set_xlabel(f"effect on {_axis_label(group_metric)}: mean, paired 95% CI", fontsize=8)
        ax.set_title("per group", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title or "effects of the intervention (treated − baseline, same replications)", fontsize=10)
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
            ax.set_ylabel(_axis_label(m, "effect on "), fontsize=8)
        else:
            ax.plot(xs, d["baseline_mean"], "o-", ms=4, label="mean over replications")
            ax.set_ylabel(_axis_label(m), fontsize=8)
        ax.set_title(_axis_label(m), fontsize=9)
        ax.set_xlabel(_axis_label(x), fontsize=8)
        if labels is not None:
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels([labels[i] for i in order], rotation=30, fontsize=7)
        ax.grid(alpha=0.3)
    if len(axes) and axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.suptitle("sweep: one point per job", fontsize=10)
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
    ax.set_ylabel(_axis_label(objective, "effect on "), fontsize=8)
    ax.set_title(f"search convergence{': ' + title if title else ''}", fontsize=9)
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
    ax.set_xlabel(_axis_label(x, "effect on "), fontsize=8)
    ax.set_ylabel(_axis_label(y, "effect on "), fontsize=8)
    ax.set_title("trade-off between the objectives: Pareto front", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def confirmed_effects(confirmed: pd.DataFrame, metrics: list[str] | None = None, fig=None):
    """Per confirmed candidate: the search estimate and the held-out confirmed effect with its 95% CI."""
    metrics = metrics or list(confirmed["metric"].unique())[:3]
    if fig is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 1.4 + 0.35 *
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
        ax.set_title(_axis_label(m), fontsize=9)
        ax.set_xlabel(_axis_label(m, "effect on "), fontsize=8)
        ax.grid(alpha=0.3)
    # below the panels, never over the data; (P): on the Pareto front
    h, lab = axes[0].get_legend_handles_labels()
    fig.legend(h + [Patch(color="none", label="(P): on the Pareto front")], lab + ["(P): on the Pareto front"],
               fontsize=7, loc="lower center", ncol=3, frameon=False)
    fig.suptitle("held-out confirmation: search estimate vs confirmed effect", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def transfer_effects(record: dict, path=None, fig=None):
    """``python -m twins transfer``: per metric, the twin's predicted paired effect and SUMO's realized one per
    car-following model, each with its 95% interval, and the ratio realized / predicted (``transfer.json``)."""
    metrics = list(record["metrics"])
    models = list(record["sumo"]["car_following"])
    if fig is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 1.6 + 0.4 * (len(models) + 1)),
                                 squeeze=False)
        axes = axes[0]
    else:
        axes = fig.axes
    nan = float("nan")
    num = lambda x: nan if x is None else float(x)  # noqa: E731
    for ax, m in zip(axes, metrics):
        d = record["metrics"][m]
        rows = [("twin (predicted)", d.get("predicted") or {}, "C0")] + \
            [(f"SUMO {cf}", d["realized"].get(cf) or {}, f"C{k + 1}") for k, cf in enumerate(models)]
        for y, (label, e, color) in enumerate(rows):
            x, lo, hi = num(e.get("effect")), num(e.get("ci_low")), num(e.get("ci_high"))
            err = [[x - lo if np.isfinite(lo) else 0.0], [hi - x if np.isfinite(hi) else 0.0]]
            ax.errorbar([x], [y], xerr=err, fmt="o" if y else "s", color=color, capsize=3)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r[0] for r in rows], fontsize=7)
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.invert_yaxis()
        ratios = ", ".join(f"{cf} {d['ratio'][cf]:.2f}" if d["ratio"].get(cf) is not None else f"{cf} n/a"
                           for cf in models)
        name = "RESCO delay (s)" if m == "resco_delay_s" else _axis_label(m)
        ax.set_title(f"{name}\nratio realized/predicted: {ratios}", fontsize=8)
        ax.set_xlabel(f"effect plan − baseline on {name}", fontsize=8)
        ax.grid(alpha=0.3)
    s = record["sumo"]
    on = {"twin": ", each on one of the twin's replications", "file": ", on the route files as written"}.get(
        (record.get("demand") or {}).get("mode"), "")
    fig.suptitle(f"does the plan hold in SUMO? {record.get('label', '')} — paired 95% intervals, "
                 f"{len(s['seeds'])} SUMO seeds{on}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
        plt.close(fig)
    return fig


# --- notebooks: traffic flow pictures, per-group effects, gates, drug design -----------------------
def corridor(edges: pd.DataFrame, start: str | None = None, max_gap_m: float = 40.0) -> list[str]:
    """Edge ids of a corridor: from ``start`` (default: the first edge), follow the straightest
    continuation (the next edge starting within ``max_gap_m`` of this one's end, never the reverse
    edge) until the corridor ends or closes on itself (a ring)."""
    g = edges.groupby("edge", sort=False).agg({"x1": "first", "y1": "first", "x2": "first", "y2": "first"})
    if not len(g):
        return []
    if start is not None and start not in g.index:
        raise ValueError(f"corridor start edge {start!r} is not in the edge table (edges: {', '.join(g.index[:8])}"
                         f"{', ...' if len(g) > 8 else ''})")
    p1, p2 = g[["x1", "y1"]].to_numpy(float), g[["x2", "y2"]].to_numpy(float)
    d = p2 - p1
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    i = int(g.index.get_loc(start)) if start is not None else 0
    path = [i]
    length = np.linalg.norm(p2 - p1, axis=1)
    while True:
        gap = np.linalg.norm(p1 - p2[i], axis=1)
        # the reverse edge (a U-turn) joins the same two ends the other way round; within a quarter of this
        # edge's length, so that on short edges (a ring of many chords) the edge before is not taken for it
        tol = min(max_gap_m, 0.25 * length[i])
        back = (np.linalg.norm(p2 - p1[i], axis=1) < tol) & (gap < tol)
        turn = d @ d[i]
        ok = (gap < max_gap_m) & ~back & (turn > -0.3)  # up to ~105°: a ring's chords turn 90°
        ok[i] = False
        if not ok.any():
            break
        j = int(np.argmax(np.where(ok, turn - gap / max_gap_m, -np.inf)))
        if j in path:
            break
        path.append(j)
        i = j
    return [str(g.index[k]) for k in path]


def time_space(trajectories: pd.DataFrame, edges: pd.DataFrame, route: list[str] | None = None, world: int = 0,
               time_range: tuple[float, float] | None = None, ax=None, cmap: str = "RdYlGn",
               vmax: float | None = None):
    """Time–space diagram of one corridor in one world: each vehicle's trace (distance along ``route``,
    by default :func:`corridor` from the first edge, against time), coloured by speed.

    ``trajectories`` is ``trajectories.parquet`` (a run with ``output.trajectory_every > 0``); ``edges``
    gives each edge's ``length_m``. A jam is a red band; a stop-and-go wave travels upstream, so its
    band slopes down while the vehicles' traces rise through it.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.2))
    route = list(route or corridor(edges))
    length = edges.groupby("edge")["length_m"].first()
    missing = [e for e in route if e not in length.index]
    if missing:
        raise ValueError(f"route edges not in the edge table: {missing}")
    offset = dict(zip(route, np.concatenate([[0.0], np.cumsum(length.loc[route].to_numpy(float))[:-1]])))
    t = trajectories[(trajectories["world"] == world) & trajectories["edge"].isin(route)]
    if time_range is not None:
        t = t[(t["time_s"] >= time_range[0]) & (t["time_s"] <= time_range[1])]
    if not len(t):
        raise ValueError(f"no recorded vehicle positions on {route} in world {world}"
                         f"{f' between {time_range[0]} and {time_range[1]} s' if time_range else ''}")
    t = t.assign(x=t["edge"].map(offset).to_numpy(float) + t["pos_m"].to_numpy(float)).sort_values(
        ["vehicle_id", "time_s"])
    v, tt, xx, sp = (t[c].to_numpy(float) for c in ("vehicle_id", "time_s", "x", "speed_mps"))
    dt = np.diff(tt)
    step = np.median(dt[dt > 0]) if (dt > 0).any() else 1.0
    # join consecutive records of a vehicle; break where it leaves the corridor or wraps round a ring
    join = (v[1:] == v[:-1]) & (dt <= 1.5 * step) & (np.diff(xx) >= 0)
    segs = np.stack([np.stack([tt[:-1], xx[:-1]], 1), np.stack([tt[1:], xx[1:]], 1)], 1)[join]
    vmax = vmax if vmax is not None else float(np.nanquantile(sp, 0.98))
    lc = LineCollection(segs, array=0.5 * (sp[:-1] + sp[1:])[join], cmap=cmap, linewidths=1.0)
    lc.set_clim(0.0, vmax)
    ax.add_collection(lc)
    ax.set_xlim(tt.min(), tt.max())
    ax.set_ylim(0, float(sum(length.loc[route])))
    for e in route[1:]:
        ax.axhline(offset[e], color="0.6", lw=0.5, ls=":")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("distance along the corridor (m)")
    ax.set_title(f"time–space diagram, world {world}: {route[0]} … {route[-1]}", fontsize=9)
    ax.figure.colorbar(lc, ax=ax, label="speed (m/s)")
    return ax


def fundamental_diagram(detectors: pd.DataFrame, edges: pd.DataFrame | None = None, ax=None, bins: int = 12,
                        color: str = "speed_mps"):
    """Flow against density from ``detectors.parquet`` (Edie's definitions, one point per interval,
    world and edge), per lane when ``edges`` (with ``lanes``) is given; the line is the mean flow in
    density bins. Free flow is the rising branch, congestion the falling one."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    d = detectors.dropna(subset=["flow_veh_h", "density_veh_km"])
    per = ""
    k, q = d["density_veh_km"].to_numpy(float), d["flow_veh_h"].to_numpy(float)
    if edges is not None and "lanes" in edges:
        lanes = d["edge"].map(edges.groupby("edge")["lanes"].first()).to_numpy(float)
        k, q, per = k / lanes, q / lanes, "/lane"
    sc = ax.scatter(k, q, c=d[color].to_numpy(float) if color in d else None, s=8, alpha=0.6, cmap="viridis",
                    linewidths=0)
    if color in d:
        ax.figure.colorbar(sc, ax=ax, label=color.replace("_", " "))
    if len(k) and np.ptp(k) > 0:
        edges_b = np.linspace(k.min(), k.max(), bins + 1)
        idx = np.clip(np.digitize(k, edges_b) - 1, 0, bins - 1)
        mk = np.array([k[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)])
        mq = np.array([q[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)])
        ax.plot(mk, mq, "-", color="C3", lw=1.8, label="mean flow per density bin")
        ax.legend(fontsize=7)
    ax.set_xlabel(f"density (veh/km{per})")
    ax.set_ylabel(f"flow (veh/h{per})")
    ax.set_title("fundamental diagram (detectors)", fontsize=9)
    ax.grid(alpha=0.3)
    return ax


def group_effects(eff: pd.DataFrame, metric: str = "mean_delay_s", by: str | None = None,
                  group_kind: str | None = None, ax=None):
    """Per-group effects (``scope == 'group'`` rows of effects tables) with paired 95% intervals; with
    ``by`` (a sweep's job or swept override column) one dodged marker per value of ``by``."""
    g = eff[(eff["scope"] == "group") & (eff["metric"] == metric)]
    if group_kind is not None:
        g = g[g["group_kind"] == group_kind]
    if not len(g):
        raise ValueError(f"no group effects for metric {metric!r}"
                         f"{' and group_kind ' + repr(group_kind) if group_kind else ''}; metrics with group rows: "
                         f"{sorted(eff.loc[eff['scope'] == 'group', 'metric'].unique())}")
    keys = g[["group_kind", "group"]].drop_duplicates().sort_values(["group_kind", "group"])
    pos = {(k, n): i for i, (k, n) in enumerate(keys.itertuples(index=False))}
    hues = sorted(g[by].unique(), key=lambda v: (str(type(v)), v)) if by else [None]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 1.0 + 0.22 * len(pos) * max(2, len(hues))))
    width = 0.7
    for h_i, h in enumerate(hues):
        sub = g if h is None else g[g[by] == h]
        y = np.array([pos[(k, n)] for k, n in zip(sub["group_kind"], sub["group"])], float)
        y = y + (h_i - (len(hues) - 1) / 2) * (width / max(len(hues), 1))
        ax.errorbar(sub["effect"], y, xerr=[sub["effect"] - sub["ci_low"], sub["ci_high"] - sub["effect"]],
                    fmt="o", ms=3.5, capsize=2, color=f"C{h_i % 10}",
                    label=None if h is None else f"{by.replace('override:', '')}={h}")
    ax.set_yticks(range(len(pos)))
    ax.set_yticklabels([f"{k}: {n}" for k, n in pos], fontsize=7)
    ax.axvline(0, color="C3", lw=0.8, ls="--")
    ax.invert_yaxis()
    ax.set_xlabel(f"effect on {_axis_label(metric)}: mean, paired 95% CI", fontsize=8)
    if by:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"effect on {metric.replace('_', ' ')} per group", fontsize=9)
    ax.grid(alpha=0.3)
    return ax


GATE_COLORS = {"PASS": "#2e7d32", "FAIL": "#c62828", "NEEDS_HUMAN": "#f9a825"}


def gate_decisions(gates: pd.DataFrame, ax=None, width: int = 90):
    """The ethics gates' decisions (``gates.json``): one row per gate, its status as a coloured box,
    hard gates marked, and the reason."""
    n = len(gates)
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.6 + 0.38 * max(n, 1)))
    for i, r in enumerate(gates.itertuples(index=False)):
        status = str(r.status)
        ax.text(0.0, i, status, ha="left", va="center", fontsize=8, color="white", fontweight="bold",
                bbox={"boxstyle": "round,pad=0.3", "fc": GATE_COLORS.get(status, "0.5"), "ec": "none"})
        hard = " (hard)" if bool(getattr(r, "hard", False)) else ""
        reason = str(r.reason or "")
        reason = reason if len(reason) <= width else reason[: width - 1] + "…"
        ax.text(0.17, i, f"{r.gate}{hard}: {reason}", ha="left", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(n - 0.5, -0.5)
    ax.axis("off")
    counts = gates["status"].value_counts().to_dict() if n else {}
    ax.set_title("ethics gates: " + (", ".join(f"{v} {k}" for k, v in counts.items()) or "none"), fontsize=9)
    return ax


def occupancy(ts: pd.DataFrame, columns=("target_occupancy", "offtarget_occupancy"), by: str | None = None,
              window: tuple[float, float] | None = None, ceiling: float | None = None, time: str = "time",
              ax=None):
    """Occupancy curves of the molecular twin (``timeseries.parquet``): the mean over worlds with the
    5–95% band across worlds, one colour per value of ``by`` (an arm, a swept dose), one line style per
    column (solid: the target, dashed: the off-target); the therapeutic window shaded, the off-target
    ceiling dotted."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.8))
    if window is not None:
        ax.axhspan(window[0], window[1], color="C2", alpha=0.12, lw=0, label="therapeutic window")
    if ceiling is not None:
        ax.axhline(ceiling, color="C3", lw=1.0, ls=":", label="off-target ceiling")
    hues = sorted(ts[by].unique(), key=lambda v: (str(type(v)), v)) if by else [None]
    styles = ["-", "--", ":", "-."]
    for h_i, h in enumerate(hues):
        sub = ts if h is None else ts[ts[by] == h]
        grp = sub.groupby(time)
        for c_i, col in enumerate(columns):
            m, lo, hi = grp[col].mean(), grp[col].quantile(0.05), grp[col].quantile(0.95)
            x = m.index.to_numpy(float)
            lab = col.replace("_", " ") if h is None else f"{col.replace('_', ' ')}, {by}={h}"
            ax.plot(x, m.to_numpy(), ls=styles[c_i % 4], color=f"C{h_i % 10}", lw=1.5, label=lab)
            ax.fill_between(x, lo.to_numpy(), hi.to_numpy(), color=f"C{h_i % 10}", alpha=0.15, lw=0)
    ax.set_xlabel(f"{time} (µs)" if time == "time" else _axis_label(time))
    ax.set_ylabel("fraction of receptors bound")
    ax.set_ylim(-0.02, 1.02)
    n = int(ts["world"].nunique()) if "world" in ts and by is None else None
    handles, labels_ = ax.get_legend_handles_labels()
    band = _band_handle(n, color="0.5", alpha=0.3)
    ax.legend(handles + [band], labels_ + [band.get_label()], fontsize=7, ncol=2)
    if not ax.get_title():
        ax.set_title("receptor occupancy: mean over worlds", fontsize=9)
    ax.grid(alpha=0.3)
    return ax


def _mean_ci_by(df: pd.DataFrame, by: str, cols) -> pd.DataFrame:
    from twins.core.stats import mean_ci

    rows = []
    for key, sub in df.groupby(by, sort=True):
        r = {by: key}
        for c in cols:
            s = mean_ci(sub[c].to_numpy(float))
            r.update({c: s["mean"], f"{c}:lo": s["ci_low"], f"{c}:hi": s["ci_high"]})
        rows.append(r)
    return pd.DataFrame(rows)


def dose_response(worlds: pd.DataFrame, x: str, metrics=("target_occupancy_mean", "offtarget_occupancy_mean"),
                  ceiling: float | None = None, window: tuple[float, float] | None = None, ax=None):
    """Dose–response: per value of ``x`` (a swept dose column of stacked ``worlds`` tables), each
    metric's mean over replications with its 95% t-interval."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    s = _mean_ci_by(worlds, x, metrics).sort_values(x)
    xs = pd.to_numeric(s[x]).to_numpy(float)
    for i, m in enumerate(metrics):
        y = s[m].to_numpy(float)
        lo, hi = s[f"{m}:lo"].to_numpy(float), s[f"{m}:hi"].to_numpy(float)
        ax.errorbar(xs, y, yerr=[y - lo, hi - y], fmt="o-", ms=4, capsize=3, color=f"C{i}",
                    label=m.replace("_", " ") + " (95% CI)")
    if window is not None:
        ax.axhspan(window[0], window[1], color="C2", alpha=0.12, lw=0, label="therapeutic window")
    if ceiling is not None:
        ax.axhline(ceiling, color="C3", lw=1.0, ls=":", label="off-target ceiling")
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel("mean over the horizon (fraction of receptors bound)")
    ax.set_title("dose–response: mean over replications, 95% CI", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def selectivity_tradeoff(worlds: pd.DataFrame, by: str, x: str = "offtarget_occupancy_max",
                         y: str = "target_occupancy_mean", ceiling: float | None = None, ax=None):
    """Efficacy against off-target exposure, one point per value of ``by`` (a dose, a design, a trial)
    with 95% intervals on both axes. Right of ``ceiling`` is out of bounds (shaded); a design counts as
    under the ceiling only if its interval's upper end is (the unfavourable end, as the gates read it).
    The best design under the ceiling (highest mean ``y``) is ringed."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.2))
    s = _mean_ci_by(worlds, by, [x, y])
    xv, yv = s[x].to_numpy(float), s[y].to_numpy(float)
    ax.errorbar(xv, yv, xerr=[xv - s[f"{x}:lo"], s[f"{x}:hi"] - xv], yerr=[yv - s[f"{y}:lo"], s[f"{y}:hi"] - yv],
                fmt="o", ms=4, capsize=2, color="C0", label=f"{by} (95% CI)")
    for k, a, b in zip(s[by], xv, yv):
        ax.annotate(str(k), (a, b), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if ceiling is not None:
        ax.axvspan(ceiling, max(ceiling, float(np.nanmax(s[f"{x}:hi"]))) * 1.05 + 1e-9, color="C3", alpha=0.1,
                   lw=0, label="over the off-target ceiling")
        ax.axvline(ceiling, color="C3", lw=1.0, ls=":")
        ok = s[f"{x}:hi"].to_numpy(float) <= ceiling
        if ok.any():
            best = int(np.nanargmax(np.where(ok, yv, -np.inf)))
            ax.scatter([xv[best]], [yv[best]], s=160, facecolors="none", edgecolors="C2", lw=2,
                       label=f"best under the ceiling: {by}={s[by].iloc[best]}", zorder=4)
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_axis_label(y))
    ax.set_title("efficacy against off-target exposure (95% CIs)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax


def save(fig_or_ax, path) -> None:
    fig = fig_or_ax.figure if hasattr(fig_or_ax, "figure") and not hasattr(fig_or_ax, "savefig") else fig_or_ax
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# --- calibration (python -m twins calibrate) ---------------------------------------------------------
def geh5_band(upto: float, n: int = 200):
    """``(m, lower, upper)``: the simulated counts at GEH = 5 around an observed count m (2d² = 25(2m + d))."""
    m = np.linspace(0.0, max(float(upto), 1.0), n)
    root = np.sqrt(625.0 + 400.0 * m)
    return m, np.maximum(m + (25.0 - root) / 4.0, 0.0), m + (25.0 + root) / 4.0


def calibration(fit: pd.DataFrame, record: dict | None = None, path=None, fig=None):
    """``python -m twins calibrate``: observed vs simulated count (the prior's and the calibrated twin's, with
    the ensemble's 90% band) inside the GEH 5 band; the share of counts with GEH < 5 per iteration."""
    if fig is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
    else:
        axes = fig.axes
    ax = axes[0]
    top = float(np.nanmax(fit[["observed", "simulated", "prior_simulated"]].to_numpy())) * 1.05
    m, lo, hi = geh5_band(top)
    ax.fill_between(m, lo, hi, color="0.85", label="GEH < 5")
    ax.plot([0, top], [0, top], color="k", lw=0.8)
    ax.scatter(fit["observed"], fit["prior_simulated"], s=10, color="C3", alpha=0.5, label="prior demand")
    if "ensemble_p05" in fit:
        ax.vlines(fit["observed"], fit["ensemble_p05"], fit["ensemble_p95"], color="C0", alpha=0.35, lw=1.2,
                  label="ensemble 90% band")
    ax.scatter(fit["observed"], fit["simulated"], s=12, color="C0", label="calibrated")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("observed count (veh per interval)")
    ax.set_ylabel("simulated count, twin (veh per interval)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    ax2 = axes[1]
    if record is not None and record.get("iterations"):
        it = [h["iteration"] for h in record["iterations"]]
        ax2.plot(it, [100 * h["geh_share_below_5"] for h in record["iterations"]], "o-", label="GEH < 5 (%)")
        ax2.axhline(85, color="k", ls="--", lw=0.8)
        ax2.set_ylabel("counts with GEH < 5 (%)")
        ax2.set_xlabel("iteration (0: prior)")
        ax2.set_xticks(it)
        ax3 = ax2.twinx()
        ax3.plot(it, [h["mean_geh"] for h in record["iterations"]], "s--", color="C1", label="mean GEH")
        ax3.set_ylabel("mean GEH", color="C1")
        ax2.set_title(f"{record.get('method', '')}: best iteration {record.get('best_iteration')}", fontsize=9)
        ax2.grid(alpha=0.3)
    f = (record or {}).get("fit") or {}
    if f:
        fig.suptitle(f"calibration: GEH < 5 on {100 * f['geh_share_below_5']:.0f}% of {f['counts']} counts, total "
                     f"flow {100 * f['total_flow_error']:+.1f}%, mean GEH {f['mean_geh']:.2f}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig
