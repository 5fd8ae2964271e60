"""Evidence for the gates, gathered by running the twin — gates themselves never see a twin.

One call, :func:`gather`, runs (all on replications never used by the run, the search or its
confirmation: ids from ``ethics.evidence.replication_offset``):

1. the **held-out evidence run**: baseline and policy arms on the tier's held-out replications, with
   every table (trips, edges, groups); effects per metric and per group;
2. **reproducibility**: a second twin on a sample of those worlds (rerun) plus a *null* arm carrying
   the baseline's own parameter vector; both must match bit for bit;
3. **demand stress**: baseline and policy at ``stress_key`` × each stress factor (e.g. demand ±20 %);

and returns a plain dict, written as ``evidence/evidence.json`` next to the tables.

Every batch runs through the compute plan like the run itself (``twins/compute/``: chunks sized to the
device and capped by ``compute.max_worlds_per_chunk``, local or Ray, reassembled in world order, so the
evidence is bit-identical however it is chunked); their plans and compute/energy account are added to the
folder's ``manifest.json`` (``compute.ethics_evidence``, and ``accounting``, whose ``parts`` keep the run's
own account and the evidence's apart).
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

import scenarios
from twins.core.io import jsonable
from twins.core.stats import mean_ci

from .config import as_config, controls_for, impact_tier, objective_spec, sha256

log = logging.getLogger("twins")

def twin_kind(cfg) -> str:
    """The twin the run's scenario builds (``traffic``, ``molecular``, ...), from the scenario registry."""
    k = str(cfg.scenario.get("kind", ""))
    entry = scenarios.SCENARIOS.get(k)
    return entry.twin if entry is not None else scenarios.TWIN_OF_KIND.get(k, k)


def objective_of(cfg, e) -> tuple[str | None, str]:
    objs = (cfg.get("search") or {}).get("objectives") or []
    metric = e.credibility.metric or (str(objs[0]["metric"]) if objs else None)
    direction = e.credibility.direction or (str(objs[0].get("direction", "minimize")) if objs else "minimize")
    return metric, direction


# --- one counterfactual batch -------------------------------------------------------------------------
class Batches:
    """The evidence batches' compute: one meter over all of them, and each one's plan (for the manifest)."""

    def __init__(self, cfg):
        from twins.compute.accounting import RunMeter

        self.meter = RunMeter(float(cfg.compute.get("cpu_watts_per_core", 4.4)))
        self.plans: list[dict] = []


def run_arms(cfg, iv, arm_values: list[dict], first: int, n: int, desc: str, batches: Batches | None = None):
    """Run ``arm_values`` (arm 0 = baseline ``{}``) on replications ``first .. first+n-1`` through the compute
    plan: ``(counterfactual, result)`` (``twins.core.pipeline``, the pipeline ``run`` and ``search`` use). Its
    ``twin`` is never stepped: it holds one world per arm (the first replication of each, arm-major: world ``a``
    is arm ``a``), with that arm's parameters written in; it validates the arms and answers questions about the
    scenario (its network, signal plans, horizon)."""
    from interventions import counterfactual as cf
    from twins.core import pipeline

    arms = [cf.Arm(i, "baseline" if i == 0 else iv.describe(v), dict(v)) for i, v in enumerate(arm_values)]
    plan = pipeline.plan(cfg, iv, arms, cf.worlds_for(cfg.seed, n, arms, first=first),
                         probe=[a * n for a in range(len(arms))], meter=batches.meter if batches else None)
    if batches is not None:
        batches.plans.append({"batch": desc, "worlds": int(plan.worlds.size), "backend": plan.exe.backend,
                              **plan.exe.plan.describe()})
    result = plan.run(progress=cfg.get("progress", None), desc=desc)
    return plan, result


