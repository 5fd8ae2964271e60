"""Scheduled compute (issue 8): world-steps per second in process and through Ray workers, and the
planner's chunk size against hand-picked ones.

    python benchmarks/bench_compute.py                  # arterial, 16 worlds, 1 h; Ray with 1 and 2 workers
    python benchmarks/bench_compute.py --quick          # 8 worlds, 10 min of traffic
    python benchmarks/bench_compute.py --device cuda    # + the planner's chunk vs hand-picked chunk sizes

One world-step = one world advanced by one dt. "In process" is ``compute=local`` with every world in
one chunk; "Ray, N workers" is ``compute=ray`` on a local Ray instance, the worlds split into N chunks
run as N concurrent tasks (after a warm-up run, so worker start-up and imports are not timed; the
timed run still pays task dispatch, pickling of the job and results, and the twin build in each
worker). The set-ups are timed in turn, round after round (the machine is shared), and each one's best
round is reported. The overhead ratio is Ray with 1 worker / in process for the same work.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twins.cli import CONF_DIR  # noqa: E402
from twins.core import runner  # noqa: E402


def cfg_for(a, *extra):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=[
            "scenario=arterial", f"horizon_s={a.horizon}", f"replications={a.worlds}",
            f"compute.device={a.device}", "progress=false", "output.figures=false", *extra])


def timed(cfg, repeat=1):
    """Seconds for the simulation of ``cfg``'s worlds through its plan (best of ``repeat``)."""
    best, exe = float("inf"), None
    for _ in range(repeat):
        exe = runner.plan_counterfactual(cfg).exe
        t0 = time.perf_counter()
        exe.run(progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, exe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worlds", type=int, default=16)
    ap.add_argument("--horizon", type=float, default=3600.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to time, e.g. 1,2,4")
    ap.add_argument("--quick", action="store_true", help="8 worlds, 600 s")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each set-up's best round is reported")
    ap.add_argument("--chunks", default="", help="hand-picked chunk sizes to compare with the planner's "
                                                 "(default on CUDA: 64,128,256,512,1024,2048)")
    a = ap.parse_args()
    if a.quick:
        a.worlds, a.horizon = 8, 600.0
    torch.set_num_threads(1)  # one core per process: in process = 1 worker's worth of CPU
    n_steps = int(a.horizon)  # dt = 1 s
    ws = a.worlds * n_steps
    print(f"arterial, {a.worlds} worlds × {n_steps} steps = {ws:,} world-steps; device {a.device}; "
          f"{os.cpu_count()} CPUs; torch threads 1 per process")

    # the machine is shared: the set-ups are timed in turn, round after round, best of --repeat each
    setups = {"in process, 1 chunk": cfg_for(a, "compute.max_worlds_per_chunk=null"),
              "in process, 2 chunks in turn": cfg_for(a, f"compute.max_worlds_per_chunk={-(-a.worlds // 2)}")}
    counts = [] if a.no_ray else [int(x) for x in a.workers.split(",") if x]
    if counts:
        import ray

        ray.init(address="local", num_cpus=max(counts), include_dashboard=False, log_to_driver=False)
        for n in counts:
            setups[f"Ray, {n} worker(s), {n} chunk(s)"] = cfg_for(
                a, "compute=ray", f"compute.workers={n}", f"compute.max_worlds_per_chunk={-(-a.worlds // n)}")
    for cfg in setups.values():
        timed(cfg)  # warm-up: Ray starts its workers and imports torch and twins there
    best = {k: float("inf") for k in setups}
    for _ in range(a.repeat):
        for k, cfg in setups.items():
            best[k] = min(best[k], timed(cfg)[0])
    for k, t in best.items():
        print(f"{k:34s} {ws / t:10,.0f} world-steps/s  ({t:.2f} s)")
    t_local = best["in process, 1 chunk"]
    if counts:
        ray.shutdown()
        r1 = best.get("Ray, 1 worker(s), 1 chunk(s)")
        r2 = best.get("Ray, 2 worker(s), 2 chunk(s)")
        if r1:
            print(f"Ray overhead (1 worker / in process, same work): {r1 / t_local:.2f}x")
        if r1 and r2:
            print(f"Ray speed-up 2 workers / 1 worker: {r1 / r2:.2f}x")

    sizes = [int(x) for x in a.chunks.split(",") if x] or (
        [64, 128, 256, 512, 1024, 2048] if a.device.startswith("cuda") else [])
    if sizes:
        W = max(sizes + [a.worlds])
        a.worlds = W
        _, exe = timed(cfg_for(a))
        planned = exe.plan.chunk_size
        print(f"planner: chunk of {planned} worlds ({exe.plan.reason}; {exe.plan.probe.bytes_per_world / 1e6:.2f} MB "
              f"per world, {exe.plan.probe.method})")
        rows = []
        for s in sorted(set(sizes + [planned])):
            t, _ = timed(cfg_for(a, f"compute.max_worlds_per_chunk={s}"))
            rows.append((s, W * n_steps / t))
            print(f"  chunk {s:6d}: {W * n_steps / t:12,.0f} world-steps/s" + ("   <- planner" if s == planned else ""))
        best = max(r[1] for r in rows)
        mine = dict(rows)[planned]
        print(f"planner's chunk reaches {mine / best:.0%} of the best hand-picked throughput")


if __name__ == "__main__":
    main()
