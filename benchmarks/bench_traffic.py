"""Traffic kernel throughput: vehicle updates per second, and state memory per vehicle.

    python benchmarks/bench_traffic.py                  # CPU: single world, then a batch of 64
    python benchmarks/bench_traffic.py --compile false  # the same on the tensor kernels
    python benchmarks/bench_traffic.py --device cuda --worlds 256   # any CUDA machine
    python benchmarks/bench_traffic.py --worlds 1 --grid 100 --target 1000000 --steps 10   # one world, 1M vehicles

A vehicle update is one running vehicle advanced by one step. The scenario is a
10×10 signalized grid (2 lanes each way, 1 km blocks) loaded until at least
20,000 vehicles are in the network at once (per world); then steps are timed.

After the timing, ``--count-steps`` more steps (default 32) run under a torch dispatch
mode (twins.compute.counting) that counts, per step (issue 20): **kernels**, every tensor
operation that does work (a call of the compiled step, twins.traffic.native, counts as one),
and **host syncs**, the operations that make the host wait for tensor data. Counted, not
estimated: these are the calls made, on any device.
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from omegaconf import OmegaConf

from scenarios.traffic import GridScenario, SignalConfig, grid_scenario
from twins.compute import counting
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin


def build(worlds: int, device: str, dtype, target: int, horizon: float = 7200.0, compile: bool | None = None,
          lane_changing: bool = False, grid: int = 10):
    s = OmegaConf.structured(GridScenario(rows=grid, cols=grid, block_m=1000.0, approach_m=400.0, lanes=2,
                                          entry_flow_veh_h=1800.0, off_peak_factor=1.0, straight_share=0.8,
                                          signals=SignalConfig(cycle_s=60.0), lane_changing=lane_changing))
    scen = grid_scenario(s, horizon)
    return TrafficTwin(scen, WorldBatch.replications(0, worlds), dt=1.0, horizon=horizon, device=device,
                       dtype=dtype, interval_s=horizon, compile=compile)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def count_per_step(tw, steps: int) -> dict:
    """Kernels and host syncs per step over ``steps`` steps (the compiled step's call counts as one kernel)."""
    calls = [0]
    step_ = native.step_

    def counted(*a, **k):
        calls[0] += 1
        return step_(*a, **k)

    native.step_ = counted
    try:
        return counting.count_per_step(tw.step, steps, extra_kernels=lambda: calls[0])
    finally:
        native.step_ = step_


def measure(worlds: int, device: str, dtype, target: int, steps: int, compile: bool | None = None,
            lane_changing: bool = False, count_steps: int = 5, grid: int = 10, fixed_shape: bool | None = None) -> dict:
    tw = build(worlds, device, dtype, target, compile=compile, lane_changing=lane_changing, grid=grid)
    if fixed_shape is not None:
        tw.fixed_shape = fixed_shape
    t0 = time.perf_counter()
    while int(tw.count(kernels.RUNNING).min()) < target:
        tw.step()
        if tw.step_index >= tw.n_steps - steps:
            raise RuntimeError(f"network never held {target} vehicles (max {int(tw.count(kernels.RUNNING).max())})")
    warm = time.perf_counter() - t0
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        tw.step()
    sync(device)
    dt = time.perf_counter() - t0
    running = tw.count(kernels.RUNNING)
    # the running count changes slowly; average of the start and end counts
    updates = float(running.sum()) * steps
    columns = list(tw.state.columns().values()) + list(tw.drivers.columns().values())
    state_bytes = sum(v.element_size() * v[0].numel() for v in columns)
    counts = count_per_step(tw, count_steps) if count_steps > 0 else {}
    return {
        **counts,
        "worlds": worlds,
        "running_per_world": int(running.float().mean()),
        "step_ms": 1000 * dt / steps,
        "updates_per_s": updates / dt,
        "state_bytes_per_vehicle": state_bytes / tw.S,
        "warmup_s": warm,
        "sim_time_s": tw.time_s,
        "kernel": tw.kernel + (" fixed-shape" if tw.fixed_shape and tw.kernel.startswith("tensor") else ""),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--worlds", type=int, nargs="*", default=None)
    ap.add_argument("--target", type=int, default=20000, help="vehicles in the network per world before timing")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--compile", nargs="?", const="true", default="null", choices=["null", "true", "false"],
                    help="compute.compile (default null: on a CPU the compiled step, twins.traffic.native, where a "
                    "C++ compiler is found; true: that, and on CUDA torch.compile of IDM, compiled during the "
                    "warm-up, not timed; false: the tensor kernels)")
    ap.add_argument("--grid", type=int, default=10,
                    help="junctions per side of the grid (10: the standard case; 100 holds a million vehicles)")
    ap.add_argument("--count-steps", type=int, default=32,
                    help="steps run after the timing to count kernels and host syncs per step (0: none)")
    ap.add_argument("--lane-changing", action="store_true",
                    help="scenario.lane_changing=true: kernels rule 11 (lane changes along edges)")
    ap.add_argument("--fixed-shape", choices=["auto", "true", "false"], default="auto",
                    help="the tensor kernels' fixed-shape mode (no nonzero; auto: on CUDA only): a CPU proxy for the "
                    "GPU step's host syncs with --compile false --fixed-shape true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    worlds = a.worlds or ([1, 64] if a.device == "cpu" else [1, 64, 256])
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    compile = {"null": None, "true": True, "false": False}[a.compile]
    print(f"device: {a.device} ({dev}); dtype {a.dtype}; torch {torch.__version__}; compute.compile={a.compile}; "
          f"lane changing {'on' if a.lane_changing else 'off'}")
    for w in worlds:
        target = a.target if w == 1 or a.device != "cpu" else min(a.target, 2000)
        r = measure(w, a.device, dtype, target, a.steps, compile, a.lane_changing, a.count_steps, a.grid,
                    {"auto": None, "true": True, "false": False}[a.fixed_shape])
        counted = (f"  kernels/step={r['kernels_per_step']:.0f}  host syncs/step={r['host_syncs_per_step']:.1f}"
                   if "kernels_per_step" in r else "")
        print(f"W={r['worlds']:4d}  vehicles/world={r['running_per_world']:6d}  step={r['step_ms']:8.2f} ms  "
              f"updates/s={r['updates_per_s'] / 1e6:8.2f} M  state={r['state_bytes_per_vehicle']:.0f} B/vehicle  "
              f"kernel {r['kernel']}{counted}  (warm-up {r['warmup_s']:.1f} s to t={r['sim_time_s']:.0f} s)")
        if r.get("sync_ops"):
            print("        host syncs by operation (per step): "
                  + ", ".join(f"{k} {v:g}" for k, v in r["sync_ops"].items()))


if __name__ == "__main__":
    main()