def add_to_manifest(outdir, batches: Batches) -> None:
    """Fold the evidence batches' plans and compute/energy account into ``outdir/manifest.json`` (written by
    the run or search before its review): ``compute.ethics_evidence`` lists the plans, ``accounting`` becomes
    the sum, with ``accounting.parts`` holding the task's own account and the evidence's."""
    import json

    from twins.compute.accounting import combine
    from twins.core import io

    path = Path(outdir) / "manifest.json"
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        log.warning("ethics: could not read %s (%s): the evidence runs' compute (%d batches) is not in its "
                    "account", path, e, len(batches.plans))
        return
    acc = man.get("accounting") or {}
    own_name = str(man.get("task", "run"))
    # once split into parts (an earlier review), the task's own account is its part (none if it had none), and
    # this review's evidence replaces the earlier one's; before that, the whole account is the task's own
    own = (acc["parts"].get(own_name) or {}) if isinstance(acc.get("parts"), dict) else acc
    evidence_acc = batches.meter.summary()
    if own:
        man["accounting"] = {**combine(own, evidence_acc), "parts": {own_name: own, "ethics_evidence": evidence_acc}}
    else:
        man["accounting"] = {**evidence_acc, "parts": {"ethics_evidence": evidence_acc}}
    man.setdefault("compute", {})["ethics_evidence"] = batches.plans
    io.write_json(path, man)


def levels(worlds: pd.DataFrame, metrics, arm: int) -> dict:
    df = worlds[worlds["arm"] == arm]
    return {m: jsonable(mean_ci(df[m].to_numpy(float))) for m in metrics if m in df}


# --- traffic safety evidence --------------------------------------------------------------------------
def entry_edges(twin) -> dict:
    """Flow id → the edge its vehicles enter on (the trip's approach to the network)."""
    flows = getattr(getattr(twin, "scenario", None), "demand", None)
    return {f.id: f.route[0] for f in flows.flows if f.route} if flows is not None else {}


def shared_departures(twin) -> str | None:
    """A note when every replication has the same departures (no flow draws its arrivals), else None."""
    d = getattr(getattr(twin, "scenario", None), "demand", None)
    if d is None or not d.flows or any(f.kind in ("poisson", "bernoulli") for f in d.flows):
        return None
    return ("the held-out replications share every departure (every flow has fixed or periodic departures, e.g. a "
            "SUMO file with scenario.demand_variation=none): they differ only in the drivers, so they test the "
            "policy against the drivers' variation, not the demand's")


def approach_p95(trips: pd.DataFrame, worlds: pd.DataFrame, entry: dict) -> list[dict]:
    """Per entry approach: the 95th percentile, over its vehicles, of delay including the wait to enter;
    per world, then its mean over replications with a 95% interval, policy (arm 1) against baseline (arm 0):
    ``p95_mean``/``ci_low``/``ci_high`` (the policy), ``baseline_p95_mean``/``baseline_ci_low``/``baseline_ci_high``
    and the paired change policy − baseline by replication, ``change``/``change_ci_low``/``change_ci_high``."""
    from twins.core.stats import paired_effect

    if trips is None or trips.empty:
        return []
    t = trips.assign(approach=trips["flow"].map(entry).fillna(trips["flow"]),
                     lost_s=trips["delay_s"].fillna(0.0) + trips["depart_delay_s"].fillna(0.0))
    p95 = t.groupby(["world", "approach"])["lost_s"].quantile(0.95).rename("p95").reset_index()
    cols = ["world", "arm"] + (["replication"] if "replication" in worlds else [])
    p95 = p95.merge(worlds[cols], on="world")
    rows = []
    for a, g in p95.groupby("approach"):
        pol = mean_ci(g.loc[g["arm"] == 1, "p95"].to_numpy(float))
        base = mean_ci(g.loc[g["arm"] == 0, "p95"].to_numpy(float))
        change = {}
        if "replication" in g:
            wide = g[g["arm"] <= 1].pivot_table(index="replication", columns="arm", values="p95", aggfunc="first")
            if 0 in wide and 1 in wide:
                e = paired_effect(wide[1].to_numpy(float), wide[0].to_numpy(float))
                change = {"change": e["effect"], "change_ci_low": e["ci_low"], "change_ci_high": e["ci_high"]}
        rows.append(jsonable({"approach": str(a), "p95_mean": pol["mean"], "ci_low": pol["ci_low"],
                              "ci_high": pol["ci_high"], "n": pol["n"],
                              "baseline_p95_mean": base["mean"] if base["n"] else math.nan,
                              "baseline_ci_low": base["ci_low"], "baseline_ci_high": base["ci_high"], **change}))
    return rows


