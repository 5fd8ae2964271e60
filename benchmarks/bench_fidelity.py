"""Fidelity against SUMO (issue 17): the RESCO scenarios in the twin and in SUMO, IDM and Krauss, several seeds.

    PYTHONPATH=. python benchmarks/bench_fidelity.py                       # 6 scenarios x IDM, Krauss x 3 seeds
    PYTHONPATH=. python benchmarks/bench_fidelity.py --scenarios cologne1 --seeds 2 --horizon 600   # a quick look
    PYTHONPATH=. python benchmarks/bench_fidelity.py --resco DIR --models IDM --seeds 0,1,2 --out DIR
    PYTHONPATH=. python benchmarks/bench_fidelity.py --scenarios ingolstadt1 --retime cycle_s=32   # a retimed plan

Per scenario and car-following model it prints the twin's and SUMO's mean travel
time, mean delay and throughput, the twin/SUMO ratio with a pass/fail mark against
issue 17's targets, and SUMO's own seed-to-seed spread (standard deviation and
min–max over the seeds), which is the yardstick for how much of a gap is noise.

**SUMO** (the reference): ``sumo -c NAME.sumocfg --default.carfollowmodel MODEL
--seed S --tripinfo-output ...`` through :func:`twins.traffic.sumo_bridge.run_sumo`,
one run per seed, with the signal programs of the ``.net.xml`` as they are
(``--sumo-plan twin`` runs the twin's import of them instead, as ``bench_sumo.py``
does). ``--default.carfollowmodel`` sets the model of every vType that does not
name one, which is every vType of the six RESCO route files; Krauss is SUMO's
default. On these files (fixed vehicle lists) ``--seed`` varies the drivers'
speed factors (``speedDev``) and, for Krauss, the driver imperfection ``sigma``;
departures are the same in every run.

**The twin**: the path ``python -m twins run scenario=sumo scenario.sumocfg=...``
takes (the Hydra config composed with those overrides, the twin built by
``scenarios.build_twin``), with ``scenario.demand_variation=none``, so the twin
runs the file's departures as SUMO does (the ``scenario=sumo`` default re-draws
them), and ``scenario.car_following=IDM|Krauss``. One batched run per scenario and
model with one world per seed (world i is replication ``seeds[i]``: the twin's keyed
noise, not SUMO's random stream, so the seeds pair up by label only).

Metrics (the same definitions in both, see ``twins/traffic/sumo_bridge.py``):
mean travel time = mean tripinfo ``duration`` (arrival − actual departure) of the
vehicles that arrived by the end; mean delay = mean ``timeLoss`` of those;
throughput = vehicles that arrived by the end. ``--horizon S`` ends both runs S
seconds after the scenario's begin (vehicles still on the road are left out of
the means and the throughput in both).

Targets (issue 17): IDM — travel time and delay within ±10 %, throughput within
±3 %; Krauss — travel time and delay within ±15 % (throughput: ±3 %, as for IDM;
the issue gives one Krauss figure). A mark reads ``ok`` or ``FAIL``.

``--retime KEY=VALUE[,KEY=VALUE]``: both run a retimed plan instead of the file's programs, a
``signal_timing`` policy (e.g. ``cycle_s=32``, ``cycle_scale=0.5``, ``offset_s=10``): the twin applies
it as a run of ``intervention=signal_timing`` does, SUMO runs the same plan written as ``tlLogic``
(``interventions.transfer.signal_plan``, the path of ``python -m twins export --format sumo`` and of
``transfer``). A plan the twin rates well must also be one it simulates like SUMO; this is the check
of that (issue 18: the twin was too optimistic at short cycles).

``--sumo-option KEY=VALUE`` (repeatable): an option for every SUMO run, e.g. ``--sumo-option default.departspeed=0
--set scenario.default_depart_speed=0``: both simulators insert a route file's vehicles at 0 m/s instead of SUMO's
default, the lane's mean speed (the twin's too).

Diagnostics: ``--lanes`` compares time loss lane by lane (``lanes.csv``), ``--origins`` the trips' delay per
origin edge, the same vehicles paired by planned departure (``origins.csv``); each prints the entries that differ
most per scenario and model.

Results: ``--out DIR`` (default ``outputs/bench_fidelity/DATE_TIME`` under the
repository, git-ignored) gets ``runs.csv`` (one row per simulator, scenario,
model and seed), ``summary.csv`` (one row per scenario and model), ``table.md``
(the Markdown table for ``benchmarks/README.md``) and ``fidelity.json`` (all of
it with the machine, the command line and the commit), rewritten after every
scenario so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_sumo_common.py
from _sumo_common import (DEFAULT_RESCO, RESCO, ROOT, cpu_name, load_avg, load_resco,  # noqa: E402
                          resco_cfg, sumo_version)

from twins.core.errors import ConfigError  # noqa: E402
from twins.core.worlds import WorldBatch  # noqa: E402
from twins.traffic import sumo  # noqa: E402
from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo, run_sumo  # noqa: E402

MODELS = ("IDM", "Krauss")
METRICS = (("mean_travel_time_s", "travel time s"), ("mean_delay_s", "delay s"), ("throughput_veh", "throughput"))
# relative tolerance of twin/SUMO - 1 per model and metric (issue 17)
TARGETS = {"IDM": {"mean_travel_time_s": 0.10, "mean_delay_s": 0.10, "throughput_veh": 0.03},
           "Krauss": {"mean_travel_time_s": 0.15, "mean_delay_s": 0.15, "throughput_veh": 0.03}}
EXTRA = ("vehicles_inserted", "teleports", "vehicles_waiting")  # reported in the files, not in the table


# ------------------------------------------------------------------------------------------------
# SUMO
def sumo_runs(cfg: Path, model: str, seeds: list[int], end: float, plan, progress, lanes: bool = False,
              origins: bool = False, options: list[str] = ()) -> list[dict]:
    """One SUMO run per seed; with ``lanes`` each row also carries ``_lanes`` (lane id -> time loss s), with
    ``origins`` ``_trips`` (a frame of every trip: planned departure, origin edge, time loss, arrived). ``options``:
    more SUMO command-line arguments (:func:`parse_sumo_options`)."""
    out = []
    for s in seeds:
        t0 = time.perf_counter()
        r = run_sumo(cfg, plan, car_follow_model=model, seed=s, end=end, lane_data=lanes, trip_data=origins,
                     extra_args=options)
        row = {k: r[k] for k in ("mean_travel_time_s", "mean_delay_s", "throughput_veh", "vehicles_inserted",
                                 "teleports", "wall_time_s")}
        row["vehicles_waiting"] = r["vehicles_waiting"]
        row["seed"] = s
        if lanes:
            row["_lanes"] = {lid: d["time_loss_s"] for lid, d in r["lanes"].items()}
        if origins:
            row["_trips"] = pd.DataFrame(r["trips"])[["depart_s", "origin", "time_loss_s", "arrived"]]
        out.append(row)
        progress(f"SUMO seed {s}", time.perf_counter() - t0, row,
                 f", {r['teleports']} teleports" if r["teleports"] else "")
    return out


# ------------------------------------------------------------------------------------------------
# the twin
def compose(overrides: list[str]):
    from hydra import compose as _compose, initialize_config_dir

    from twins.cli import CONF_DIR  # registers the structured configs

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return _compose(config_name="config", overrides=["output.figures=false", "progress=false", *overrides])


def twin_runs(base: list[str], model: str, seeds: list[int], progress, retime: dict | None = None,
              lanes: bool = False, origins: bool = False) -> list[dict]:
    """One batched twin run, one world per seed; with ``lanes`` each row also carries ``_lanes`` (lane id -> time
    loss s, :meth:`TrafficTwin.lane_table`), with ``origins`` ``_trips`` (as :func:`sumo_runs`'s)."""
    import scenarios

    cfg = compose([*base, f"scenario.car_following={model}"] + (["intervention=signal_timing"] if retime else []))
    worlds = WorldBatch(0, torch.tensor(seeds, dtype=torch.int64), torch.zeros(len(seeds), dtype=torch.int64))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        tw = scenarios.build_twin(cfg, worlds, "cpu", torch.float32)
        if retime:  # every world runs the retimed plan, as the treated arm of a run would
            import interventions

            interventions.get(cfg.intervention).apply(tw, [dict(retime)] * len(seeds))
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    while tw.step_index < tw.n_steps:
        tw.step()
    loop = time.perf_counter() - t1
    w = tw.results().worlds
    w = (w.sort_values("world") if "world" in w else w).reset_index(drop=True)  # row i: world i = seeds[i]
    out = []
    for i, s in enumerate(seeds):
        row = {k: float(w.loc[i, k]) for k in ("mean_travel_time_s", "mean_delay_s", "throughput_veh",
                                               "vehicles_inserted")}
        row["vehicles_waiting"] = float(w.loc[i, "vehicles_waiting_to_insert_end"])
        row["teleports"] = int(w.loc[i, "teleports"])  # kernels rule 12, as SUMO's
        row["wall_time_s"] = (build + loop) / len(seeds)  # its share of the batched run
        row["seed"] = s
        out.append(row)
    if lanes:
        lt = tw.lane_table()
        for i, row in enumerate(out):
            li = lt[lt["world"] == i]
            row["_lanes"] = dict(zip(li["lane"], li["time_loss_s"].astype(float)))
    if origins:
        for i, row in enumerate(out):
            row["_trips"] = twin_trips(tw, i)
    mean = {k: float(np.mean([r[k] for r in out])) for k in ("mean_travel_time_s", "mean_delay_s", "throughput_veh")}
    progress(f"twin seeds {','.join(map(str, seeds))} ({len(seeds)} worlds, kernel {getattr(tw, 'kernel', '?')})",
             build + loop, mean, f" (build {build:.1f} s, stepping {loop:.1f} s; means over the worlds)")
    return out


# ------------------------------------------------------------------------------------------------
# summary and table
def stats(rows: list[dict], key: str) -> dict:
    v = np.array([r[key] for r in rows], dtype=float)
    if not len(v) or np.isnan(v).all():
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": int(len(v))}
    return {"mean": float(np.nanmean(v)), "std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else math.nan,
            "min": float(np.nanmin(v)), "max": float(np.nanmax(v)), "n": int(len(v))}


def summarize(scenario: str, model: str, twin: list[dict] | None, sumo_rows: list[dict], twin_note: str) -> dict:
    s = {"scenario": scenario, "model": model, "twin_note": twin_note}
    for key, _ in METRICS + tuple((k, k) for k in EXTRA):
        ss = stats(sumo_rows, key)
        ts = stats(twin, key) if twin else None
        for k, v in ss.items():
            s[f"sumo_{key}_{k}"] = v
        for k in ("mean", "std", "min", "max"):
            s[f"twin_{key}_{k}"] = ts[k] if ts else math.nan
        if key in TARGETS[model]:
            ratio = ts["mean"] / ss["mean"] if ts and ss["mean"] else math.nan
            s[f"{key}_ratio"] = ratio
            s[f"{key}_pass"] = (None if math.isnan(ratio) else bool(abs(ratio - 1.0) <= TARGETS[model][key] + 1e-12))
    return s


def _f(x: float, nd: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mark(p) -> str:
    """A pass mark: True, False, or None/NaN (no ratio; a summary.csv read back gives NaN)."""
    return "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else ("ok" if bool(p) else "FAIL")


def console_table(summary: list[dict]) -> str:
    lines = []
    head = f"{'scenario':12s} {'model':6s}"
    sub = f"{'':12s} {'':6s}"
    for key, label in METRICS:
        head += f" | {label:^39s}"
        sub += f" | {'twin':>7s} {'SUMO mean±sd (min–max)':>22s} {'ratio':>5s} {'':>2s}"
    lines += [head, sub, "-" * len(sub)]
    for s in summary:
        line = f"{s['scenario']:12s} {s['model']:6s}"
        for key, _ in METRICS:
            nd = 0 if key == "throughput_veh" else 1
            sumo_txt = (f"{_f(s[f'sumo_{key}_mean'], nd)}±{_f(s[f'sumo_{key}_std'], nd)} "
                        f"({_f(s[f'sumo_{key}_min'], nd)}–{_f(s[f'sumo_{key}_max'], nd)})")
            line += (f" | {_f(s[f'twin_{key}_mean'], nd):>7s} {sumo_txt:>22s} {_f(s[f'{key}_ratio'], 2):>5s} "
                     f"{_mark(s[f'{key}_pass']):>4s}")
        lines.append(line)
    return "\n".join(lines)


def markdown_table(summary: list[dict]) -> str:
    cols = ["scenario", "model"]
    for _, label in METRICS:
        cols += [f"{label}: twin", f"{label}: SUMO mean ± sd (min–max)", "twin/SUMO"]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join(["---"] * 2 + ["---:"] * (len(cols) - 2)) + " |"]
    for s in summary:
        cells = [s["scenario"], s["model"]]
        for key, _ in METRICS:
            nd = 0 if key == "throughput_veh" else 1
            cells += [_f(s[f"twin_{key}_mean"], nd),
                      f"{_f(s[f'sumo_{key}_mean'], nd)} ± {_f(s[f'sumo_{key}_std'], nd)} "
                      f"({_f(s[f'sumo_{key}_min'], nd)}–{_f(s[f'sumo_{key}_max'], nd)})",
                      (f"{_f(s[f'{key}_ratio'], 2)} {_mark(s[f'{key}_pass'])}" if s[f"{key}_pass"] is not None
                       else "n/a")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(out: Path, meta: dict, runs: list[dict], summary: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(runs).to_csv(out / "runs.csv", index=False)
    pd.DataFrame(summary).to_csv(out / "summary.csv", index=False)
    (out / "table.md").write_text(markdown_table(summary) + "\n")
    clean = lambda x: None if isinstance(x, float) and math.isnan(x) else x  # noqa: E731
    (out / "fidelity.json").write_text(json.dumps(
        {"meta": meta, "runs": [{k: clean(v) for k, v in r.items()} for r in runs],
         "summary": [{k: clean(v) for k, v in s.items()} for s in summary]}, indent=1))


# ------------------------------------------------------------------------------------------------
def parse_seeds(text: str) -> list[int]:
    text = text.strip()
    if "," not in text and text.isdigit():
        return list(range(int(text)))
    seeds = [int(x) for x in text.split(",") if x.strip()]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a count (3 = seeds 0,1,2) or distinct seeds (0,4,7)")
    return seeds


def parse_sumo_options(pairs: list[str]) -> list[str]:
    """``--sumo-option KEY=VALUE`` (repeatable) as SUMO's command line: ``["--KEY", "VALUE", ...]``."""
    args = []
    for p in pairs:
        key, sep, value = p.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key or not value.strip():
            raise ValueError(f"--sumo-option {p!r}: expected KEY=VALUE, a SUMO option without its dashes, "
                             f"e.g. default.departspeed=0")
        args += [f"--{key}", value.strip()]
    return args


def parse_retime(text: str) -> dict:
    """``cycle_s=32,offset_s=5`` -> ``{"cycle_s": 32.0, "offset_s": 5.0}`` (a signal_timing policy)."""
    out = {}
    for part in (x.strip() for x in text.split(",") if x.strip()):
        k, sep, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: expected KEY=NUMBER, e.g. cycle_s=32") from None
        if not sep or not k.strip():
            raise argparse.ArgumentTypeError(f"{part!r}: expected KEY=NUMBER, e.g. cycle_s=32")
    return out


def retimed_plan(base: list[str], retime: dict) -> dict:
    """The retimed programs as SUMO runs them: the export path (``interventions.transfer.signal_plan``)."""
    from interventions.transfer import signal_plan

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        progs = signal_plan(compose([*base, "intervention=signal_timing"]), dict(retime))
    return {p.id: p for p in progs}


def compare(before: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, model) present in both summaries: each metric's twin/SUMO ratio and pass mark, before and now."""
    cols = ["scenario", "model"] + [f"{k}_{x}" for k, _ in METRICS for x in ("ratio", "pass")]
    b, n = (df.reindex(columns=cols) for df in (before, now))
    return b.merge(n, on=["scenario", "model"], suffixes=("_before", "_now"))


def compare_table(d: pd.DataFrame) -> str:
    """The ratios before -> now, the marks that changed flagged, and the failing marks counted."""
    lines = [f"{'scenario':12s} {'model':6s}" + "".join(f" | {label:^25s}" for _, label in METRICS)]
    fails = {"before": 0, "now": 0}
    for _, r in d.iterrows():
        line = f"{r['scenario']:12s} {r['model']:6s}"
        for key, _ in METRICS:
            mb, mn = _mark(r[f"{key}_pass_before"]), _mark(r[f"{key}_pass_now"])
            fails["before"] += mb == "FAIL"
            fails["now"] += mn == "FAIL"
            flag = "" if mb == mn else " *"
            before, now = _f(r[f"{key}_ratio_before"], 2), _f(r[f"{key}_ratio_now"], 2)
            line += f" | {before:>5s} {mb:>4s} -> {now:>5s} {mn:>4s}{flag:2s}"
        lines.append(line)
    lines.append(f"failing marks: {fails['before']} before, {fails['now']} now (* : a mark that changed)")
    return "\n".join(lines)


def twin_trips(tw, world: int) -> pd.DataFrame:
    """Every loaded vehicle of one world of the twin as :func:`sumo_runs`'s ``_trips``: its planned departure, the
    first edge of the route it drove, its time loss and whether it arrived."""
    from twins.traffic import kernels

    route = tw.drivers.route[world].cpu().numpy()
    depart = tw.state.depart[world].cpu().numpy()
    keep = (route >= 0) & np.isfinite(depart)
    first = {r: tw.route_edge_ids(int(r))[0] for r in np.unique(route[keep])}
    return pd.DataFrame({"depart_s": depart[keep], "origin": [first[r] for r in route[keep]],
                         "time_loss_s": tw.state.time_loss[world].cpu().numpy()[keep].astype(float),
                         "arrived": tw.state.status[world].cpu().numpy()[keep] == kernels.ARRIVED})


def origin_compare(name: str, model: str, t_rows: list[dict], s_rows: list[dict]) -> pd.DataFrame:
    """Per origin edge: the trips that arrived in both simulators, paired by planned departure and origin (the same
    vehicle list in both: ``scenario.demand_variation=none``), seed by seed (world i with SUMO's seed i): their count,
    mean time loss in each, and the twin's excess in all (s), means over the seeds, largest excess first."""
    parts = []
    for t, s_ in zip(t_rows, s_rows):
        key = lambda d: d.assign(depart_s=d["depart_s"].round(2))  # noqa: E731
        m = key(t["_trips"]).merge(key(s_["_trips"]), on=["depart_s", "origin"], suffixes=("_twin", "_sumo"))
        m = m[m["arrived_twin"] & m["arrived_sumo"]]
        g = m.groupby("origin").agg(trips=("depart_s", "size"), twin_delay_s=("time_loss_s_twin", "mean"),
                                    sumo_delay_s=("time_loss_s_sumo", "mean"))
        g["twin_excess_s"] = (g["twin_delay_s"] - g["sumo_delay_s"]) * g["trips"]
        parts.append(g)
    if not parts:
        return pd.DataFrame(columns=["scenario", "model", "origin", "trips", "twin_delay_s", "sumo_delay_s",
                                     "twin_excess_s"])
    d = pd.concat(parts).groupby(level=0).mean()
    d = d.reindex(d["twin_excess_s"].abs().sort_values(ascending=False).index)
    return d.rename_axis("origin").reset_index().assign(scenario=name, model=model)[
        ["scenario", "model", "origin", "trips", "twin_delay_s", "sumo_delay_s", "twin_excess_s"]]


def print_origins(d: pd.DataFrame, n: int = 5) -> None:
    top = "; ".join(f"{r.origin} ({r.trips:.0f} trips) {r.twin_delay_s:.1f} vs {r.sumo_delay_s:.1f} s"
                    for r in d.head(n).itertuples())
    print(f"   origins (mean delay of the trips that arrived in both; twin's excess in all "
          f"{d['twin_excess_s'].sum():,.0f} s): the {n} that differ most: {top}", flush=True)


def public(row: dict) -> dict:
    """A run's row without its private entries (``_lanes``) for runs.csv."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def lane_compare(name: str, model: str, t_rows: list[dict], s_rows: list[dict]) -> pd.DataFrame:
    """Per lane: the twin's and SUMO's time loss (s, mean over the seeds) and their difference, largest first."""
    def mean(rows):
        return pd.DataFrame([r["_lanes"] for r in rows]).mean() if rows else pd.Series(dtype=float)

    d = pd.DataFrame({"twin_time_loss_s": mean(t_rows), "sumo_time_loss_s": mean(s_rows)}).fillna(0.0)
    d["twin_minus_sumo_s"] = d["twin_time_loss_s"] - d["sumo_time_loss_s"]
    d = d.reindex(d["twin_minus_sumo_s"].abs().sort_values(ascending=False).index)
    return d.rename_axis("lane").reset_index().assign(scenario=name, model=model)[
        ["scenario", "model", "lane", "twin_time_loss_s", "sumo_time_loss_s", "twin_minus_sumo_s"]]


def print_lanes(d: pd.DataFrame, n: int = 5) -> None:
    tot_t, tot_s = d["twin_time_loss_s"].sum(), d["sumo_time_loss_s"].sum()
    top = "; ".join(f"{r.lane} {r.twin_time_loss_s:,.0f} vs {r.sumo_time_loss_s:,.0f}" for r in d.head(n).itertuples())
    print(f"   lanes (time loss, s; all lanes: twin {tot_t:,.0f}, SUMO {tot_s:,.0f}); the {n} that differ most: {top}",
          flush=True)


def git_commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return r.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except OSError:
        return "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resco", type=Path, default=DEFAULT_RESCO,
                    help=f"folder with the RESCO scenarios (NAME/NAME.sumocfg); default {DEFAULT_RESCO}")
    ap.add_argument("--scenarios", default=",".join(RESCO), help="comma-separated scenario names (default: all six)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: IDM, Krauss")
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("3"),
                    help="a count (3 = seeds 0,1,2) or a comma-separated list of seeds")
    ap.add_argument("--horizon", type=float, default=None,
                    help="simulate only this many seconds after each scenario's begin (default: to its end)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the twin (SUMO uses one)")
    ap.add_argument("--compile", default="null", choices=["null", "true", "false"],
                    help="the twin's compute.compile (null: the compiled CPU step where a C++ compiler is found)")
    ap.add_argument("--sumo-plan", default="file", choices=["file", "twin"],
                    help="SUMO's signal programs: the .net.xml's (file) or the twin's import of them (twin)")
    ap.add_argument("--retime", type=parse_retime, default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                    help="both simulators run this signal_timing plan instead of the file's programs, e.g. cycle_s=32")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="an extra override of the twin's config, e.g. --set scenario.lane_changing=false (repeatable)")
    ap.add_argument("--sumo-option", dest="sumo_options", action="append", default=[], metavar="KEY=VALUE",
                    help="a SUMO option for every SUMO run, without its dashes, e.g. --sumo-option "
                         "default.departspeed=0 (repeatable)")
    ap.add_argument("--lanes", action="store_true",
                    help="also compare time loss lane by lane (SUMO's laneData against the twin's lane totals): "
                         "lanes.csv, and the lanes that differ most printed per scenario and model")
    ap.add_argument("--origins", action="store_true",
                    help="also compare the trips' delay per origin edge (the same vehicles paired by planned "
                         "departure): origins.csv, and the origins that differ most printed per scenario and model")
    ap.add_argument("--compare", type=Path, default=None, metavar="DIR",
                    help="an earlier run's --out folder: print each mark's ratio before -> now and write compare.csv "
                         "(run the earlier commit beside this one, e.g. from a git worktree)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for runs.csv, summary.csv, table.md, fidelity.json "
                         "(default outputs/bench_fidelity/DATE_TIME)")
    a = ap.parse_args()
    if a.compare is not None and not (a.compare / "summary.csv").is_file():
        ap.error(f"--compare: {a.compare} has no summary.csv; give the --out folder of an earlier bench_fidelity run")

    names = [n.strip() for n in a.scenarios.split(",") if n.strip()]
    models = []
    for m in (x.strip() for x in a.models.split(",") if x.strip()):
        canon = {x.lower(): x for x in MODELS}.get(m.lower())
        if canon is None:
            ap.error(f"--models: {m!r} is not one of {', '.join(MODELS)}")
        models.append(canon)
    try:
        sumo_options = parse_sumo_options(a.sumo_options)
    except ValueError as e:
        ap.error(str(e))
    if a.horizon is not None and not (0 < a.horizon < math.inf):
        ap.error(f"--horizon: {a.horizon} is not a positive number of seconds")
    if not a.resco.is_dir():
        ap.error(f"the RESCO scenarios are not at {a.resco}: pass --resco DIR, the folder that holds "
                 f"cologne1/cologne1.sumocfg etc. (default: ../shared/data/resco next to the repository)")
    missing = [str(resco_cfg(a.resco, n)) for n in names if not resco_cfg(a.resco, n).is_file()]
    if missing:
        ap.error(f"not found: {', '.join(missing)} (check --resco and --scenarios; the six are {', '.join(RESCO)})")
    try:
        exe = find_sumo("sumo")
    except SumoNotFoundError as e:
        sys.exit(f"bench_fidelity: {e}")
    torch.set_num_threads(a.threads)

    started = dt.datetime.now(dt.timezone.utc)
    out = a.out or ROOT / "outputs" / "bench_fidelity" / started.strftime("%Y-%m-%d_%H-%M-%S")
    meta = {"command": "python " + " ".join(shlex.quote(x) for x in sys.argv), "started_utc": started.isoformat(),
            "commit": git_commit(), "sumo": sumo_version(exe), "torch": torch.__version__, "threads": a.threads,
            "cpu": cpu_name(), "cores": os.cpu_count(), "load_average_start": load_avg(),
            "resco": str(a.resco), "scenarios": names, "models": models, "seeds": a.seeds, "horizon_s": a.horizon,
            "compile": a.compile, "sumo_plan": a.sumo_plan, "retime": a.retime, "sumo_options": sumo_options,
            "twin_overrides": a.overrides, "targets": TARGETS}
    print(f"{meta['sumo']}; torch {meta['torch']}, {a.threads} thread(s), compute.compile={a.compile}; "
          f"CPU {meta['cpu']}, {meta['cores']} cores; load average {meta['load_average_start']}; commit {meta['commit']}")
    if sumo_options or a.overrides:
        print(f"SUMO options: {' '.join(sumo_options) or 'none'}; twin overrides: {' '.join(a.overrides) or 'none'}")

    runs: list[dict] = []
    summary: list[dict] = []
    lane_rows: list[pd.DataFrame] = []
    origin_rows: list[pd.DataFrame] = []
    n_runs = len(names) * len(models) * (len(a.seeds) + 1)
    k = 0
    t_all = time.perf_counter()
    twin_notes = set()
    for name in names:
        cfg_path = resco_cfg(a.resco, name)
        opts, _ = sumo.read_sumocfg(cfg_path)
        begin, file_end = float(opts.get("begin", 0.0)), float(opts["end"]) if opts.get("end") else None
        end = file_end if a.horizon is None else begin + a.horizon
        if file_end is not None and end > file_end:
            end = file_end
        if end is None:
            sys.exit(f"bench_fidelity: {cfg_path} sets no end time: pass --horizon")
        base = ["scenario=sumo", f"scenario.sumocfg={cfg_path}", f"scenario.name={name}", f"scenario.end={end:g}",
                f"compute.compile={a.compile}", f"replications={len(a.seeds)}"]
        base.append("scenario.demand_variation=none")  # the file's departures, as SUMO runs them
        base += a.overrides
        plan = load_resco(cfg_path).network.programs if a.sumo_plan == "twin" else None
        if a.retime:
            try:
                plan = retimed_plan(base, a.retime)
            except ConfigError as e:
                sys.exit(f"bench_fidelity: --retime {a.retime} on {name}: {e}")
        print(f"\n== {name}: {begin:g}..{end:g} s ({end - begin:g} s) ==", flush=True)
        for model in models:
            def progress(what, secs, row, tail=""):
                nonlocal k
                k += 1
                print(f"[{k}/{n_runs}] {name} {model} {what}: {secs:.1f} s — travel time "
                      f"{row['mean_travel_time_s']:.1f} s, delay {row['mean_delay_s']:.1f} s, "
                      f"{row['throughput_veh']:,.0f} arrived{tail}; load {load_avg()}", flush=True)

            s_rows = sumo_runs(cfg_path, model, a.seeds, end, plan, progress, a.lanes, a.origins, sumo_options)
            runs += [{"sim": "sumo", "scenario": name, "model": model, "horizon_s": end - begin, **public(r)}
                     for r in s_rows]
            t_rows, note = None, ""
            try:
                t_rows = twin_runs(base, model, a.seeds, progress, a.retime, a.lanes, a.origins)
            except ConfigError as e:
                note = f"twin refused scenario.car_following={model}: {e}"
                print(f"[{k + 1}/{n_runs}] {name} {model} twin: n/a — {note}", flush=True)
                k += 1
            if a.lanes:
                lane_rows.append(lane_compare(name, model, t_rows or [], s_rows))
                print_lanes(lane_rows[-1])
            if a.origins:
                origin_rows.append(origin_compare(name, model, t_rows or [], s_rows))
                print_origins(origin_rows[-1])
            if t_rows:
                runs += [{"sim": "twin", "scenario": name, "model": model, "horizon_s": end - begin, **public(r)}
                         for r in t_rows]
            if note:
                twin_notes.add(note)
            summary.append(summarize(name, model, t_rows, s_rows, note))
        meta["wall_s"] = time.perf_counter() - t_all
        meta["load_average_end"] = load_avg()
        write(out, meta, runs, summary)
        if lane_rows:
            pd.concat(lane_rows, ignore_index=True).to_csv(out / "lanes.csv", index=False)
        if origin_rows:
            pd.concat(origin_rows, ignore_index=True).to_csv(out / "origins.csv", index=False)

    h = "to each scenario's end" if a.horizon is None else f"{a.horizon:g} s after each scenario's begin"
    programs = f"retimed {a.retime} in both" if a.retime else a.sumo_plan
    print(f"\n== twin vs SUMO, {len(a.seeds)} seed(s) ({','.join(map(str, a.seeds))}), {h}; SUMO programs: "
          f"{programs} ==")
    print(console_table(summary))
    print("targets: IDM travel time and delay ±10 %, throughput ±3 %; Krauss travel time and delay ±15 %, "
          "throughput ±3 %. sd and min–max: SUMO over its seeds.")
    for note in sorted(twin_notes):
        print(f"note: {note}")
    tele = [(s["scenario"], s["model"], s["sumo_teleports_mean"]) for s in summary if s["sumo_teleports_mean"]]
    if tele:
        print("SUMO teleports (mean per run): " + ", ".join(f"{n} {m} {t:.1f}" for n, m, t in tele))
    if a.compare is not None:
        d = compare(pd.read_csv(a.compare / "summary.csv"), pd.DataFrame(summary))
        d.to_csv(out / "compare.csv", index=False)
        print(f"\n== against {a.compare} ==")
        print(compare_table(d))
    print(f"total {time.perf_counter() - t_all:.0f} s; load average {load_avg()}; results in {out}")


if __name__ == "__main__":
    main()
