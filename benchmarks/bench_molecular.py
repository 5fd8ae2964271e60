"""Molecular twin throughput, side by side with ReaDDy, and GPU scaling.

    python benchmarks/bench_molecular.py            # CPU: twins vs ReaDDy on the same system (best of 3)
    python benchmarks/bench_molecular.py --gpu      # + batch-of-worlds and LJ throughput on CUDA

Particle-steps per second = (live particles summed over worlds) × steps / time, where time is
this process's CPU time by default (``--clock cpu``: both codes run single-threaded in this process,
so waiting for a core on a shared machine does not count) or elapsed time (``--clock wall``).
The reversible-binding system (identical in both codes): periodic 10³ box,
40 immobile receptors + 60 ligands (D = 1), L + R ⇌ C by the Doi model
(R = 1, λ = 5, k_off = 1), dt = 0.02, 3000 steps. The receptors are immobile, so twins bins them
once per run (``kernels.reach_table``, built with the twin, outside the timed steps: its set-up time is
printed separately) and each ligand finds its partners with one cell lookup per step.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from twins.core.worlds import WorldBatch
from twins.molecular import kernels as K
from twins.molecular.lj import LJFluidTwin
from twins.molecular.reference import binding_box, canonical_complexes, readdy_reversible, twins_reversible


def gpu_batch_throughput(worlds=256, R0=2000, L0=6000, box=100.0, steps=200, dtype=torch.float32):
    """Many worlds of a larger binding system on CUDA."""
    wb = WorldBatch.replications(0, worlds).to("cuda")
    from twins.molecular.model import MolecularTwin

    m = MolecularTwin(wb, dt=0.02, horizon=steps * 0.02, device="cuda", dtype=dtype, box=box, reaction_radius=1.0,
                      cells=(("all", R0, 0.0, 1.0),), n_offtarget=0, D_target=0.0, D_ligand=1.0, k_on_target=5.0,
                      k_off_target=1.0, dose=L0, n_doses=1, k_el=0.0, record_every=50, collect=False)
    for _ in range(5):
        m.step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    while m.step_index < m.n_steps:
        m.step()
        n += 1
    torch.cuda.synchronize()
    return worlds * (R0 + L0) * n / (time.perf_counter() - t0)


def lj_throughput(n_particles, worlds=1, steps=200, device="cpu", dtype=torch.float32, compile=None):
    """LJ fluid (ρ* = 0.8442, T* = 0.72, rc = 2.5σ: the LAMMPS/HOOMD 'LJ liquid' bench state), NVE.
    Returns (steps/s, particle-steps/s, steps per neighbour-list rebuild); list rebuilds are inside the time."""
    wb = WorldBatch.replications(0, worlds)
    m = LJFluidTwin(wb, dt=0.005, horizon=(steps + 20) * 0.005, device=device, dtype=dtype,
                    n_particles=n_particles, density=0.8442, temperature=0.72, cutoff=2.5, gamma=0.0,
                    record_every=10_000, compile=compile)
    for _ in range(20):  # the compile, the first rebuilds
        m.step()
    if device != "cpu":
        torch.cuda.synchronize()
    built = int(m.rebuilds.sum())
    t0 = time.perf_counter()
    for _ in range(steps):
        m.step()
    if device != "cpu":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    per_rebuild = steps * worlds / max(int(m.rebuilds.sum()) - built, 1)
    return steps / wall, worlds * n_particles * steps / wall, per_rebuild


# Published GPU figures for the LJ liquid benchmark (ρ* = 0.8442, T* = 0.72, rc = 2.5σ), for context
# only (different hardware, neighbour-list skins, and precision): HOOMD-blue reports its LJ-liquid
# benchmark in time steps per second on its documentation site and in Anderson, Glaser & Glotzer,
# Comput. Mater. Sci. 173, 109363 (2020); LAMMPS publishes its "LJ" bench on lammps.org/bench.
# We print the citation next to our figure rather than a remembered number.
PUBLISHED = ("HOOMD-blue: Anderson, Glaser & Glotzer, Comput. Mater. Sci. 173, 109363 (2020) and "
             "hoomd-blue.readthedocs.io (LJ liquid benchmark); LAMMPS: lammps.org/bench (LJ liquid)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each code, interleaved; the fastest is reported (a shared machine's load "
                         "only ever slows a run down)")
    ap.add_argument("--worlds", type=int, nargs="+", default=[1, 64, 1024])
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: this process's CPU time (both codes run single-threaded in this process, so "
                         "time spent waiting for a core on a shared machine does not count); wall: elapsed time")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(int(os.environ.get("TWINS_THREADS", "1")))
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    spec = dict(steps=args.steps, skip=min(500, args.steps // 6), clock=clock)
    theory = canonical_complexes(40, 60, K.doi_dissociation_constant(5.0, 1.0, 1.0, 0.02) * 1000.0)
    print(f"reversible L + R <-> C, 100 particles, {args.steps} steps, best of {args.repeat}, {args.clock} time; "
          f"theory <C> = {theory:.2f}")
    best_rd, best_tw = None, {}
    for _ in range(args.repeat):
        try:
            c_rd, ps_rd = readdy_reversible(**spec)
            if best_rd is None or ps_rd > best_rd[1]:
                best_rd = (c_rd, ps_rd)
        except ImportError as e:
            print(f"  ReaDDy: skipped ({e})")
        for w in args.worlds:
            c_tw, ps_tw = twins_reversible(**spec, worlds=w)
            if w not in best_tw or ps_tw > best_tw[w][1]:
                best_tw[w] = (c_tw, ps_tw)
    ps_rd = best_rd[1] if best_rd else None
    if best_rd:
        print(f"  ReaDDy {__import__('readdy').__version__} (CPU kernel, 1 thread): <C> = {best_rd[0]:6.2f}   "
              f"{ps_rd:12.3e} particle-steps/s")
    for w, (c_tw, ps_tw) in best_tw.items():
        ratio = f"  ({ps_tw / ps_rd:.1f}x ReaDDy)" if ps_rd else ""
        print(f"  twins CPU, {w:4d} worlds:              <C> = {c_tw:6.2f}   {ps_tw:12.3e} particle-steps/s{ratio}")
    for w in best_tw:  # one-off cost outside the timed steps: construction incl. the receptor table
        t0 = clock()
        binding_box(WorldBatch.replications(0, w), horizon=args.steps * 0.02, dose=60, dtype=torch.float32)
        print(f"  twins set-up, {w:4d} worlds (receptor table included, not in the rates above): "
              f"{clock() - t0:.3f} s")
    for comp in ((False,) if args.gpu else (False, True)):  # --gpu: the device's time goes to the device
        sps, pps, every = lj_throughput(4000, steps=60, compile=comp)
        print(f"LJ liquid N=4000 CPU{' (step compiled)' if comp else ''}: {sps:8.2f} steps/s, "
              f"{pps:10.3e} particle-steps/s, a neighbour-list rebuild every {every:.1f} steps")
    if args.gpu:
        if not torch.cuda.is_available():
            print("GPU: no CUDA device, skipped")
            return
        print(f"GPU: {torch.cuda.get_device_name()}")
        for w in (64, 256):
            print(f"  binding, {w} worlds x 8000 particles: {gpu_batch_throughput(worlds=w):.3e} particle-steps/s")
        for n in (64_000, 256_000):  # issue 20's target: >= 1.4e8 particle-steps/s at N = 64k
            sps, pps, every = lj_throughput(n, steps=100, device="cuda")
            print(f"  LJ liquid N={n}: {sps:8.1f} steps/s  {pps:.3e} particle-steps/s  "
                  f"(rebuild every {every:.1f} steps, step compiled by inductor)")
        print(f"  compare: {PUBLISHED}")


if __name__ == "__main__":
    main()