def stuck_vehicles(trips: pd.DataFrame, worlds: pd.DataFrame, t_end: float, after_s: float) -> dict:
    """Per world: vehicles still in the network, or still waiting to enter, for more than ``after_s``, plus the
    vehicles the twin teleported out of a jam (``teleports``, kernels rule 12: each had stood at the front of its
    lane for SUMO's time-to-teleport, so it was stuck though it left)."""
    if trips is None:
        return None
    run = (trips["status"] == "running") & (t_end - trips["insert_s"] > after_s)
    wait = (trips["status"] == "waiting") & (t_end - trips["depart_s"] > after_s)
    per = (run | wait).groupby(trips["world"]).sum().reindex(worlds["world"], fill_value=0)
    tele = worlds["teleports"].to_numpy(int) if "teleports" in worlds else 0
    per = pd.DataFrame({"world": worlds["world"].to_numpy(), "arm": worlds["arm"].to_numpy(),
                        "stuck": per.to_numpy(int) + tele})
    pol, base = per[per["arm"] == 1], per[per["arm"] == 0]
    return {"max": int(pol["stuck"].max()) if len(pol) else 0,
            "baseline_max": int(base["stuck"].max()) if len(base) else 0,
            "per_world": [int(x) for x in pol["stuck"]], "after_s": after_s}


def pedestrian_green(twin, world: int, named: dict | None = None) -> dict:
    """The green phases of ``world``'s signal plan with whether each serves a pedestrian crossing (SUMO crossing
    links shown green; every green where the network does not say; phases ``named`` by
    ``ethics.safety.traffic.pedestrian_phases``), the shortest of those (``interventions.signal_timing.
    crossing_greens``), and an adaptive controller's minimum green if set."""
    from interventions.signal_timing import crossing_greens

    if not getattr(getattr(twin, "net_cpu", None), "program_ids", None):
        return {"min_green_s": None, "note": "no signalized junction: no pedestrian signal phases"}
    durs = getattr(twin, "signal_durations", None)
    out = crossing_greens(twin, durs[world] if durs is not None else None, named)
    for key, v in twin.worlds.params.items():
        if key.endswith("min_green_s") and out.get("min_green_s") is not None:  # an adaptive controller's floor
            g = float(v[world])
            out["adaptive_min_green_s"] = g
            if g < out["min_green_s"]:
                out.update(min_green_s=g, program="(adaptive)", phase="any", plan=key)
    return out


# --- reproducibility ----------------------------------------------------------------------------------
def _compare(a: pd.DataFrame, b: pd.DataFrame, metrics) -> tuple[bool, float, str | None]:
    """Bit-identical per-world metrics (NaN equals NaN)? and the largest difference."""
    worst, name, same = 0.0, None, True
    for m in metrics:
        x, y = a[m].to_numpy(float), b[m].to_numpy(float)
        eq = (x == y) | (np.isnan(x) & np.isnan(y))
        if not eq.all():
            same = False
            d = float(np.nanmax(np.abs(x - y))) if np.isfinite(x - y).any() else math.inf
            if d >= worst:
                worst, name = d, m
    return same, worst, name


