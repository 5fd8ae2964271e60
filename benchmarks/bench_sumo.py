"""SUMO side by side (issue 3): the same scenarios in SUMO (IDM) and in the twin.

    PYTHONPATH=. python benchmarks/bench_sumo.py                 # everything (~6 min on 2 cores)
    PYTHONPATH=. python benchmarks/bench_sumo.py --quick         # shorter windows (~5 min: SUMO's grid warm-up dominates)
    PYTHONPATH=. python benchmarks/bench_sumo.py --resco DIR --only resco,grid,batch

(a) **RESCO**: the six real scenarios (``DIR/NAME/NAME.sumocfg``; default
    ``../shared/data/resco`` next to the repository). SUMO runs with
    ``--default.carfollowmodel IDM`` and the twin's static plan
    (``plan=scenario.network.programs``); the twin runs one world over the same
    begin..end, built as ``scenario=sumo`` composes it (routing at insertion, the .sumocfg's departSpeed and
    time-to-teleport, lane changing; ``--lane-changing false``: without), with IDM and the file's departures.
    Printed: mean travel time, mean delay (time loss), throughput of both and the differences, and vehicle
    updates/s of both and their ratio.
(b) **10×10 grid**: a signalized 10×10 grid made by SUMO's ``netgenerate`` (3
    lanes each way, 800 m blocks, 2400 veh/h per entry) and imported into the twin, loaded with the
    same demand (written with ``write_routes``) until at least 20,000 vehicles
    are in the network in each simulator; then the same number of steps is
    timed in both (SUMO in-process through ``libsumo``). Target: twin ≥ 20× SUMO.
(c) **Batched**: 64 worlds of one RESCO scenario in the twin, vehicle updates/s
    summed over the worlds, next to SUMO's single-run figure.

A vehicle update is one vehicle in the network advanced by one step (1 s in
both). SUMO's count is the sum of its tripinfo durations (unfinished trips
included); its time is the simulation loop (``performance/clockDuration``,
loading excluded). The twin's count is the same sum over its trips; its time
is the stepping loop (building the twin and the result tables excluded). SUMO
is single-threaded; the twin uses ``--threads`` torch threads (default 1, so
the comparison is per core).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scenarios.sumo import fringe_demand  # noqa: E402
from twins.core.worlds import WorldBatch  # noqa: E402
from twins.traffic import kernels, sumo  # noqa: E402
from twins.traffic.demand import Demand  # noqa: E402
from twins.traffic.model import TrafficScenario, TrafficTwin  # noqa: E402
from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo, run_sumo  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_sumo_common.py
from _sumo_common import (DEFAULT_RESCO, RESCO, cpu_name, load_avg, load_resco, pct, resco_cfg,  # noqa: E402
                          sumo_version)


# ------------------------------------------------------------------------------------------------
# the twin
COMPILE = None  # compute.compile for every twin built here (--compile)
LANE_CHANGING = True  # the RESCO twins' scenario.lane_changing (--lane-changing; scenario=sumo's default: on)
def resco_twin(cfg: Path, name: str, end: float, worlds: int = 1) -> TrafficTwin:
    """A RESCO scenario's twin as ``python -m twins run scenario=sumo scenario.sumocfg=...`` builds it (routing at
    insertion, the .sumocfg's departSpeed and time-to-teleport, lane changing unless ``--lane-changing false``),
    with IDM as SUMO runs here and the file's departures (``scenario.demand_variation=none``), as bench_fidelity."""
    import scenarios
    from bench_fidelity import compose

    c = compose(["scenario=sumo", f"scenario.sumocfg={cfg}", f"scenario.name={name}", f"scenario.end={end:g}",
                 "scenario.car_following=IDM", "scenario.demand_variation=none",
                 f"scenario.lane_changing={str(LANE_CHANGING).lower()}",
                 f"compute.compile={'null' if COMPILE is None else str(COMPILE).lower()}", f"replications={worlds}"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        return scenarios.build_twin(c, WorldBatch.replications(0, worlds), "cpu", torch.float32)


def twin_run(make) -> dict:
    """Run the twin ``make()`` builds; time only the stepping loop. Vehicle updates from the trips table."""
    t0 = time.perf_counter()
    tw = make()
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    while tw.step_index < tw.n_steps:
        tw.step()
    loop = time.perf_counter() - t0
    res = tw.results()
    trips = res.tables["trips"]
    ins = trips["insert_s"].to_numpy()
    arr = np.where(np.isnan(trips["arrive_s"].to_numpy()), tw.time_s, trips["arrive_s"].to_numpy())
    steps = float(np.nansum(arr - ins)) / tw.dt
    w = res.worlds
    return {
        "mean_travel_time_s": float(w["mean_travel_time_s"].mean()),
        "mean_delay_s": float(w["mean_delay_s"].mean()),
        "throughput_veh": float(w["throughput_veh"].mean()),
        "vehicles_inserted": float(w["vehicles_inserted"].mean()),
        "vehicle_steps": steps,
        "sim_time_s": loop,
        "build_s": build,
        "updates_per_s": steps / loop,
    }


# ------------------------------------------------------------------------------------------------
# (a) RESCO
def bench_resco(resco: Path, names: list[str], quick: bool) -> dict:
    print(f"\n== (a) RESCO scenarios ({resco}) — SUMO IDM with the twin's static plan vs the twin, 1 world ==")
    if not resco.is_dir():
        print(f"   skipped: {resco} does not exist (pass --resco DIR)")
        return {}
    out = {}
    head = (f"{'scenario':13s} {'sim':>4s} | {'travel time s':^22s} | {'delay s':^22s} | {'throughput':^22s} | "
            f"{'updates/s':^24s}")
    print(head)
    print(f"{'':13s} {'':>4s} | {'twin':>7s} {'SUMO':>7s} {'diff':>6s} | {'twin':>7s} {'SUMO':>7s} {'diff':>6s} | "
          f"{'twin':>7s} {'SUMO':>7s} {'diff':>6s} | {'twin':>8s} {'SUMO':>8s} {'ratio':>6s}")
    for name in names:
        cfg = resco_cfg(resco, name)
        if not cfg.is_file():
            print(f"{name:13s} skipped: {cfg} missing")
            continue
        sc = load_resco(cfg)
        end = sc.end if not quick else min(sc.end, sc.begin + 900.0)
        s = run_sumo(cfg, sc.network.programs, car_follow_model="IDM", seed=0, end=end)
        t = twin_run(lambda: resco_twin(cfg, name, end))
        out[name] = {"twin": t, "sumo": s}
        print(f"{name:13s} {end - sc.begin:4.0f} | "
              f"{t['mean_travel_time_s']:7.1f} {s['mean_travel_time_s']:7.1f} "
              f"{pct(t['mean_travel_time_s'], s['mean_travel_time_s'])} | "
              f"{t['mean_delay_s']:7.1f} {s['mean_delay_s']:7.1f} {pct(t['mean_delay_s'], s['mean_delay_s'])} | "
              f"{t['throughput_veh']:7.0f} {s['throughput_veh']:7.0f} {pct(t['throughput_veh'], s['throughput_veh'])} | "
              f"{t['updates_per_s'] / 1e3:7.0f}k {s['updates_per_s'] / 1e3:7.0f}k "
              f"{t['updates_per_s'] / s['updates_per_s']:6.2f}", flush=True)
        if s["teleports"]:
            print(f"{'':13s} (SUMO teleported {s['teleports']} vehicles)")
    return out


# ------------------------------------------------------------------------------------------------
# (b) 10×10 grid with >= 20,000 vehicles
def grid_net(workdir: Path, n: int = 10, block: float = 800.0, lanes: int = 3) -> Path:
    out = workdir / f"grid{n}x{n}.net.xml"
    r = subprocess.run([find_sumo("netgenerate"), "--grid", "--grid.number", str(n), "--grid.length", str(block),
                        "--grid.attach-length", str(block), "-L", str(lanes), "--default-junction-type",
                        "traffic_light", "--no-turnarounds", "true", "--seed", "1", "-o", str(out)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"netgenerate failed: {r.stderr}")
    return out


def sumo_grid(net_path: Path, routes: Path, target: int, steps: int, max_t: float) -> dict:
    """SUMO in-process (libsumo): step until ``target`` vehicles are running, then time ``steps`` steps."""
    import io
    import contextlib

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        import libsumo  # noqa: PLC0415  (prints a pyarrow warning on import)
    libsumo.start([find_sumo("sumo"), "-n", str(net_path), "-r", str(routes), "--default.carfollowmodel", "IDM",
                   "--no-step-log", "true", "--no-warnings", "true", "--seed", "0", "--time-to-teleport", "300"])
    try:
        t0 = time.perf_counter()
        while libsumo.vehicle.getIDCount() < target:
            libsumo.simulationStep()
            if libsumo.simulation.getTime() > max_t:
                raise RuntimeError(f"SUMO never held {target} vehicles (max {libsumo.vehicle.getIDCount()})")
        warm = time.perf_counter() - t0
        t_at = libsumo.simulation.getTime()
        updates = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            updates += libsumo.vehicle.getIDCount()  # the vehicles this step advances
            libsumo.simulationStep()
        dt = time.perf_counter() - t0
        running = libsumo.vehicle.getIDCount()
    finally:
        libsumo.close()
    return {"updates_per_s": updates / dt, "step_ms": 1e3 * dt / steps, "running": running, "warmup_s": warm,
            "reached_at_s": t_at}


def twin_grid(net, demand: Demand, horizon: float, target: int, steps: int) -> dict:
    tw = TrafficTwin(TrafficScenario(net, demand, "grid10x10"), WorldBatch.replications(0, 1), dt=1.0,
                     horizon=horizon, interval_s=horizon, compile=COMPILE)
    t0 = time.perf_counter()
    while int(tw.count(kernels.RUNNING).min()) < target:
        tw.step()
        if tw.step_index >= tw.n_steps - steps:
            raise RuntimeError(f"the twin never held {target} vehicles (max {int(tw.count(kernels.RUNNING).max())})")
    warm = time.perf_counter() - t0
    t_at = tw.time_s
    updates = 0
    t0 = time.perf_counter()
    for _ in range(steps):
        n = int(tw.count(kernels.RUNNING).sum())  # running before the step (as for SUMO)
        tw.step()
        updates += n
    dt = time.perf_counter() - t0
    return {"updates_per_s": updates / dt, "step_ms": 1e3 * dt / steps, "running": int(tw.count(kernels.RUNNING).sum()),
            "warmup_s": warm, "reached_at_s": t_at}


def bench_grid(quick: bool, target: int, workdir: Path) -> dict:
    steps = 20 if quick else 100
    print(f"\n== (b) 10×10 signalized grid (netgenerate, 3 lanes, 800 m blocks), ≥ {target:,} vehicles "
          f"in the network, {steps} steps timed ==")
    net_path = grid_net(workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        net = sumo.load_net(net_path)
    horizon = 4000.0
    demand = fringe_demand(net, 2400.0, horizon)
    routes = sumo.write_routes(demand, workdir / "grid.rou.xml")
    print(f"   network: {len(net.edges)} edges, {net.lane_count()} lanes, {len(net.programs)} signals; "
          f"demand: {len(demand.flows)} Poisson flows, {sum(f.expected_count() for f in demand.flows):,.0f} vehicles "
          f"over {horizon:.0f} s", flush=True)
    s = sumo_grid(net_path, routes, target, steps, horizon)
    print(f"   SUMO : {s['running']:6d} vehicles (reached at t={s['reached_at_s']:.0f} s, warm-up {s['warmup_s']:.0f} s)"
          f"  step {s['step_ms']:7.1f} ms  {s['updates_per_s'] / 1e3:8.0f}k updates/s", flush=True)
    t = twin_grid(net, demand, horizon, target, steps)
    print(f"   twin : {t['running']:6d} vehicles (reached at t={t['reached_at_s']:.0f} s, warm-up {t['warmup_s']:.0f} s)"
          f"  step {t['step_ms']:7.1f} ms  {t['updates_per_s'] / 1e3:8.0f}k updates/s")
    ratio = t["updates_per_s"] / s["updates_per_s"]
    print(f"   ratio twin/SUMO: {ratio:.2f}×  (target ≥ 20×: {'met' if ratio >= 20 else 'NOT met'})")
    return {"twin": t, "sumo": s, "ratio": ratio}


# ------------------------------------------------------------------------------------------------
# (c) batched worlds
def bench_batch(resco: Path, name: str, worlds: int, quick: bool, sumo_ref: dict | None) -> dict:
    print(f"\n== (c) {worlds} worlds of {name} in the twin vs one SUMO run ==")
    cfg = resco_cfg(resco, name)
    if not cfg.is_file():
        print(f"   skipped: {cfg} missing")
        return {}
    sc = load_resco(cfg)
    end = sc.end if not quick else min(sc.end, sc.begin + 900.0)
    s = sumo_ref or run_sumo(cfg, sc.network.programs, car_follow_model="IDM", seed=0, end=end)
    t = twin_run(lambda: resco_twin(cfg, name, end, worlds))
    print(f"   {end - sc.begin:.0f} s simulated; twin {worlds} worlds: {t['vehicle_steps']:,.0f} vehicle updates in "
          f"{t['sim_time_s']:.1f} s = {t['updates_per_s'] / 1e3:.0f}k updates/s (summed over worlds); "
          f"SUMO 1 run: {s['updates_per_s'] / 1e3:.0f}k updates/s; ratio {t['updates_per_s'] / s['updates_per_s']:.2f}×")
    return {"twin": t, "sumo": s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resco", type=Path, default=DEFAULT_RESCO, help="folder with the RESCO scenarios")
    ap.add_argument("--quick", action="store_true", help="900 s of each RESCO scenario, 20 timed grid steps")
    ap.add_argument("--only", default="resco,grid,batch", help="comma-separated parts: resco, grid, batch")
    ap.add_argument("--scenarios", default=",".join(RESCO), help="RESCO scenarios for part (a)")
    ap.add_argument("--batch-scenario", default="cologne8")
    ap.add_argument("--worlds", type=int, default=64)
    ap.add_argument("--target", type=int, default=20000, help="vehicles in the grid before timing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the twin (SUMO uses one)")
    ap.add_argument("--compile", default="null", choices=["null", "true", "false"],
                    help="the twin's compute.compile (null: the compiled CPU step where a C++ compiler is found)")
    ap.add_argument("--lane-changing", default="true", choices=["true", "false"],
                    help="the RESCO twins' scenario.lane_changing (scenario=sumo's default: true)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global COMPILE, LANE_CHANGING
    COMPILE = {"null": None, "true": True, "false": False}[a.compile]
    LANE_CHANGING = a.lane_changing == "true"
    parts = set(a.only.split(","))
    try:
        find_sumo("sumo")
    except SumoNotFoundError as e:
        print(f"skipped: {e}")
        return
    ver, cpu = sumo_version(find_sumo("sumo")), cpu_name()
    print(f"{ver}; torch {torch.__version__}, {a.threads} thread(s), compute.compile={a.compile}, "
          f"RESCO lane changing {a.lane_changing}; CPU {cpu}, "
          f"{os.cpu_count()} cores; "
          f"load average {load_avg()}")
    t_all = time.perf_counter()
    resco_out = {}
    if "resco" in parts:
        names = [n for n in a.scenarios.split(",") if n]
        resco_out = bench_resco(a.resco, names, a.quick)
    if "grid" in parts:
        with tempfile.TemporaryDirectory(prefix="bench_sumo_") as wd:
            bench_grid(a.quick, a.target, Path(wd))
    if "batch" in parts:
        if not a.resco.is_dir():
            print(f"\n== (c) skipped: {a.resco} does not exist (pass --resco DIR) ==")
        else:
            ref = resco_out.get(a.batch_scenario, {}).get("sumo")
            bench_batch(a.resco, a.batch_scenario, a.worlds, a.quick, ref)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; load average {load_avg()}")


if __name__ == "__main__":
    main()
