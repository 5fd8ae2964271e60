"""``scenario.demand=calibrated``: replications draw their demand from a calibration's ensemble.

``scenario=sumo scenario.sumocfg=RUN/calibrated.sumocfg scenario.demand=calibrated`` reads
``RUN/ensemble.parquet`` (written by ``python -m twins calibrate``: vehicles per member, route and interval).
Replication ``r`` runs member ``floor(u_r * B)``, ``u_r`` uniform from the keyed noise
(``(seed, r, Stream.USER, CALIBRATION_ENTITY)``), so every arm of a replication runs the same member (effects
stay paired: a null intervention gives exactly zero) while replications spread over the plausible demands:
intervals then include the calibration's uncertainty besides the arrivals' and the drivers' noise. Each
route and interval is one Poisson flow at the largest member's rate, thinned per world to its member's
(``worlds.params["flow_retention"]``, kept as ``worlds.params["calibrated_retention"]`` so that a demand
intervention multiplies it instead of replacing it). ``scenario.demand=file`` (the default) runs the
calibrated point estimate as ``calibrated.rou.xml`` states it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from twins.core.errors import ConfigError

DEMAND_MODES = ("file", "calibrated")
CALIBRATION_ENTITY = 0xCA1B  # the keyed draw that picks a replication's ensemble member
ENSEMBLE_FILE = "ensemble.parquet"


def ensemble_path(sumocfg: str) -> Path:
    """``ensemble.parquet`` next to a calibration's ``calibrated.sumocfg``; ConfigError when there is none."""
    if not sumocfg:
        raise ConfigError("scenario.demand", "calibrated", "file, unless scenario.sumocfg is a calibration's "
                          "calibrated.sumocfg", "scenario.demand=calibrated draws from the ensemble a calibration "
                          "wrote next to its calibrated.sumocfg (python -m twins calibrate).")
    p = Path(sumocfg).resolve().parent / ENSEMBLE_FILE
    if not p.is_file():
        raise ConfigError("scenario.demand", "calibrated", f"file, or a scenario.sumocfg with {ENSEMBLE_FILE} beside "
                          "it (the calibrated.sumocfg of python -m twins calibrate)", f"No {p}.")
    return p


def load(sumocfg: str, vtypes: dict):
    """``(units, members [B, U])`` of the calibration next to ``sumocfg``."""
    import pandas as pd

    from twins.traffic.demand_units import Units

    p = ensemble_path(sumocfg)
    df = pd.read_parquet(p)
    need = {"member", "route", "vtype", "begin_s", "end_s", "vehicles"}
    if not need <= set(df.columns):
        raise ConfigError("scenario.demand", "calibrated", f"an {ENSEMBLE_FILE} with columns {sorted(need)}",
                          f"{p} has {sorted(df.columns)}.")
    first = df[df["member"] == df["member"].min()]
    intervals = sorted({(float(b), float(e)) for b, e in zip(first["begin_s"], first["end_s"])})
    kidx = {iv: k for k, iv in enumerate(intervals)}
    rkey: dict[tuple, int] = {}
    routes, ids, types, route_of, interval_of = [], [], [], [], []
    for rid, route, vt, b, e in zip(first["route_id"] if "route_id" in first else first["route"], first["route"],
                                    first["vtype"], first["begin_s"], first["end_s"]):
        key = (route, vt)
        if key not in rkey:
            rkey[key] = len(routes)
            routes.append(str(route).split())
            ids.append(str(rid))
            types.append(str(vt))
        route_of.append(rkey[key])
        interval_of.append(kidx[(float(b), float(e))])
    missing = sorted(set(types) - set(vtypes))
    if missing:
        raise ConfigError("scenario.demand", "calibrated", "an ensemble whose vTypes the route files define",
                          f"{p} uses vType {missing[0]!r}, which {sumocfg}'s route files do not define.")
    U = len(first)
    members = np.stack([g.sort_index()["vehicles"].to_numpy(float) for _, g in df.groupby("member", sort=True)])
    if members.shape[1] != U:
        raise ConfigError("scenario.demand", "calibrated", "an ensemble with the same routes in every member",
                          f"{p}: members differ in length.")
    units = Units(routes, ids, types, intervals, np.array(route_of), np.array(interval_of), members.mean(0),
                  {t: vtypes[t] for t in sorted(set(types))})
    return units, members


def demand(sumocfg: str, file_demand):
    """The Poisson demand that carries every member (each unit at its largest member's rate)."""
    from twins.traffic.demand_units import unit_demand

    units, members = load(sumocfg, file_demand.vtypes)
    return unit_demand(units, members.max(0))


def member_of(seed: int, replications: torch.Tensor, B: int) -> torch.Tensor:
    from twins.core import noise

    u = noise.uniform(int(seed), replications.cpu().to(torch.int64), noise.Stream.USER, CALIBRATION_ENTITY)
    return torch.clamp((u * B).floor().to(torch.int64), 0, B - 1)


def retention(sumocfg: str, file_demand, worlds) -> torch.Tensor:
    """``[W, U]``: the share of each unit's (max-rate) vehicles that world's member keeps."""
    units, members = load(sumocfg, file_demand.vtypes)
    xmax = members.max(0)
    share = np.where(xmax[None, :] > 0, members / np.where(xmax > 0, xmax, 1.0)[None, :], 1.0)
    idx = member_of(worlds.seed, worlds.replication, members.shape[0])
    return torch.as_tensor(np.clip(share, 0.0, 1.0), dtype=torch.float64)[idx]


def provenance(sumocfg: str) -> dict | None:
    """What the demand was calibrated to (``calibration.json`` beside ``sumocfg``): the observed counts (path,
    sha256, rows), the method, the fit and the ensemble size; None when there is no calibration there."""
    import json

    if not sumocfg:
        return None
    p = Path(sumocfg).resolve().parent / "calibration.json"
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return {"calibration": str(p), "error": "calibration.json cannot be read"}
    return {"calibration": str(p), "observed": rec.get("observed"), "method": rec.get("method"),
            "fit": {k: (rec.get("fit") or {}).get(k) for k in ("geh_share_below_5", "mean_geh", "total_flow_error",
                                                                 "counts")},
            "ensemble_members": (rec.get("ensemble") or {}).get("members"),
            "scenario": (rec.get("scenario") or {}).get("sumocfg")}


def provenance_of(cfg) -> dict | None:
    """The ethics review's record of what a run's demand was calibrated to (None: not a calibrated scenario)."""
    sc = cfg.get("scenario") or {}
    if str(sc.get("kind", "")) != "sumo" or not sc.get("sumocfg"):
        return None
    from scenarios.sumo import abs_path

    rec = provenance(abs_path(str(sc.get("sumocfg"))))
    if rec is not None:
        rec["demand"] = str(sc.get("demand", "file") or "file")
    return rec
