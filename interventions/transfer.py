"""``python -m twins transfer RUN``: does a plan found in the twin hold in SUMO?

For a run or search folder whose scenario came from SUMO files (``scenario.kind == sumo``), the plan
(the run's intervention values, or the search's ``best_policy.json``) is turned into SUMO signal programs
by :func:`signal_plan` — the same code ``python -m twins export --format sumo`` writes its ``tlLogic``
with — and SUMO (the ``sumo`` binary, :func:`twins.traffic.sumo_bridge.run_sumo`) runs the scenario's own
network twice per seed and car-following model: once with the baseline programs (the scenario's programs
as the twin imported them, written the same way) and once with the plan. The paired effect plan − baseline
per seed (mean, paired 95% t-interval) is SUMO's *realized* effect; the twin's *predicted* effect comes
from the folder (``effects.json`` and ``worlds.parquet`` of a run; ``best_policy.json``'s held-out
confirmation of a search). ``ratio`` = realized / predicted, per metric and car-following model.

Both average over the same demands (``transfer.demand``, :data:`DEMAND_MODES`): where the twin draws its
demand per replication (scenario=sumo's Poisson re-draw of the file), seed k replays the k-th replication
behind the prediction with the vehicles the twin drew for it (:func:`drawn_routes`); a run's prediction is
then taken on the replications SUMO replays. Compared with the file's one day instead, the twin's average
over re-drawn days and SUMO's day differ in what they estimate (RESCO ingolstadt1: realized / predicted 0.56
on the file, 0.99 on the twin's demands; ``benchmarks/README.md``, transfer).

Metrics (the twin's names): ``mean_travel_time_s``, ``mean_delay_s`` (time loss of the arrived vehicles),
``throughput_veh``, ``resco_delay_s``: RESCO's delay, time loss plus departure delay averaged over all
loaded vehicles (those still running or still waiting to enter at the end included) — in the twin
``total_delay_veh_h · 3600 / vehicles_loaded`` per world — and ``total_delay_veh_h`` (scenario=sumo's default
search objective): the same sum in vehicle-hours, in SUMO ``resco_delay_s · vehicles_loaded / 3600``.

Writes ``RUN/transfer.json`` and ``RUN/figures/transfer.png`` (files the run's ethics review did not cover,
so an approved run stays exportable). The ethics review's external-validity gate runs the same replay
(:func:`replay`) and writes its own copy under ``RUN/evidence/`` (covered by the evidence digest).

Length: the plan export shared with ``export --format sumo``, the SUMO replay per seed and model, and the
realized-vs-predicted record; one reason to change: how a plan is checked outside the twin.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

#: metric -> which way is better
METRICS = {"mean_travel_time_s": "minimize", "mean_delay_s": "minimize", "throughput_veh": "maximize",
           "resco_delay_s": "minimize", "total_delay_veh_h": "minimize"}
#: SUMO's car-following models (--default.carfollowmodel); the twin runs IDM and Krauss
SUMO_MODELS = ("IDM", "Krauss", "KraussPS", "KraussOrig1", "EIDM", "IDMM", "W99", "Wiedemann", "ACC", "CACC",
               "BKerner", "SmartSK", "Daniel1", "PWagner2009", "Rail")
SUMO_VARIED = ("SUMO's --seed: each vehicle's speed factor (its vType's speedFactor distribution), the dawdling "
               "of stochastic car-following models (Krauss sigma) and the departures of random flows "
               "(probability=, period=exp(...)); the route file's fixed departures are as the file states")


#: transfer.demand: what SUMO's vehicles are. ``twin``: each SUMO run replays one of the replications the prediction
#: came from, with the departures the twin drew for it; ``file``: the route files as written; ``auto``: ``twin``
#: when the twin draws its demand per replication (scenario.demand_variation=poisson, probability or exp() flows,
#: a calibrated ensemble), else ``file`` (the same departures)
DEMAND_MODES = ("auto", "twin", "file")


DEMAND_TEXT = {
    "file": "SUMO reads the route files the twin's scenario read (scenario.sumocfg / scenario.routes), at "
            "scenario.demand_scale (SUMO --scale)",
    "twin": "each seed's two runs replay one of the twin's replications behind the prediction (demand.replications: "
            "seed, replication id, vehicles): the vehicles the twin drew for it, with their routes (trips routed "
            "at insertion are written as trips), types (the route files' vType elements as written) and departure "
            "speeds; other per-vehicle attributes of the file (departLane, departPos) take SUMO's defaults"}


class TransferError(Exception):
    """Bad input for a transfer (no plan, not a SUMO scenario, SUMO missing, a bad override): one line."""


class NoSignalPlan(ValueError):
    """The policy does not set a fixed-time signal plan (no programs, or an adaptive controller)."""


# --- the plan as SUMO programs (shared with ``export --format sumo``) ------------------------------------
def plan_twin(cfg, policy: dict | None):
    """A one-world twin of ``cfg`` with ``policy`` written into its parameters (never stepped)."""
    import interventions
    from twins.core import pipeline
    from twins.core.worlds import WorldBatch

    iv = interventions.get(cfg.get("intervention", None))
    twin = pipeline.make_twin(cfg, WorldBatch.replications(cfg.seed, 1))
    net = getattr(getattr(twin, "scenario", None), "network", None)
    if net is None or not getattr(net, "programs", None):
        raise NoSignalPlan("the scenario has no signal programs")
    iv.apply(twin, [dict(policy or {}) or None])
    return iv, twin


def signal_plan(cfg, policy: dict | None, program_id: str = "twins-recommended", twin=None,
                baseline: bool = False) -> list:
    """The plan's signal programs: the scenario's programs with the policy's phase durations and offsets (from
    the intervention itself, applied to a one-world twin of ``cfg``; ``twin``: one made by :func:`plan_twin`).
    ``baseline=True``: the scenario's own programs, as the twin imported them. Raises :class:`NoSignalPlan` when
    the scenario has no signal programs or the intervention sets no fixed-time plan."""
    from twins.traffic.network import Phase, SignalProgram

    if twin is None:
        iv, twin = plan_twin(cfg, None if baseline else policy)
    else:
        import interventions

        iv = interventions.get(cfg.get("intervention", None))
    net = twin.scenario.network
    params = twin.worlds.params
    if not baseline:
        if "signal_durations" not in params or any(k.endswith("min_green_s") for k in params):
            raise NoSignalPlan(f"intervention {iv.name!r} does not set a fixed-time signal plan")
        dur = params["signal_durations"][0].detach().cpu().double()
        off = params["signal_offsets"][0].detach().cpu().double()
    progs = []
    for i, pid in enumerate(twin.net_cpu.program_ids):
        base = net.programs[pid]
        if baseline:
            progs.append(SignalProgram(base.id, [Phase(ph.duration, ph.state, ph.name) for ph in base.phases],
                                       offset=base.offset, program_id=program_id))
            continue
        progs.append(SignalProgram(base.id, [Phase(round(float(dur[i, k]), 3), ph.state, ph.name)
                                             for k, ph in enumerate(base.phases)],
                                   offset=round(float(off[i]), 3), program_id=program_id))
    return progs


# --- what the folder holds --------------------------------------------------------------------------------
def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TransferError(f"{path}: cannot be read ({e}); is the run complete?") from None


def _resco(df):
    """Per world, RESCO's delay in the twin: (time loss + departure delay) over all loaded vehicles."""
    import numpy as np

    loaded = df["vehicles_loaded"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(loaded > 0, df["total_delay_veh_h"].to_numpy(float) * 3600.0 / loaded, np.nan)


def _resco_from_totals(confirmed: dict) -> dict:
    """RESCO's delay effect from a confirmation's ``total_delay_veh_h`` effect: × 3600 / the mean vehicles loaded.
    Both arms of a replication load the same vehicles (the effect on ``vehicles_loaded`` is 0), so the per-world
    effect is Δtotal · 3600 / loaded; dividing by the mean loaded instead is exact when every replication loads
    the same count, and off by the spread of the count (well under 1 % on the RESCO files) otherwise."""
    tot, loaded = confirmed.get("total_delay_veh_h"), confirmed.get("vehicles_loaded")
    if not isinstance(tot, dict) or not isinstance(loaded, dict) or not loaded.get("baseline_mean") or \
            any(loaded.get(k) not in (0, 0.0) for k in ("effect", "ci_low", "ci_high")):
        return {}
    k = 3600.0 / float(loaded["baseline_mean"])
    e = {x: (None if tot.get(x) is None else float(tot[x]) * k) for x in ("effect", "ci_low", "ci_high")}
    return {"resco_delay_s": _effect({**e, "n": tot.get("n")}, "best_policy.json (held-out confirmation): "
                                     "total_delay_veh_h x 3600 / mean vehicles_loaded")}


def predicted_from_worlds(worlds, metrics=None, arm: int = 1, source: str = "") -> dict:
    """Paired effects arm − baseline by replication from a per-world table (``worlds.parquet``)."""
    from twins.core.stats import paired_effect

    w = worlds.copy()
    if {"vehicles_loaded", "total_delay_veh_h"} <= set(w.columns):
        w["resco_delay_s"] = _resco(w)
    out = {}
    for m in (metrics or METRICS):
        if m not in w:
            continue
        wide = w.pivot_table(index="replication", columns="arm", values=m, aggfunc="first", dropna=False)
        if arm not in wide or 0 not in wide:
            continue
        e = paired_effect(wide[arm].to_numpy(float), wide[0].to_numpy(float))
        out[m] = _effect(e, source, baseline_mean=float(wide[0].mean()), treated_mean=float(wide[arm].mean()))
    return out


def _effect(e: dict, source: str, **extra) -> dict:
    from twins.core.io import jsonable

    return jsonable({"effect": e.get("effect"), "ci_low": e.get("ci_low"), "ci_high": e.get("ci_high"),
                     "n": e.get("n"), **{k: v for k, v in extra.items() if v is not None},
                     **({"source": source} if source else {})})


def read_plan(run: Path) -> dict:
    """``{cfg, policy, label, source, predicted}`` of a run or search folder; TransferError when it has no plan
    or its scenario was not read from SUMO files."""
    import pandas as pd
    from omegaconf import OmegaConf

    run = Path(run)
    if not run.is_dir():
        raise TransferError(f"{run}: no such folder (give a run or search folder: outputs/<date>/<time>_<name>)")
    if not (run / "config.yaml").is_file():
        raise TransferError(f"{run} is not a run or search folder (no config.yaml)")
    try:
        cfg = OmegaConf.load(run / "config.yaml")
    except Exception as e:  # noqa: BLE001
        raise TransferError(f"{run / 'config.yaml'} cannot be read ({type(e).__name__}: {e})") from None
    kind = str((cfg.get("scenario") or {}).get("kind", ""))
    if kind != "sumo":
        raise TransferError(f"scenario.kind={kind!r} in {run / 'config.yaml'}: transfer replays a plan in SUMO on the "
                            "scenario's own files, so it needs a scenario read from SUMO files (scenario=sumo "
                            "scenario.sumocfg=...); this one was generated by the twin")
    iv = str((cfg.get("intervention") or {}).get("name", "none"))
    if (run / "best_policy.json").is_file():
        best = _read_json(run / "best_policy.json") or {}
        if str(best.get("recommendation", "")).lower() == "baseline":
            why = f" ({best['reason']})" if best.get("reason") else ""
            raise TransferError(f"{run / 'best_policy.json'} recommends no plan: it keeps the baseline{why}; there is "
                                "nothing to replay in SUMO")
        params = best.get("recommended_params") or best.get("params") or {}
        if not params:
            raise TransferError(f"{run / 'best_policy.json'} recommends no plan (the search found no feasible "
                                "candidate): there is nothing to replay in SUMO")
        predicted = {m: _effect(v, "best_policy.json (held-out confirmation)")
                     for m, v in (best.get("confirmed") or {}).items() if isinstance(v, dict)}
        ev_worlds = run / "evidence" / "worlds.parquet"
        if "resco_delay_s" not in predicted and ev_worlds.is_file():  # the confirmation keeps no per-world values
            predicted.update(predicted_from_worlds(pd.read_parquet(ev_worlds), ["resco_delay_s"],
                                                   source="evidence/worlds.parquet (the review's held-out run)"))
        if "resco_delay_s" not in predicted:
            predicted.update(_resco_from_totals(best.get("confirmed") or {}))
        first, n = ((best.get("replications") or {}).get("confirm") or [None, None])[:2]
        reps = list(range(int(first), int(first) + int(n))) if first is not None and n else None
        return {"cfg": cfg, "policy": dict(params), "label": best.get("label") or f"{iv}({_fmt_policy(params)})",
                "source": "search", "predicted": predicted, "intervention": iv, "replications": reps}
    if not (run / "arms.json").is_file():
        raise TransferError(f"{run} holds no plan: neither best_policy.json (a search) nor arms.json (a run with an "
                            "intervention); run one with intervention=NAME first")
    arms = _read_json(run / "arms.json") or []
    treated = [a for a in arms if int(a.get("arm", 0)) >= 1 and a.get("values")]
    if iv == "none" or not treated:
        raise TransferError(f"{run} holds no plan: its run has no intervention (intervention={iv}, only the baseline "
                            "arm); run with intervention=NAME and its values, or a search")
    arm = treated[0]
    eff = (_read_json(run / "effects.json") or {}) if (run / "effects.json").is_file() else {}
    net = (eff.get(f"arm{arm['arm']}") or {}).get("metrics") or {}
    predicted = {m: _effect(v, "effects.json") for m, v in net.items() if isinstance(v, dict)}
    if (run / "worlds.parquet").is_file():
        predicted.update(predicted_from_worlds(pd.read_parquet(run / "worlds.parquet"), ["resco_delay_s"],
                                               arm=int(arm["arm"]), source="worlds.parquet"))
    return {"cfg": cfg, "policy": dict(arm["values"]), "label": arm.get("label") or iv, "source": "run",
            "predicted": predicted, "intervention": iv, "replications": list(range(int(cfg.get("replications", 0))))}


def _fmt_policy(p: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in p.items())


# --- SUMO ---------------------------------------------------------------------------------------------------
def sumo_inputs(sc) -> dict:
    """What SUMO reads for the ``scenario: sumo`` section ``sc``: the same files the twin read."""
    from scenarios.sumo import abs_path
    from twins.traffic.sumo_bridge import input_files

    sumocfg, net = abs_path(str(sc.get("sumocfg", "") or "")), abs_path(str(sc.get("net", "") or ""))
    routes = [abs_path(r.strip()) for r in str(sc.get("routes", "") or "").split(",") if r.strip()]
    extra = []
    if sumocfg:
        _, files = input_files(sumocfg)
        scenario = sumocfg
        if net:
            extra += ["--net-file", net]
        route_files = routes or files["routes"]
    else:
        scenario = {"net": net, "routes": routes, "additional": []}
        route_files = routes
    scale = float(sc.get("demand_scale", 1.0) if sc.get("demand_scale", 1.0) is not None else 1.0)
    unscaled = list(extra)
    if scale != 1.0:
        extra += ["--scale", repr(scale)]
    return {"scenario": scenario, "routes": routes or None, "extra_args": extra, "extra_args_unscaled": unscaled,
            "route_files": route_files, "sumocfg": sumocfg or None, "net": net or None, "demand_scale": scale}


def sumo_version(exe: str) -> str:
    import subprocess

    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def _one(exe: str, inputs: dict, plan: dict, model: str, seed: int, begin: float, end: float,
         timeout: float | None, drawn: str | None = None) -> dict:
    from twins.traffic.sumo_bridge import run_sumo

    # a drawn route file holds the twin's vehicles at its demand scale already: no --scale then
    extra = inputs["extra_args"] if drawn is None else inputs["extra_args_unscaled"]
    out = run_sumo(inputs["scenario"], plan, car_follow_model=model, seed=seed, begin=begin, end=end,
                   routes=inputs["routes"] if drawn is None else [drawn], extra_args=extra, timeout=timeout,
                   binary=exe)
    return with_total_delay(out)


def draws_demand(twin) -> bool:
    """Whether ``twin``'s replications differ in their departures (a flow drawn per replication, or a calibrated
    ensemble), i.e. whether the route files as written are not what the twin ran."""
    d = twin.scenario.demand
    return any(f.kind in ("poisson", "bernoulli") for f in d.flows) or "calibrated_retention" in twin.worlds.params


def demand_mode(demand: str, twin) -> str:
    """``transfer.demand`` resolved: ``auto`` is ``twin`` where ``twin`` draws its demand per replication, else
    ``file``."""
    return ("twin" if draws_demand(twin) else "file") if demand == "auto" else demand


def predicted_on(worlds, replications: list[int], metrics=None, arm: int = 1, source: str = "") -> dict:
    """:func:`predicted_from_worlds` on the given replications only (those SUMO replays)."""
    return predicted_from_worlds(worlds[worlds["replication"].isin(replications)], metrics, arm=arm,
                                 source=f"{source}, the {len(replications)} replications SUMO replays")


def drawn_routes(cfg, replications: list[int], folder: Path, route_files: list[str]) -> list[dict]:
    """Per replication id, the twin's own vehicles of that replication (the baseline arm: a signal plan does not
    change the demand) as a SUMO route file in ``folder``: ``{replication, path, vehicles, sha256}``."""
    import torch

    from twins.core import pipeline
    from twins.core.worlds import WorldBatch
    from twins.traffic.sumo_routes import vtype_elements, write_drawn_routes

    reps = torch.tensor([int(r) for r in replications], dtype=torch.int64)
    twin = pipeline.make_twin(cfg, WorldBatch(int(cfg.seed), reps, torch.zeros_like(reps)))
    demand, pop, F = twin.scenario.demand, twin.pop, len(twin.scenario.demand.flows)
    types = vtype_elements(route_files)
    out = []
    for w, r in enumerate(replications):
        flow = pop.flow[w].clone()
        flow[flow >= F] = -1  # (buses of the twin's own lines: none in a scenario read from SUMO files)
        path = write_drawn_routes(demand, flow.tolist(), pop.index_in_flow[w].tolist(), pop.depart[w].tolist(),
                                  folder / f"replication{int(r)}.rou.xml", vtype_elements=types)
        out.append({"replication": int(r), "path": str(path), "vehicles": int((flow >= 0).sum()),
                    "sha256": _sha256(str(path))})
    return out


def with_total_delay(m: dict) -> dict:
    """SUMO's ``total_delay_veh_h`` (the twin's metric, scenario=sumo's default objective): RESCO's delay sum, time
    loss plus departure delay of every loaded vehicle (still running or still waiting to enter included), in
    vehicle-hours, i.e. ``resco_delay_s · vehicles_loaded / 3600``."""
    r, n = m.get("resco_delay_s"), m.get("vehicles_loaded")
    if "total_delay_veh_h" not in m and _finite(r) and isinstance(n, (int, float)):
        m = {**m, "total_delay_veh_h": float(r) * float(n) / 3600.0}
    return m


def replay(cfg, policy: dict, predicted: dict, *, seeds, models, jobs=None, timeout=None, progress=True,
           desc="SUMO", twin=None, extra_metrics=(), replications=None, demand: str = "auto") -> dict:
    """Run SUMO on the baseline and on ``policy``'s plan for every seed and car-following model; the record
    (without the run folder's own fields): realized paired effects, the predicted ones, ``ratio``, for
    :data:`METRICS` and ``extra_metrics`` that SUMO measures (``twins.traffic.sumo_bridge`` names).

    ``demand`` (:data:`DEMAND_MODES`): with ``twin`` the k-th seed's runs replay the twin's k-th replication of
    ``replications`` (the ids ``predicted`` came from; continued past the last id when there are more seeds), with
    the departures the twin drew for it, so that realized and predicted effects average over the same demands."""
    import contextlib
    import tempfile
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from twins.core.stats import paired_effect
    from twins.traffic.sumo_bridge import find_sumo

    exe = find_sumo("sumo")
    if twin is None:
        _, twin = plan_twin(cfg, policy)
    import interventions

    iv = interventions.get(cfg.get("intervention", None))
    plan = {p.id: p for p in signal_plan(cfg, policy, twin=twin)}
    base = {p.id: p for p in signal_plan(cfg, {}, twin=twin, program_id="twins-baseline", baseline=True)}
    begin = float(getattr(twin, "begin", 0.0))
    end = begin + float(twin.n_steps * twin.dt)
    inputs = sumo_inputs(cfg.scenario)
    seeds, models = [int(s) for s in seeds], [str(m) for m in models]
    if demand not in DEMAND_MODES:
        raise TransferError(f"transfer.demand={demand!r}: expected one of {', '.join(DEMAND_MODES)}")
    varied = draws_demand(twin)
    mode = demand_mode(demand, twin)
    tmp = tempfile.TemporaryDirectory(prefix="twins_transfer_") if mode == "twin" else contextlib.nullcontext()
    drawn = {}
    if mode == "twin":
        reps = [int(r) for r in (replications if replications is not None else range(len(seeds)))][:len(seeds)]
        reps += list(range(max(reps, default=-1) + 1, max(reps, default=-1) + 1 + len(seeds) - len(reps)))
        drawn = dict(zip(seeds, drawn_routes(cfg, reps, Path(tmp.name), inputs["route_files"])))
    todo = [(m, s, arm) for m in models for s in seeds for arm in ("baseline", "plan")]
    jobs = max(1, min(int(jobs or os.cpu_count() or 1), len(todo)))
    runs: dict = {}
    t0 = time.perf_counter()
    with tmp, ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = {pool.submit(_one, exe, inputs, plan if arm == "plan" else base, m, s, begin, end, timeout,
                            drawn[s]["path"] if drawn else None): (m, s, arm) for m, s, arm in todo}
        bar = tqdm(total=len(todo), desc=desc, unit="run", disable=not progress, file=sys.stderr)
        try:
            for f in as_completed(futs):
                runs[futs[f]] = f.result()
                bar.update(1)
        except BaseException:
            for f in futs:
                f.cancel()
            raise
        finally:
            bar.close()
    wall = time.perf_counter() - t0
    names = list(dict.fromkeys([*METRICS, *(m for m in extra_metrics if m in next(iter(runs.values())))]))
    metrics = {}
    for name in names:
        realized, ratio = {}, {}
        for m in models:
            b = [runs[(m, s, "baseline")].get(name, math.nan) for s in seeds]
            p = [runs[(m, s, "plan")].get(name, math.nan) for s in seeds]
            e = paired_effect(p, b)
            realized[m] = _effect(e, "", baseline_mean=_mean(b), plan_mean=_mean(p))
            realized[m]["per_seed"] = [_num(x - y) for x, y in zip(p, b)]
            pred = (predicted.get(name) or {}).get("effect")
            eff = realized[m].get("effect")
            ratio[m] = _num(eff / pred) if _finite(eff) and _finite(pred) and pred != 0 else None
        metrics[name] = {"direction": METRICS.get(name, "minimize"), "predicted": predicted.get(name),
                         "realized": realized, "ratio": ratio}
    return {
        "scenario": {"kind": "sumo", "name": str(cfg.scenario.get("name", "sumo")), "sumocfg": inputs["sumocfg"],
                     "net": inputs["net"], "begin": begin, "end": end},
        "plan": {"intervention": iv.name, "policy": policy, "label": iv.describe(policy),
                 "programs": _programs(plan.values()),
                 "written_by": "interventions.transfer.signal_plan (as python -m twins export --format sumo)"},
        "baseline": {"programs": _programs(base.values()),
                     "what": "the scenario's own signal programs as the twin imported them (static), written the "
                             "same way as the plan"},
        "demand": {"mode": mode, "route_files": [{"path": r, "sha256": _sha256(r)} for r in inputs["route_files"]],
                   "same_as_twin": DEMAND_TEXT[mode], "demand_scale": inputs["demand_scale"],
                   "twin_demand_variation": str(cfg.scenario.get("demand_variation", "none")),
                   **({"replications": [{"seed": s, **{k: v for k, v in d.items() if k != "path"}}
                                        for s, d in drawn.items()]} if drawn else {}),
                   **({"note": f"the prediction averages {n_pred} replications and SUMO replayed the first "
                               f"{len(seeds)} of them: transfer.seeds={n_pred} replays them all"}
                      if drawn and (n_pred := _prediction_n(predicted)) > len(seeds) else {}),
                   "sumo_varied": SUMO_VARIED + (
                       "; the twin's per-replication re-draw of the file's demand is the twin's own: SUMO runs the "
                       "file as written" if mode == "file" and varied else "")},
        "sumo": {"binary": exe, "version": sumo_version(exe), "seeds": seeds, "car_following": models,
                 "runs": len(todo), "jobs": jobs, "wall_time_s": round(wall, 3)},
        "twin": {"car_following": str(getattr(twin.scenario, "car_following", "")),
                 "replications": int(cfg.get("replications", 0) or 0)},
        "metrics": metrics,
        "runs": [{"car_following": m, "seed": s, "arm": arm,
                  **{k: v for k, v in r.items() if k in names or k in ("vehicles_loaded", "vehicles_inserted",
                                                                       "vehicles_waiting", "teleports")}}
                 for (m, s, arm), r in sorted(runs.items())],
    }


def _prediction_n(predicted: dict) -> int:
    """The number of replications behind the prediction (the largest ``n`` among its metrics; 0: unknown)."""
    return max((int(v.get("n") or 0) for v in predicted.values() if isinstance(v, dict)), default=0)


def _programs(progs) -> list[dict]:
    return [{"id": p.id, "cycle_s": round(p.cycle, 3), "offset_s": p.offset,
             "durations_s": [ph.duration for ph in p.phases]} for p in progs]


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(x):
    return float(x) if _finite(x) else None


def _mean(xs) -> float | None:
    v = [x for x in xs if _finite(x)]
    return sum(v) / len(v) if v else None


def write(record: dict, json_path: Path, fig_path: Path | None) -> list[Path]:
    """``json_path`` (and the figure, when it can be drawn), each written to a temporary name first."""
    import logging

    from twins.core import io

    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(f".{json_path.name}.tmp")
    io.write_json(tmp, record)
    os.replace(tmp, json_path)
    out = [json_path]
    if fig_path is not None:
        try:
            from twins import plots

            fig_path = Path(fig_path)
            fig_path.parent.mkdir(parents=True, exist_ok=True)
            tmpf = fig_path.with_name(f".{fig_path.stem}.tmp{fig_path.suffix}")
            plots.transfer_effects(record, tmpf)
            os.replace(tmpf, fig_path)
            out.append(fig_path)
        except Exception as e:  # noqa: BLE001  (a figure failure is a warning, as in a run)
            logging.getLogger("twins").warning("transfer: could not draw %s (%s: %s)", fig_path, type(e).__name__, e)
    return out


# --- the command ----------------------------------------------------------------------------------------------
USAGE = """usage: python -m twins transfer RUN [transfer.KEY=VALUE ...]

Replay a run's or search's plan in SUMO (the scenario's own SUMO files): baseline and plan for every seed and
car-following model; writes RUN/transfer.json and RUN/figures/transfer.png.

settings (Hydra-style overrides):
  transfer.seeds=4                      SUMO runs per program and car-following model
  transfer.first_seed=0                 SUMO --seed of the first run
  "transfer.car_following=[IDM,Krauss]" SUMO's --default.carfollowmodel, one set of runs each
  transfer.jobs=null                    SUMO processes at once (null: one per CPU core)
  transfer.timeout_s=null               per SUMO run
  transfer.progress=true                a progress bar while SUMO runs
  transfer.demand=auto                  twin: each seed replays one of the twin's replications behind the
                                        prediction, with the departures the twin drew for it; file: the route
                                        files as written; auto: twin when the twin draws its demand per
                                        replication (scenario=sumo's default, demand_variation=poisson), else file
"""


def settings(overrides: list[str]):
    """The ``transfer`` settings: :class:`twins.core.config.TransferConfig` with the overrides applied."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from twins.core.config import TransferConfig
    from twins.core.errors import ConfigError, check, suggest

    t = OmegaConf.structured(TransferConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise TransferError(" ".join(str(e).split())) from None
    keys = list(t.keys())
    for o in parsed:
        key = o.get_key_element()
        if not key.startswith("transfer.") or o.is_sweep_override() or o.is_hydra_override():
            raise TransferError(f"{o.input_line!r}: expected a setting transfer.KEY=VALUE "
                                f"({', '.join('transfer.' + k for k in keys)})")
        leaf = key[len("transfer."):]
        if leaf not in keys:
            raise TransferError(f"{key}: no such setting. {suggest(leaf, keys)}")
        try:
            t[leaf] = o.value()
        except (OmegaConfBaseException, ValueError) as e:
            raise TransferError(f"{key}={o.value()!r} is invalid: {' '.join(str(e).splitlines()[:1])}") from None
    try:
        check(int(t.seeds) >= 2, "transfer.seeds", t.seeds, "an integer >= 2 (a paired interval needs two seeds)")
        check(0 <= int(t.first_seed) < 2**31, "transfer.first_seed", t.first_seed, "an integer in [0, 2^31)")
        models = list(t.car_following)
        check(len(models) >= 1, "transfer.car_following", models, "a list of SUMO car-following models, e.g. "
              "[IDM,Krauss]")
        for m in models:
            check(m in SUMO_MODELS, "transfer.car_following", models, "SUMO car-following models",
                  suggest(str(m), sorted(set(SUMO_MODELS))))
        check(t.jobs is None or int(t.jobs) >= 1, "transfer.jobs", t.jobs, "an integer >= 1 or null")
        check(t.timeout_s is None or float(t.timeout_s) > 0, "transfer.timeout_s", t.timeout_s, "seconds > 0 or null")
        check(str(t.demand) in DEMAND_MODES, "transfer.demand", t.demand, " or ".join(DEMAND_MODES),
              suggest(str(t.demand), DEMAND_MODES))
    except ConfigError as e:
        raise TransferError(str(e)) from None
    return t


def transfer(run, overrides: list[str] | None = None) -> tuple[dict, list[Path]]:
    """Check everything, replay the plan in SUMO, write ``RUN/transfer.json`` and ``RUN/figures/transfer.png``."""
    from twins.core.errors import ConfigError
    from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

    t = settings(list(overrides or []))
    run = Path(run).resolve()
    plan = read_plan(run)
    try:
        find_sumo("sumo")
    except SumoNotFoundError as e:
        raise TransferError(str(e)) from None
    cfg = plan["cfg"]
    try:
        with warnings.catch_warnings(record=True) as caught:  # import notes: shown only once the input is good
            warnings.simplefilter("always")
            _, twin = plan_twin(cfg, plan["policy"])
            signal_plan(cfg, plan["policy"], twin=twin)  # refuses a plan that is not fixed-time before SUMO runs
        inputs = sumo_inputs(cfg.scenario)
        missing = [f for f in inputs["route_files"] + [inputs["sumocfg"] or inputs["net"]] if f and
                   not Path(f).is_file()]
        if missing:
            raise TransferError(f"the scenario's SUMO file {missing[0]} (from {run / 'config.yaml'}) does not exist")
        for w in caught:
            print(f"twins: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
        reps = plan.get("replications")
        if (reps and len(reps) > int(t.seeds) and plan["source"] == "run" and (run / "worlds.parquet").is_file()
                and demand_mode(str(t.demand), twin) == "twin"):
            # SUMO replays the first seeds' replications of the run: the prediction on the same ones
            import pandas as pd

            reps = reps[:int(t.seeds)]
            w = pd.read_parquet(run / "worlds.parquet")
            arm = next((int(a) for a in sorted(w["arm"].unique()) if int(a) >= 1), 1)
            plan["predicted"] = predicted_on(w, reps, arm=arm, source="worlds.parquet")
        rec = replay(cfg, plan["policy"], plan["predicted"],
                     seeds=range(int(t.first_seed), int(t.first_seed) + int(t.seeds)), models=list(t.car_following),
                     jobs=t.jobs, timeout=t.timeout_s, progress=bool(t.progress), desc=f"SUMO ({run.name})",
                     twin=twin, replications=reps, demand=str(t.demand))
    except NoSignalPlan as e:
        raise TransferError(f"{e}: there is no signal plan to replay in SUMO") from None
    except ConfigError as e:
        raise TransferError(str(e)) from None
    record = {"run": str(run), "source": plan["source"], "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "label": plan["label"], **rec,
              "settings": {k: (list(v) if k == "car_following" else v) for k, v in t.items()}}
    return record, write(record, run / "transfer.json", run / "figures" / "transfer.png")


def summary(record: dict) -> str:
    """The console lines: per metric, predicted and realized per model, and the ratio."""
    def f(x, sign=True):
        return "n/a" if x is None else (f"{x:+.4g}" if sign else f"{x:.3g}")

    models = record["sumo"]["car_following"]
    drawn = (record.get("demand") or {}).get("replications") or []
    on = (f"; on the twin's replications {drawn[0]['replication']}..{drawn[-1]['replication']}" if drawn
          else "; on the route files as written")
    lines = [f"transfer of {record['label']} to SUMO ({record['sumo']['version']}; seeds "
             f"{record['sumo']['seeds'][0]}..{record['sumo']['seeds'][-1]}{on}; {', '.join(models)}):"]
    if (record.get("demand") or {}).get("note"):
        lines.append(f"  note: {record['demand']['note']}")
    for m, d in record["metrics"].items():
        p = d.get("predicted") or {}
        lines.append(f"  {m:<20} twin {f(p.get('effect'))} [{f(p.get('ci_low'))}, {f(p.get('ci_high'))}]")
        for cf in models:
            r = d["realized"][cf]
            lines.append(f"  {'':<20} SUMO {cf:<7} {f(r.get('effect'))} [{f(r.get('ci_low'))}, "
                         f"{f(r.get('ci_high'))}]  ratio {f(d['ratio'].get(cf), False)}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python -m twins transfer RUN [transfer.KEY=VALUE ...]``: 0 done, 2 bad input, 1 SUMO failed."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    run, rest = argv[0], argv[1:]
    if run.startswith("transfer.") or "=" in run:
        return _error(f"the first argument is the run folder, not {run!r}. Usage: python -m twins transfer RUN "
                      "[transfer.KEY=VALUE ...]")
    try:
        record, written = transfer(run, rest)
    except TransferError as e:
        return _error(str(e))
    except KeyboardInterrupt:
        return _error("interrupted: nothing written", 130)
    except Exception as e:  # noqa: BLE001  (SUMO or the twin's import failed: one line, nothing written)
        msg = str(e).splitlines()[0] if str(e) else ""
        return _error(f"transfer failed ({type(e).__name__}: {msg}); nothing written", 1)
    print(summary(record))
    for p in written:
        print(f"wrote {p}")
    return 0


def _error(msg: str, code: int = 2) -> int:
    print(f"twins: error: {' '.join(str(msg).split())}", file=sys.stderr)
    return code
