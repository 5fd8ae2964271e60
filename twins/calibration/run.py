"""``python -m twins calibrate``: the task over a SUMO scenario and observed counts (see the package docstring)."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import pandas as pd

from twins.core.errors import ConfigError, check, suggest

from . import fit as F
from .counts import read_observed
from twins.traffic.demand_units import Units, intervals_of, units_of
from .measure import CountMap, simulate

log = logging.getLogger("twins")

METHODS = ("em", "ls")
WHY = {
    "em": "Poisson maximum likelihood of the route flows per interval by EM on the assignment measured in the "
          "batched twin (re-measured each iteration), started at the prior: flows stay >= 0 and the prior's route "
          "shares survive where the counts cannot tell routes apart. Chosen by measurement (benchmarks/README.md, "
          "calibration): on cologne8, cologne3 and the netgenerate test grid its route flows correlate best with "
          "the true ones, it closes more of the mean-GEH gap on two of the three, and it is the faster fit.",
    "ls": "weighted least squares (GEH-like weights) with a ridge toward the prior on the assignment measured in "
          "the batched twin (re-measured each iteration); on cologne8 it closed slightly more of the mean-GEH gap "
          "than EM (73 vs 70 %), on cologne3 and the test grid less.",
}


def _sha256(path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def settings(c) -> dict:
    """The ``calibrate`` section, checked (ConfigError naming the setting)."""
    get = (lambda k, d=None: c.get(k, d)) if c is not None else (lambda k, d=None: d)
    s = {"method": str(get("method", "em")), "iterations": int(get("iterations", 4)),
         "replications": get("replications", None), "ensemble": int(get("ensemble", 16)),
         "interval_s": get("interval_s", None), "regularization": float(get("regularization", 0.1)),
         "em_iterations": int(get("em_iterations", 100)), "sumo_seeds": list(get("sumo_seeds", []) or []),
         "tolerance": float(get("tolerance", 0.01)), "progress": get("progress", None)}
    check(s["method"] in METHODS, "calibrate.method", s["method"], " or ".join(METHODS), suggest(s["method"], METHODS))
    check(0 <= s["iterations"] <= 50, "calibrate.iterations", s["iterations"], "an integer in [0, 50]")
    check(s["replications"] is None or 1 <= int(s["replications"]) <= 4096, "calibrate.replications",
          s["replications"], "an integer >= 1 or null (the run's replications)")
    check(0 <= s["ensemble"] <= 4096, "calibrate.ensemble", s["ensemble"], "an integer >= 0 (0: no ensemble)")
    check(s["interval_s"] is None or float(s["interval_s"]) > 0, "calibrate.interval_s", s["interval_s"],
          "seconds > 0 or null (the counts' interval)")
    check(s["regularization"] >= 0 and math.isfinite(s["regularization"]), "calibrate.regularization",
          s["regularization"], "a number >= 0")
    check(0 <= s["tolerance"] < 1, "calibrate.tolerance", s["tolerance"], "a share in [0, 1)")
    check(1 <= s["em_iterations"] <= 100000, "calibrate.em_iterations", s["em_iterations"], "an integer >= 1")
    for x in s["sumo_seeds"]:
        check(isinstance(x, int) and 0 <= x < 2**31, "calibrate.sumo_seeds", s["sumo_seeds"],
              "a list of SUMO seeds (integers in [0, 2^31))")
    return s


def load(cfg):
    """``(base TrafficScenario, prior demand, begin, end, counts table)`` of a config; ConfigError on bad input."""
    from scenarios.sumo import car_following, load_scenario
    from twins.traffic.model import TrafficScenario

    sc = cfg.scenario
    if str(sc.get("kind", "")) != "sumo":
        raise ConfigError("scenario", str(sc.get("name", sc.get("kind"))), "a scenario read from SUMO files "
                          "(scenario=sumo scenario.sumocfg=...)", "Calibration fits the route flows of SUMO files to "
                          "counts of their edges; generated scenarios have no observed counterpart.")
    if str(sc.get("demand", "file") or "file") == "calibrated":
        raise ConfigError("scenario.demand", "calibrated", "file (a calibration starts from a route file's demand)",
                          "Calibrate from the original scenario, or from calibrated.sumocfg with scenario.demand=file.")
    network, demand, begin, end = load_scenario(sc)
    if end is None:
        end = begin + float(cfg.horizon_s)
    counts = read_observed(cfg.get("observed") or {}, network, begin=begin, end=end)
    base = TrafficScenario(network, demand, str(sc.get("name") or "sumo"), begin=begin,
                           car_following=car_following(sc.get("car_following"), demand))
    if sc.get("lane_changing", None) is not None and hasattr(base, "lane_changing"):
        base.lane_changing = bool(sc.get("lane_changing"))
    return base, demand, float(begin), float(end), counts


def check_inputs(cfg) -> None:
    """Everything the task reads, checked before a folder exists (the pre-check calls this)."""
    import warnings

    settings(cfg.get("calibrate"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, demand, _, _, _ = load(cfg)
    if not demand.flows:
        raise ConfigError("scenario.routes", "", "route files with vehicles, trips or flows (the prior demand)")


def calibrate(base, demand, begin: float, end: float, counts: pd.DataFrame, *, s: dict, seed: int = 0,
              replications: int = 8, dt: float = 1.0, progress: bool | None = None) -> dict:
    """The calibration itself (no files): units, history, point estimate, ensemble, fit tables."""
    t0 = time.perf_counter()
    width = float(s["interval_s"] or (counts["end_s"] - counts["begin_s"]).min())
    intervals = intervals_of(begin, end, width)
    units = units_of(demand, intervals)
    if units.size == 0:
        raise ConfigError("scenario.routes", "", "route files with vehicles, trips or flows (the prior demand)")
    R = int(s["replications"] or replications)
    horizon = end - begin
    m = counts["count"].to_numpy(float)
    cmap = CountMap(counts, units)
    if len(cmap.unreachable):
        c = counts.iloc[cmap.unreachable]
        log.warning("calibrate: %d of %d counts are on edges (or turns) that no route of the prior enters, e.g. %s "
                    "(line %d): the fit cannot change them", len(c), len(counts), c["edge"].iloc[0],
                    int(c["line"].iloc[0]))
    prior = units.prior.copy()
    reps = np.arange(R)
    show = bool(progress) if progress is not None else False
    history, xs, meas = [], [], []
    stopped = None
    x = prior.copy()
    for it in range(int(s["iterations"]) + 1):
        me = simulate(base, units, np.repeat(x[None, :], R, 0), reps, counts, seed=seed, horizon=horizon, dt=dt,
                      progress=show, desc=f"calibrate: iteration {it}", cmap=cmap)
        sim = me.sim.mean(0)
        st = F.stats(m, sim)
        st.update({"iteration": it, "vehicles": float(x.sum()), "twin_wall_s": round(me.wall_s, 3)})
        history.append(st)
        xs.append(x.copy())
        meas.append(me)
        log.info("calibrate: iteration %d: GEH<5 %.1f%%, mean GEH %.2f, total %+.1f%%", it,
                 100 * st["geh_share_below_5"], st["mean_geh"], 100 * st["total_flow_error"])
        if it == int(s["iterations"]):
            break
        best_before = min(h["mean_geh"] for h in history[:-1]) if it > 0 else math.inf
        if it > 0 and st["mean_geh"] > (1.0 - s["tolerance"]) * best_before:
            stopped = it  # no better than the best iterate by calibrate.tolerance: the assignment has settled
            break
        A = me.assignment()
        x = F.fit(s["method"], A, m, prior, prior, sim, s["regularization"], s["em_iterations"])
    best = min(range(len(history)), key=lambda i: (history[i]["mean_geh"], -i))
    x_hat, me_hat = xs[best], meas[best]
    # the ensemble: refits on Poisson-redrawn counts and resampled replications, run as worlds of one batch
    B = int(s["ensemble"])
    members = np.zeros((0, units.size))
    ens = None
    if B > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xCA11B]))
        A_fit = meas[max(best - 1, 0)] if best > 0 else me_hat  # the assignment x_hat was fitted on
        rows = []
        for b in range(B):
            mb = rng.poisson(m).astype(float)
            wb = rng.integers(0, R, R)
            Ab = A_fit.assignment(list(wb))
            simb = A_fit.sim[wb].mean(0)
            xb = x_hat.copy() if best == 0 else F.fit(s["method"], Ab, mb, prior, prior, simb, s["regularization"],
                                                      s["em_iterations"])
            rows.append(xb)
        members = np.array(rows)
        ens = simulate(base, units, members, R + np.arange(B), counts, seed=seed, horizon=horizon, dt=dt,
                       progress=show, desc=f"calibrate: ensemble ({B} worlds)", cmap=cmap)
    wall = time.perf_counter() - t0
    return {"units": units, "counts": counts, "intervals": intervals, "history": history, "best": best,
            "x": x_hat, "x_prior": prior, "sim": me_hat.sim, "sim_prior": meas[0].sim, "members": members,
            "ensemble": ens, "replications": R, "wall_s": wall, "width": width,
            "assignment_wall_s": [round(me.wall_s, 3) for me in meas],
            "unreachable": [int(counts["line"].iloc[i]) for i in cmap.unreachable], "stopped_early": stopped}


def fit_table(res: dict) -> pd.DataFrame:
    c = res["counts"]
    df = c[["kind", "edge", "from_edge", "begin_s", "end_s"]].copy()
    df["observed"] = c["count"].to_numpy(float)
    df["simulated"] = res["sim"].mean(0)
    df["simulated_sd"] = res["sim"].std(0, ddof=1) if res["sim"].shape[0] > 1 else 0.0
    df["geh"] = F.geh(df["observed"], df["simulated"])
    df["prior_simulated"] = res["sim_prior"].mean(0)
    df["prior_geh"] = F.geh(df["observed"], df["prior_simulated"])
    if res["ensemble"] is not None:
        q = np.quantile(res["ensemble"].sim, [0.05, 0.5, 0.95], axis=0)
        df["ensemble_p05"], df["ensemble_p50"], df["ensemble_p95"] = q
    df["line"] = c["line"].to_numpy()
    return df


def per_interval(fit: pd.DataFrame) -> list[dict]:
    out = []
    for (b, e), g in fit.groupby(["begin_s", "end_s"]):
        st = F.stats(g["observed"].to_numpy(), g["simulated"].to_numpy())
        out.append({"begin_s": float(b), "end_s": float(e), **st})
    return out


def summary_record(res: dict, s: dict, fit: pd.DataFrame, extra: dict | None = None) -> dict:
    from twins.core.io import jsonable

    point = F.stats(fit["observed"], fit["simulated"])
    prior = F.stats(fit["observed"], fit["prior_simulated"])
    rec = {
        "method": s["method"], "why": WHY[s["method"]],
        "fit": point, "prior_fit": prior,
        "targets": {"geh_share_below_5": ">= 0.85", "total_flow_error": "within +-0.05"},
        "passes": {"geh_share_below_5": point["geh_share_below_5"] >= 0.85,
                   "total_flow_error": abs(point["total_flow_error"]) <= 0.05},
        "per_interval": per_interval(fit),
        "iterations": res["history"], "best_iteration": int(res["best"]),
        "stopped_early_at": res.get("stopped_early"),
        "replications_per_iteration": res["replications"],
        "demand": {"units": int(res["units"].size), "routes": len(res["units"].routes),
                   "intervals": [list(i) for i in res["intervals"]], "interval_s": res["width"],
                   "prior_vehicles": float(res["x_prior"].sum()), "calibrated_vehicles": float(res["x"].sum())},
        "wall_time_s": round(res["wall_s"], 3),
        "counts_no_route_enters": {"count": len(res.get("unreachable", [])), "lines": res.get("unreachable", [])[:50],
                                   "what": "counts on edges or turns that no route of the prior enters (from "
                                           "upstream): no route flow can change them"},
        "settings": {k: v for k, v in s.items()},
    }
    if res["ensemble"] is not None:
        e = res["ensemble"].sim
        per = [F.stats(fit["observed"], e[b]) for b in range(e.shape[0])]
        share = np.array([p["geh_share_below_5"] for p in per])
        inside = ((fit["observed"] >= fit["ensemble_p05"] - 1e-9) & (fit["observed"] <= fit["ensemble_p95"] + 1e-9))
        tot = res["members"].sum(1)
        rec["ensemble"] = {
            "members": int(e.shape[0]),
            "how": "bootstrap: each member refits on counts redrawn as Poisson(observed) and on the assignment of a "
                   "resample (with replacement) of the iteration's replications; each member then runs as one world "
                   "(its own replication) of one batch",
            "geh_share_below_5": {"mean": float(share.mean()), "p05": float(np.quantile(share, 0.05)),
                                  "p95": float(np.quantile(share, 0.95))},
            "vehicles": {"mean": float(tot.mean()), "p05": float(np.quantile(tot, 0.05)),
                         "p95": float(np.quantile(tot, 0.95))},
            "observed_inside_90pct_band": float(inside.mean()),
        }
    if extra:
        rec.update(extra)
    return jsonable(rec)


def write(res: dict, s: dict, outdir, *, net: str, additional: list[str], begin: float, end: float,
          observed: dict, scenario: dict, car_following: str | None = None, sumo_check: bool = True) -> dict:
    """Every file of a calibration into ``outdir``; returns the calibration.json record."""
    from twins.core import io

    from . import sumo_files

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    fit = fit_table(res)
    fit.to_parquet(outdir / "fit.parquet", index=False)
    units: Units = res["units"]
    dem = units.table(res["x"])
    dem.to_parquet(outdir / "demand.parquet", index=False)
    if len(res["members"]):
        ens = pd.concat([units.table(res["members"][b]).assign(member=b) for b in range(len(res["members"]))],
                        ignore_index=True)
    else:
        ens = units.table(res["x"]).assign(member=0)
    ens[["member", "route_id", "route", "vtype", "begin_s", "end_s", "vehicles"]].to_parquet(
        outdir / "ensemble.parquet", index=False)
    rou = sumo_files.write_routes(units, res["x"], outdir / "calibrated.rou.xml")
    sumo_files.write_sumocfg(outdir / "calibrated.sumocfg", net=net, routes="calibrated.rou.xml",
                             additional=additional, begin=begin, end=end)
    extra = {"observed": observed, "scenario": scenario,
             "files": {"calibrated.sumocfg": "SUMO: sumo -c calibrated.sumocfg; the twin: scenario=sumo "
                                             "scenario.sumocfg=THIS/calibrated.sumocfg [scenario.demand=calibrated]",
                       "calibrated.rou.xml": rou, "fit.parquet": "observed vs simulated per count",
                       "demand.parquet": "prior and calibrated vehicles per route and interval",
                       "ensemble.parquet": "the ensemble: vehicles per member, route and interval"}}
    if s["sumo_seeds"] and sumo_check:
        extra["sumo_check"] = sumo_check_record(outdir / "calibrated.sumocfg", res["counts"], s["sumo_seeds"],
                                                begin, end, res["width"])
    rec = summary_record(res, s, fit, extra)
    io.write_json(outdir / "calibration.json", rec)
    try:
        from twins import plots

        (outdir / "figures").mkdir(exist_ok=True)
        plots.calibration(fit, rec, outdir / "figures" / "calibration.png")
    except Exception as e:  # noqa: BLE001  (a figure failure is a warning, as in a run)
        log.warning("calibrate: could not draw figures/calibration.png (%s: %s)", type(e).__name__, e)
    return rec


def observed_counts_in_sumo(sumocfg, counts: pd.DataFrame, seed: int, begin: float, end: float,
                            width: float) -> np.ndarray:
    """SUMO's counts for the rows of ``counts`` (edge rows; turn rows are NaN) in one run of ``sumocfg``."""
    from .sumo_files import sumo_counts

    sc = sumo_counts(sumocfg, seed=seed, interval_s=width, begin=begin, end=end)
    key = {(e, b): n for e, b, n in zip(sc["edge"], sc["begin_s"], sc["count"])}
    out = np.full(len(counts), np.nan)
    for i, (k, e, b, en) in enumerate(zip(counts["kind"], counts["edge"], counts["begin_s"], counts["end_s"])):
        if k == "edge" and abs((en - b) - width) < 1e-6:
            out[i] = key.get((e, float(b)), np.nan)
    return out


