"""Candidate evaluations per minute for policy search (issue 5).

    python benchmarks/bench_search.py                 # CPU; R=8 replications, 1 h of the arterial
    python benchmarks/bench_search.py --horizon 900   # shorter, for a quick look

A candidate evaluation is one signal plan simulated on R replications (plus the
baseline arm it is paired with). "Batched" evaluates K candidates in one world
batch (K+1 arms × R worlds); "one at a time" evaluates the same candidates one per
batch (2 arms × R worlds each), as a per-trial sweeper would.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from interventions._evaluate import TwinEvaluator
from twins.cli import CONF_DIR


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--horizon", type=float, default=3600.0)
    ap.add_argument("--replications", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--single", type=int, default=None,
                    help="candidates timed one at a time (default: all of --batch; fewer for large batches)")
    ap.add_argument("--compile", default="null", choices=["null", "true", "false"],
                    help="compute.compile (null: the compiled CPU step where a C++ compiler is found)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=arterial", "intervention=signal_timing", f"horizon_s={a.horizon}",
            f"compute.device={a.device}", f"compute.compile={a.compile}", "progress=false"])
    ev = TwinEvaluator(cfg, ["cycle_s", "green_split"])
    rng = np.random.default_rng(0)
    cands = np.column_stack([rng.uniform(50, 120, a.batch), rng.uniform(0.35, 0.65, a.batch)])
    reps = list(range(a.replications))
    print(f"arterial, horizon {a.horizon:g} s, R={a.replications}, K={a.batch}, device {a.device}, "
          f"torch threads {torch.get_num_threads()}, compute.compile={a.compile}")
    t0 = time.perf_counter()
    ev(cands, reps)
    batched = time.perf_counter() - t0
    n_single = min(a.single or a.batch, a.batch)
    t0 = time.perf_counter()
    for row in cands[:n_single]:
        ev(row[None, :], reps)
    single = (time.perf_counter() - t0) * a.batch / n_single  # the same K candidates, one at a time
    print(f"batched:        {a.batch / batched * 60:8.1f} candidate evaluations/min ({batched:.1f} s for {a.batch})")
    print(f"one at a time:  {a.batch / single * 60:8.1f} candidate evaluations/min "
          f"({single * n_single / a.batch:.1f} s for {n_single})")
    print(f"gain of batching: {single / batched:.2f}x")


if __name__ == "__main__":
    main()
