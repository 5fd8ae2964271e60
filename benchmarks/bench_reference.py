"""Vectorized traffic step vs the per-agent Mesa reference, same network, same process.

Runs one world of a signalized grid with :class:`twins.traffic.model.TrafficTwin`
and with :class:`twins.traffic.reference.ReferenceTrafficModel` (built from the
twin's per-vehicle inputs, so both simulate the same vehicles), step by step,
and prints vehicle updates per second (running vehicles × steps / seconds
spent in ``step()``) for each, and their ratio. With ``--dtype float64`` it
also prints the largest position difference at the end (they should agree to
~1e-12 m).

    PYTHONPATH=. python benchmarks/bench_reference.py            # 4x4 grid, 600 s at dt=1
    PYTHONPATH=. python benchmarks/bench_reference.py --rows 2 --cols 2 --steps 300
"""
from __future__ import annotations

import argparse
import time

import torch

from scenarios.traffic import GridScenario, SignalConfig, grid_scenario
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin
from twins.traffic.reference import RUNNING, ReferenceTrafficModel


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--flow", type=float, default=900.0, help="veh/h per entry (peak all along)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--dt", type=float, default=1.0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave torch's default)")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    horizon = a.steps * a.dt
    s = GridScenario(rows=a.rows, cols=a.cols, entry_flow_veh_h=a.flow, peak_begin_s=0.0, peak_end_s=horizon,
                     signals=SignalConfig())
    scen = grid_scenario(s, horizon)
    dtype = getattr(torch, a.dtype)
    tw = TrafficTwin(scen, WorldBatch.replications(a.seed, 1), dt=a.dt, horizon=horizon, dtype=dtype)
    ref = ReferenceTrafficModel.from_twin(tw)
    # the compiled CPU step (compute.compile), where a C++ compiler is found: same vehicles, same numbers
    tn = TrafficTwin(scen, WorldBatch.replications(a.seed, 1), dt=a.dt, horizon=horizon, dtype=dtype,
                     compile=True) if native.available() else None

    t_twin = t_ref = t_nat = 0.0
    upd_twin = upd_ref = 0
    for _ in range(a.steps):
        t0 = time.perf_counter()
        tw.step()
        t1 = time.perf_counter()
        ref.step()
        t2 = time.perf_counter()
        if tn is not None:
            tn.step()
        t3 = time.perf_counter()
        t_twin += t1 - t0
        t_ref += t2 - t1
        t_nat += t3 - t2
        # a vehicle update = one running vehicle advanced by one step (counted after the step,
        # plus those that arrived in it, identically for both)
        upd_twin += int((tw.state.status == kernels.RUNNING).sum()) + int(
            (tw.state.arrive_step == tw.step_index).sum())
        upd_ref += sum(1 for v in ref.vehicles if v.status == RUNNING or v.arrive_step == ref.step_index)

    n_end = int((tw.state.status == kernels.RUNNING).sum())
    print(f"network: {a.rows}x{a.cols} signalized grid, {len(tw.net_cpu.lane_ids)} lanes, {a.steps} steps of "
          f"{a.dt:g} s, {n_end} vehicles in the network at the end, dtype {a.dtype}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"vectorized TrafficTwin : {upd_twin:>9d} vehicle updates in {t_twin:7.2f} s = "
          f"{upd_twin / t_twin:12,.0f} veh-updates/s")
    print(f"per-agent reference    : {upd_ref:>9d} vehicle updates in {t_ref:7.2f} s = "
          f"{upd_ref / t_ref:12,.0f} veh-updates/s")
    print(f"speed ratio vectorized / reference: {(upd_twin / t_twin) / (upd_ref / t_ref):.1f}x")
    if tn is not None:
        same = all(torch.equal(getattr(tw.state, k), getattr(tn.state, k)) for k in ("status", "pos", "speed"))
        print(f"compiled step (native) : {upd_twin:>9d} vehicle updates in {t_nat:7.2f} s = "
              f"{upd_twin / t_nat:12,.0f} veh-updates/s; ratio to reference {(upd_twin / t_nat) / (upd_ref / t_ref):.1f}x; "
              f"{'identical to' if same else 'DIFFERENT from'} the tensor kernels")
    if a.dtype == "float64":
        pos = tw.state.pos[0].tolist()
        vid = tw.pop.vehicle_id[0].tolist()
        st = tw.state.status[0].tolist()
        diff = max((abs(pos[i] - ref.by_id[vid[i]].pos) for i in range(len(vid))
                    if st[i] == kernels.RUNNING), default=0.0)
        print(f"largest position difference at the end: {diff:.3g} m")


if __name__ == "__main__":
    main()