def reproducibility(cfg, iv, policy: dict, base_twin, evidence_worlds: pd.DataFrame, metrics, first: int,
                    k: int, batches: Batches | None = None) -> dict:
    """Rerun ``k`` held-out replications of the baseline and policy arms in a new twin next to a null arm
    (the baseline's own parameter vector, as a treated arm): rerun ≡ first run, null ≡ baseline, bit for bit."""
    null = dict(iv.baseline(base_twin)) if hasattr(iv, "baseline") else {}
    _, res = run_arms(cfg, iv, [{}, policy, null], first, k, "ethics: reproducibility", batches)
    w = res.worlds.sort_values(["arm", "replication"]).reset_index(drop=True)
    ref = evidence_worlds[evidence_worlds["replication"] < first + k].sort_values(["arm", "replication"])
    ref = ref.reset_index(drop=True)
    same, diff, worst = _compare(w[w["arm"] <= 1].reset_index(drop=True), ref, metrics)
    b0 = w[w["arm"] == 0].reset_index(drop=True)
    n0 = w[w["arm"] == 2].reset_index(drop=True)
    nsame, ndiff, nworst = _compare(n0, b0, metrics)
    return {"null": {"identical": nsame, "max_abs_diff": ndiff, "worst_metric": nworst, "worlds": int(len(n0)),
                     "values": {k2: (v if not isinstance(v, float) else float(v)) for k2, v in null.items()}},
            "rerun": {"identical": same, "max_abs_diff": diff, "worst_metric": worst, "worlds": int(2 * k)}}


# --- demand stress ------------------------------------------------------------------------------------
def stress(cfg, iv, policy: dict, e, metric: str, nominal: float, first: int, batches: Batches | None = None) -> dict:
    v = e.validity
    key = v.stress_key
    if not key:
        return {"skipped": "no stress key configured (ethics.validity.stress_key)"}
    base = OmegaConf.select(cfg, key, default=None)
    if not isinstance(base, (int, float)) or isinstance(base, bool):
        return {"skipped": f"{key} is not a number in this scenario's config: demand stress cannot be applied "
                           "(set ethics.validity.stress_key to a numeric setting, or null)", "key": key}
    runs = []
    for f in v.stress_factors:
        c = copy.deepcopy(cfg)
        OmegaConf.update(c, key, float(base) * float(f), force_add=False)
        plan, res = run_arms(c, iv, [{}, policy], first, int(v.stress_replications), f"ethics: {key} ×{f:g}",
                             batches)
        arms = plan.arms
        from interventions import counterfactual as cf

        eff = cf.effects(res.worlds, res.metrics, arms)
        row = eff[(eff["scope"] == "network") & (eff["metric"] == metric)]
        r = row.iloc[0] if len(row) else None
        runs.append(jsonable({"factor": float(f), "value": float(base) * float(f),
                              "effect": float(r.effect) if r is not None else math.nan,
                              "ci_low": float(r.ci_low) if r is not None else math.nan,
                              "ci_high": float(r.ci_high) if r is not None else math.nan,
                              "n": int(r.n) if r is not None else 0}))
    return {"key": key, "base": float(base), "metric": metric, "nominal": nominal, "runs": runs,
            "replications": [first, int(v.stress_replications)]}


