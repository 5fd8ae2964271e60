"""Building the traffic twin and reading its outcomes at many worlds: construction time and ``results()`` time.

    python benchmarks/bench_build.py                                # scenario=traffic at 256, 1024, 2056 worlds
    python benchmarks/bench_build.py --worlds 64 256 --threads 1
    python benchmarks/bench_build.py --tree /tmp/oldtree            # the same measurement on another checkout
    python benchmarks/bench_build.py --device cuda                  # any CUDA machine

Construction is ``make_twin`` on the composed config (``scenario=traffic``, one hour): the population (every
flow's departures), the drivers' parameters, the state and the Mesa agents. For ``results()`` the twin must hold
a finished run; simulating an hour of 2056 worlds would take most of an hour here, so a run of ``--run-worlds``
replications (the first ones) is stepped to the horizon once, and the large twin's worlds are replications
``w mod run-worlds``: by batch independence each holds exactly the population of the small twin's world of that
replication, and gets its state, interval series and lane accumulators copied. ``results()`` then reads as many
trips, intervals and edges as a real run of that many worlds would give (each world's outcomes those of its
replication). ``results_s`` is the ``results()`` call; ``tables_s`` what reading every table afterwards adds (the
long tables are built when first read, as writing the run folder reads them; before issue 20 ``results()`` built
them itself, so there it is ~0). Times are wall clock, the best of ``--repeat``. ``results_MiB_faulted``: the
memory ``results()`` touched for the first time (minor page faults × page size, the last repeat): on a VM whose
host reclaims the guest's free pages (free page reporting, as on the 2-core Firecracker VM of the README) each such
4 KiB page costs ~10 µs, and this, not the arithmetic, is most of ``results()`` there.

``--tree PATH`` imports ``twins`` and ``scenarios`` from another checkout (say ``git worktree add /tmp/oldtree
HEAD``), so one script measures the code before and after a change side by side on the same machine.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worlds", type=int, nargs="+", default=[256, 1024, 2056])
    p.add_argument("--scenario", default="traffic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--run-worlds", type=int, default=4, help="replications actually stepped to the horizon")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--skip-results", action="store_true", help="time construction only")
    p.add_argument("--tree", default=None, help="import twins from this checkout instead")
    p.add_argument("--profile", action="store_true", help="cProfile each results() call (top 25 by own time)")
    p.add_argument("overrides", nargs="*", help="extra config overrides, e.g. horizon_s=1800")
    return p.parse_args()


def main() -> None:
    a = _args()
    root = os.path.abspath(a.tree) if a.tree else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    import numpy as np
    import torch
    from hydra import compose, initialize_config_dir

    import twins
    import twins.cli  # noqa: F401  (registers the structured configs)
    from twins.core.runner import make_twin
    from twins.core.worlds import WorldBatch

    if a.threads:
        torch.set_num_threads(a.threads)
    with initialize_config_dir(config_dir=os.path.join(root, "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=[f"scenario={a.scenario}", "output.figures=false",
                                                         "progress=false", f"compute.device={a.device}",
                                                         "compute.max_memory_gb=1000",
                                                         *a.overrides])
    seed = int(cfg.seed)

    def sync():
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    print(f"# bench_build: scenario={a.scenario} device={a.device} torch {torch.__version__} "
          f"threads={torch.get_num_threads()} twins from {os.path.dirname(twins.__file__)}")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus")
    small = None
    if not a.skip_results:
        t0 = time.perf_counter()
        small = make_twin(cfg, WorldBatch.replications(seed, a.run_worlds))
        while small.step_index < small.n_steps:
            small.step()
        print(f"# a run of {a.run_worlds} worlds stepped to the horizon in {time.perf_counter() - t0:.1f} s "
              f"(its state is copied into the large twins)")
    print(f"{'worlds':>7} {'slots':>6} {'build_s':>8} {'results_s':>10} {'tables_s':>9} {'trips':>10} "
          f"{'results_MiB_faulted':>19}")
    for W in a.worlds:
        R = a.run_worlds
        wb = WorldBatch(seed, torch.arange(W, dtype=torch.int64) % R, torch.zeros(W, dtype=torch.int64))
        best_b = best_r = best_t = float("inf")
        n_trips = faulted = 0
        for _ in range(a.repeat):
            tw = None
            gc.collect()
            sync()
            t0 = time.perf_counter()
            tw = make_twin(cfg, wb)
            sync()
            best_b = min(best_b, time.perf_counter() - t0)
            S = tw.S
            if small is None:
                continue
            idx = torch.arange(W) % R
            if not torch.equal(tw.pop.depart.cpu(), small.pop.depart.cpu()[idx]):
                raise RuntimeError("batch independence: a world's population differs from its replication's")
            for k, v in small.state.columns().items():
                if k in ("depart",):
                    continue
                getattr(tw.state, k).copy_(v.to(tw.device)[idx.to(tw.device)] if k != "world"
                                  else torch.arange(W, device=tw.device).unsqueeze(1).expand_as(getattr(tw.state, k)))
            tw.step_index = small.step_index
            L = tw.net.n_lanes
            for name in ("lane_acc_total", "lane_acc_interval"):
                getattr(tw, name).copy_(getattr(small, name).view(R, L, 3)[idx.to(small.device)].reshape(W * L, 3))
            iw = idx.numpy()
            # the interval tables as that many worlds write them: timeseries one row per world, detectors one
            # row per (edge, world), edge-major
            tw._series = [f.iloc[iw].assign(world=np.arange(W)).reset_index(drop=True) for f in small._series]
            D = len(tw.detectors)
            pick = (np.arange(D)[:, None] * R + iw[None, :]).ravel()
            tw._detector_rows = [f.iloc[pick].assign(world=np.tile(np.arange(W), D)).reset_index(drop=True)
                                 for f in small._detector_rows]
            sync()
            flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            if a.profile:
                import cProfile
                import pstats
                pr = cProfile.Profile()
                pr.enable()
            res = tw.results()
            if a.profile:
                pr.disable()
                pstats.Stats(pr).sort_stats("tottime").print_stats(25)
            best_r = min(best_r, time.perf_counter() - t0)
            faulted = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0) * resource.getpagesize() / 2**20
            # what writing the run folder adds: every table read (tables built on first read are built now)
            t0 = time.perf_counter()
            tables = dict(res.tables.items())
            best_t = min(best_t, time.perf_counter() - t0)
            n_trips = len(tables["trips"])
            del tables
            del res
            del tw
            gc.collect()  # the Mesa agents hold the twin in reference cycles: free its memory before the next
        print(f"{W:>7} {S:>6} {best_b:>8.2f} {best_r:>10.2f} {best_t:>9.2f} {n_trips:>10} {faulted:>19.0f}", flush=True)


if __name__ == "__main__":
    main()