def sumo_check_record(sumocfg, counts, seeds, begin, end, width) -> dict:
    m = counts["count"].to_numpy(float)
    runs = []
    for sd in seeds:
        c = observed_counts_in_sumo(sumocfg, counts, int(sd), begin, end, width)
        ok = np.isfinite(c)
        runs.append({"seed": int(sd), **F.stats(m[ok], c[ok])})
    return {"what": "calibrated.sumocfg run in SUMO (its own binary) per seed; GEH against the observed counts "
                    "(edge counts on intervals of the calibration's width)", "runs": runs}


def calibrate_from_config(cfg, outdir) -> dict:
    """``python -m twins calibrate``: load, check, calibrate, write the folder."""
    import warnings

    from omegaconf import OmegaConf

    from scenarios.sumo import abs_path as _abs
    from twins.core import io
    from twins.traffic.sumo_bridge import input_files as _inputs

    started = time.time()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    s = settings(cfg.get("calibrate"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        base, demand, begin, end, counts = load(cfg)
    for w in caught[:5]:
        log.warning("%s", " ".join(str(w.message).split()))
    io.write_config(outdir, cfg)
    sc = cfg.scenario
    sumocfg, net = _abs(str(sc.get("sumocfg", "") or "")), _abs(str(sc.get("net", "") or ""))
    additional: list[str] = []
    if sumocfg:
        _, files = _inputs(sumocfg)
        additional = [str(Path(a).resolve()) for a in files["additional"]]
        net = net or str(Path(files["net"][0]).resolve())
    progress = s["progress"] if s["progress"] is not None else cfg.get("progress", None)
    res = calibrate(base, demand, begin, end, counts, s=s, seed=int(cfg.seed), replications=int(cfg.replications),
                    dt=float(cfg.dt_s), progress=True if progress is None else bool(progress))
    obs = cfg.get("observed") or {}
    observed = {k: {"path": _abs(str(obs.get(k))), "sha256": _sha256(_abs(str(obs.get(k)))),
                    "rows": int((counts["kind"] == ("edge" if k == "counts" else "turn")).sum())}
                for k in ("counts", "turn_counts") if obs.get(k)}
    scenario = {"sumocfg": sumocfg or None, "net": net, "begin": begin, "end": end,
                "routes": [str(r) for r in (_inputs(sumocfg)[1]["routes"] if sumocfg else [])],
                "car_following": base.car_following}
    rec = write(res, s, outdir, net=net, additional=additional, begin=begin, end=end, observed=observed,
                scenario=scenario)
    settings_used = OmegaConf.to_container(cfg.calibrate, resolve=True) if cfg.get("calibrate") is not None else {}
    io.write_json(outdir / "manifest.json", io.manifest(cfg, torch.device("cpu"), torch.float32, started, True,
                                                        task="calibrate", config=settings_used))
    return rec


def summary_lines(rec: dict, outdir) -> str:
    f, p = rec["fit"], rec["prior_fit"]
    lines = [f"calibration ({rec['method']}, {len(rec['iterations']) - 1} iterations, best {rec['best_iteration']}; "
             f"{rec['demand']['units']} route flows over {len(rec['demand']['intervals'])} intervals; "
             f"{rec['wall_time_s']:.1f} s):",
             f"  GEH < 5        prior {100 * p['geh_share_below_5']:5.1f}%   calibrated "
             f"{100 * f['geh_share_below_5']:5.1f}%   (target >= 85%)",
             f"  mean GEH       prior {p['mean_geh']:6.2f}   calibrated {f['mean_geh']:6.2f}",
             f"  total flow     prior {100 * p['total_flow_error']:+6.1f}%   calibrated "
             f"{100 * f['total_flow_error']:+6.1f}%   (target within 5%)"]
    if "ensemble" in rec:
        e = rec["ensemble"]
        lines.append(f"  ensemble       {e['members']} members: GEH < 5 {100 * e['geh_share_below_5']['p05']:.0f}-"
                     f"{100 * e['geh_share_below_5']['p95']:.0f}%, vehicles {e['vehicles']['p05']:.0f}-"
                     f"{e['vehicles']['p95']:.0f}; observed inside the 90% band: "
                     f"{100 * e['observed_inside_90pct_band']:.0f}%")
    for r in (rec.get("sumo_check") or {}).get("runs", []):
        lines.append(f"  SUMO seed {r['seed']:<4} GEH < 5 {100 * r['geh_share_below_5']:5.1f}%, mean GEH "
                     f"{r['mean_geh']:.2f}, total {100 * r['total_flow_error']:+.1f}%")
    lines.append(f"calibration folder: {outdir}")
    return "\n".join(lines)