# --- external validity: the plan replayed in SUMO -------------------------------------------------------
def external_validity(cfg, outdir, policy: dict, e, tier: str, worlds: pd.DataFrame, metric: str | None,
                      direction: str) -> dict:
    """For a scenario read from SUMO files: the plan and the baseline in SUMO (:func:`interventions.transfer.replay`,
    ``controls.<tier>.transfer_seeds`` seeds under each ``validity.transfer_car_following`` model), against the
    twin's prediction from this held-out evidence run (``worlds``: baseline arm 0, policy arm 1). The full record
    goes to ``evidence/transfer.json`` and ``evidence/transfer.png`` (covered by the evidence digest). Other
    scenarios: ``applies: false`` with the reason."""
    kind = str(cfg.scenario.get("kind", ""))
    if kind != "sumo":
        what = "a traffic scenario generated by the twin" if twin_kind(cfg) == "traffic" else f"a {twin_kind(cfg)} twin"
        return {"applies": False, "why": f"scenario.kind={kind!r} is {what}, not one read from SUMO files: there is "
                                         "no SUMO model of it to replay the plan in"}
    c = e.controls[tier]
    out = {"applies": True, "metric": metric, "direction": direction, "min_ratio": c.transfer_min_ratio,
           "seeds": int(c.transfer_seeds), "car_following": [str(m) for m in e.validity.transfer_car_following]}
    if c.transfer_min_ratio is None:
        return {**out, "skipped": f"ethics.controls.{tier}.transfer_min_ratio is null: the gate is not applied"}
    try:
        from interventions import transfer as tr
        from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

        find_sumo("sumo")
    except (ImportError, SumoNotFoundError) as err:
        return {**out, "skipped": f"SUMO is not installed, so the plan could not be replayed in it ({err})"}
    try:
        _, twin = tr.plan_twin(cfg, policy)
        reps = sorted(int(r) for r in worlds["replication"].unique()) if "replication" in worlds else None
        metrics, source = list(dict.fromkeys([*tr.METRICS, metric])), "evidence/worlds.parquet (held-out evidence run)"
        if reps and tr.demand_mode("auto", twin) == "twin":  # SUMO replays the first seeds' replications
            reps = reps[:out["seeds"]]
            predicted = tr.predicted_on(worlds, reps, metrics, source=source)
        else:
            predicted = tr.predicted_from_worlds(worlds, metrics, source=source)
        log.info("ethics: external validity, the plan in SUMO: %d seeds x %s", out["seeds"], out["car_following"])
        rec = tr.replay(cfg, policy, predicted, seeds=range(out["seeds"]), models=out["car_following"],
                        progress=cfg.get("progress", None) is not False, desc="ethics: SUMO transfer",
                        extra_metrics=[metric], twin=twin, replications=reps)
        evdir = Path(outdir) / "evidence"
        rec = {"run": str(Path(outdir).resolve()), "source": "ethics review (held-out evidence)",
               "label": rec["plan"]["label"], **rec}
        tr.write(rec, evdir / "transfer.json", evdir / "transfer.png")
    except Exception as err:  # noqa: BLE001  (SUMO failed: the gate says so; the run itself is kept)
        log.warning("ethics: the SUMO transfer failed (%s: %s)", type(err).__name__, err)
        return {**out, "failed": f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"}
    m = rec["metrics"].get(metric)
    if m is None:
        return {**out, "skipped": f"the objective {metric!r} is not measured in SUMO (measured: "
                                  f"{', '.join(rec['metrics'])}): set ethics.credibility.metric to one of them",
                "file": "evidence/transfer.json"}
    return {**out, "predicted": m["predicted"], "realized": m["realized"], "ratio": m["ratio"],
            "demand": {k: rec["demand"][k] for k in ("mode", "route_files", "twin_demand_variation", "replications",
                                                     "sumo_varied") if k in rec["demand"]},
            "sumo": {k: rec["sumo"][k] for k in ("version", "seeds", "runs")},
            "others": {k: {"predicted": (v["predicted"] or {}).get("effect"),
                           "realized": {cf: r.get("effect") for cf, r in v["realized"].items()}, "ratio": v["ratio"]}
                       for k, v in rec["metrics"].items() if k != metric},
            "file": "evidence/transfer.json"}


# --- everything ---------------------------------------------------------------------------------------
def gather(cfg, outdir, policy: dict, *, source: str = "run", estimate: float | None = None,
           extra: dict | None = None) -> dict:
    """Run the evidence batches for ``policy`` (an intervention parameter vector) and return the evidence dict;
    tables go to ``outdir/evidence/``, the batches' compute to ``outdir/manifest.json`` (even when one of them
    fails). ``estimate``: the objective's effect the policy was chosen on."""
    batches = Batches(cfg)
    try:
        return _gather(cfg, outdir, policy, batches, source=source, estimate=estimate, extra=extra)
    finally:
        if batches.plans:
            try:  # the account is a record: failing to write it must not replace the evidence or its error
                add_to_manifest(outdir, batches)
            except Exception as e:
                log.warning("ethics: could not add the evidence runs' compute to %s/manifest.json (%s: %s)",
                            outdir, type(e).__name__, e)


def _gather(cfg, outdir, policy: dict, batches: Batches, *, source: str, estimate: float | None,
            extra: dict | None) -> dict:
    import interventions
    from interventions import counterfactual as cf

    e = as_config(cfg.get("ethics"))
    tier = impact_tier(e.impact)
    controls = controls_for(e, tier["tier"])
    R = int(e.evidence.replications or controls["held_out_replications"])
    first = int(e.evidence.replication_offset)
    metric, direction = objective_of(cfg, e)
    iv = interventions.get(cfg.get("intervention", None))
    evdir = Path(outdir) / "evidence"
    evdir.mkdir(parents=True, exist_ok=True)

    log.info("ethics: held-out evidence run, %d replications from id %d", R, first)
    plan, res = run_arms(cfg, iv, [{}, policy], first, R, "ethics: held-out evidence", batches)
    twin, arms = plan.twin, plan.arms
    policy = arms[1].values
    groups = plan.groups(res)
    eff = cf.effects(res.worlds, res.metrics, arms, groups)
    res.worlds.to_parquet(evdir / "worlds.parquet", index=False)
    eff.to_parquet(evdir / "effects.parquet", index=False)
    if groups is not None:
        groups.to_parquet(evdir / "groups.parquet", index=False)
    trips = res.tables.get("trips") if res.tables else None
    if trips is not None:
        trips.to_parquet(evdir / "trips.parquet", index=False)

    net = eff[eff["scope"] == "network"].set_index("metric")
    held = None
    if metric in net.index:
        row = net.loc[metric]
        held = jsonable({k: float(row[k]) for k in ("effect", "ci_low", "ci_high", "baseline_mean", "treated_mean")})
        held["n"] = int(row["n"])
    spec = objective_spec(cfg)
    prov = OmegaConf.to_container(e.objective, resolve=True)
    # issue 22: the observations the scenario's demand was calibrated to (python -m twins calibrate), if it was
    from scenarios.calibrated_demand import provenance_of
    if (calibrated := provenance_of(cfg)) is not None:
        prov["demand_calibration"] = calibrated
    ev = {
        "kind": twin_kind(cfg),
        "source": source,
        "scenario": str(cfg.scenario.get("name", cfg.scenario.get("kind"))),
        "intervention": iv.name,
        "policy": policy,
        "label": arms[1].label,
        "provenance": {**prov, "objective": spec, "objective_hash": sha256(spec)},
        "tier": tier,
        "controls": controls,
        "held_out": {"first": first, "replications": R,
                     **({"note": note} if (note := shared_departures(twin)) else {})},
        "credibility": {"metric": metric, "direction": direction, "estimate": estimate,
                        "estimate_source": source, "held_out": held},
        "network": [jsonable(r) for r in eff[eff["scope"] == "network"].drop(columns=["scope", "group_kind", "group"])
                    .to_dict("records")],
        "groups": [jsonable(r) for r in eff[eff["scope"] == "group"].to_dict("records")],
        "levels": levels(res.worlds, res.metrics, 1),
        "baseline_levels": levels(res.worlds, res.metrics, 0),
        **(extra or {}),
    }
    params = {p.name: p for p in iv.parameters(twin)}
    ev["params"] = {"values": policy, "bounds": {k: [params[k].low, params[k].high] for k in policy
                                                 if k in params and params[k].kind != "categorical"}}
    if ev["kind"] == "traffic":
        s = e.safety.traffic
        t_end = float(getattr(twin, "begin", 0.0)) + float(twin.n_steps * twin.dt)  # the horizon the worlds ran to
        pw = int(np.flatnonzero(twin.worlds.arm.cpu().numpy() == 1)[0])
        ev["traffic"] = {"approach_p95": approach_p95(trips, res.worlds, entry_edges(twin)),
                         "stuck": stuck_vehicles(trips, res.worlds, t_end, float(s.stuck_after_s)),
                         "pedestrian": pedestrian_green(twin, pw, dict(s.get("pedestrian_phases") or {}))}
    k = min(int(e.reproducibility.replications), R)
    ev["reproducibility"] = reproducibility(cfg, iv, policy, twin, res.worlds, res.metrics, first, k, batches)
    nominal = held["effect"] if held else math.nan
    ev["stress"] = stress(cfg, iv, policy, e, metric, nominal, first, batches) if metric else \
        {"skipped": "no objective"}
    ev["stress"].setdefault("replications", None)
    ev["transfer"] = external_validity(cfg, outdir, policy, e, tier["tier"], res.worlds, metric, direction)
    return ev
