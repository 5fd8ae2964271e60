"""Counterfactual evaluation: arms on shared replications, paired effects, per-group effects.

Arm 0 is the baseline; arm ``k >= 1`` a parameter vector of the intervention.
All arms run the same replications in one world batch (world = arm·R + rep),
so world ``(k, r)`` and ``(0, r)`` see the same exogenous noise ``u_r`` and
``Y(k, u_r) − Y(0, u_r)`` is a per-replication effect. :func:`effects`
reports its mean with a paired t-interval, n, and the Welch interval the same
data would give unpaired (``width_ratio`` = paired / unpaired width: what
common random numbers bought).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from twins.core.stats import mean_ci, paired_effect
from twins.core.worlds import WorldBatch

from .base import Intervention

EFFECT_COLUMNS = ["arm", "label", "scope", "group_kind", "group", "metric", "baseline_mean", "treated_mean",
                  "effect", "ci_low", "ci_high", "n", "unpaired_ci_low", "unpaired_ci_high", "width_ratio"]


@dataclass
class Arm:
    index: int
    label: str
    values: dict = field(default_factory=dict)


def arms_from_config(iv: Intervention) -> list[Arm]:
    """Baseline plus the config's parameter vector (just the baseline for ``none``)."""
    if iv.name == "none":
        return [Arm(0, "baseline", {})]
    values = iv.config_values()
    return [Arm(0, "baseline", {}), Arm(1, iv.describe(values) if values else f"{iv.name}(baseline)", values)]


def worlds_for(seed: int, replications: int, arms: list[Arm], first: int = 0) -> WorldBatch:
    return WorldBatch.replications(seed, replications, first=first, arms=len(arms))


def apply_arms(iv: Intervention, twin, arms: list[Arm]) -> list[Arm]:
    """Validate every arm's vector against the twin's scenario and write it into its worlds."""
    checked = [Arm(a.index, a.label, iv.validate(a.values, twin) if a.values else {}) for a in arms]
    by_arm = {a.index: a.values for a in checked}
    iv.apply(twin, [by_arm[int(a)] or None for a in twin.worlds.arm.cpu().tolist()])
    return checked


def _pair(df: pd.DataFrame, metric: str, arm: int, keys=("replication",)) -> tuple[np.ndarray, np.ndarray]:
    """Treated and baseline values of ``metric`` aligned by replication (NaN where one is missing)."""
    wide = df.pivot_table(index=list(keys), columns="arm", values=metric, aggfunc="first", dropna=False)
    if arm not in wide or 0 not in wide:
        return np.array([]), np.array([])
    return wide[arm].to_numpy(float), wide[0].to_numpy(float)


def _row(arm: Arm, scope, kind, group, metric, t, b) -> dict:
    e = paired_effect(t, b)
    ok = ~(np.isnan(t) | np.isnan(b))
    pw = e["ci_high"] - e["ci_low"]
    uw = e["unpaired_ci_high"] - e["unpaired_ci_low"]
    if pw == 0 and uw == 0:
        ratio = 0.0 if e["n"] >= 2 else math.nan
    else:
        ratio = pw / uw if (uw > 0 and math.isfinite(uw) and math.isfinite(pw)) else math.nan
    return {"arm": arm.index, "label": arm.label, "scope": scope, "group_kind": kind, "group": group,
            "metric": metric, "baseline_mean": float(np.mean(b[ok])) if ok.any() else math.nan,
            "treated_mean": float(np.mean(t[ok])) if ok.any() else math.nan, **e, "width_ratio": ratio}


def effects(worlds: pd.DataFrame, metrics: list[str], arms: list[Arm], groups: pd.DataFrame | None = None
            ) -> pd.DataFrame:
    """One row per treated arm × (network or group) × metric: effect, paired and unpaired 95% CIs."""
    rows = []
    for arm in arms:
        if arm.index == 0:
            continue
        for m in metrics:
            if m in worlds:
                t, b = _pair(worlds, m, arm.index)
                rows.append(_row(arm, "network", "", "", m, t, b))
        if groups is not None and not groups.empty:
            g = groups.merge(worlds[["world", "replication", "arm"]], on="world", how="left")
            gm = [c for c in g.columns if c not in ("world", "replication", "arm", "group_kind", "group")]
            for (kind, name), sub in g.groupby(["group_kind", "group"], sort=True):
                # a group with no arrivals in a world is missing there: pair over all replications
                reps = worlds[["replication"]].drop_duplicates()
                for m in gm:
                    wide = sub.pivot_table(index="replication", columns="arm", values=m, aggfunc="first")
                    wide = wide.reindex(reps["replication"])
                    if arm.index not in wide or 0 not in wide:
                        continue
                    rows.append(_row(arm, "group", str(kind), str(name), m, wide[arm.index].to_numpy(float),
                                     wide[0].to_numpy(float)))
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def effects_json(eff: pd.DataFrame, arms: list[Arm]) -> dict:
    """``{arm<k>: {label, values, metrics: {m: {...}}, groups: {kind: {group: {m: {...}}}}}}``."""
    from twins.core.io import jsonable as clean  # NaN/inf -> None, numpy scalars -> numbers

    keep = ["baseline_mean", "treated_mean", "effect", "ci_low", "ci_high", "n", "unpaired_ci_low",
            "unpaired_ci_high", "width_ratio"]
    out = {}
    for arm in arms:
        if arm.index == 0:
            continue
        e = eff[eff["arm"] == arm.index]
        net = {r.metric: clean({k: getattr(r, k) for k in keep}) for r in e[e["scope"] == "network"].itertuples()}
        grp: dict = {}
        for r in e[e["scope"] == "group"].itertuples():
            grp.setdefault(r.group_kind, {}).setdefault(r.group, {})[r.metric] = clean(
                {k: getattr(r, k) for k in keep})
        out[f"arm{arm.index}"] = {"label": arm.label, "values": arm.values, "metrics": net, "groups": grp}
    return out


def arm_summary(worlds: pd.DataFrame, metrics: list[str], arms: list[Arm]) -> dict:
    """Per arm: label, parameter vector and each metric's mean with a 95% interval."""
    out = {}
    for arm in arms:
        df = worlds[worlds["arm"] == arm.index]
        block = {}
        for m in metrics:
            s = mean_ci(df[m].to_numpy(dtype=float))
            block[m] = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()}
        out[f"arm{arm.index}"] = {"label": arm.label, "values": arm.values, "metrics": block}
    return out
