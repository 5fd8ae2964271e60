"""Sugiyama's ring: the jam's wave speed against the drivers' imperfection (sigma), twin and SUMO side by side.

The ``ring`` scenario (22 vehicles, 230 m, SUMO's Krauss) with its vType's ``sigma`` swept; for each value the twin
(8 replications, 10 minutes) and SUMO 1.28 (3 seeds, the same vType on a 22-node ring; the helpers of
``tests/traffic_sumo/test_ring_sumo.py``) print the stop-and-go share, the wave speed (km/h, negative: backwards)
with the estimator of ``tests/traffic/test_ring_waves.py``, and the mean speed. Then the sigma at which the
twin's mean wave speed crosses Sugiyama's 20 km/h (linear between the two values around it): how the scenario's
sigma (0.8) was chosen. SUMO's default (0.5) gives 25 km/h in both.

    PYTHONPATH=. python benchmarks/bench_ring_waves.py [--sigmas 0.5,0.6,0.7,0.8,0.9] [--no-sumo]

About 30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from _sumo_common import cpu_name, load_avg
from tests.traffic.test_ring_waves import SUGIYAMA_KMH, jam_figures, ring_config, twin_ring


def _row(label: str, side: str, share, speeds: dict, mean_speed: float) -> float:
    kmh = list(speeds.values())
    wave = f"{np.mean(kmh):6.1f} [{min(kmh):6.1f}, {max(kmh):6.1f}]" if kmh else f"{'-':>21}"
    print(f"{label:6} {side:5} {len(kmh):2}/{len(share):<2} {float(share.min()):5.2f} {wave} {mean_speed:6.2f}")
    return float(np.mean(kmh)) if kmh else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigmas", default="0.5,0.6,0.7,0.8,0.9", help="comma-separated Krauss sigma values")
    ap.add_argument("--no-sumo", action="store_true", help="the twin only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; CPU {cpu_name()}; load average {load_avg()}")
    print(f"{'sigma':6} {'side':5} jammed min-share wave km/h mean [min, max] mean m/s   (Sugiyama: -{SUGIYAMA_KMH:g})")
    t0, sigmas, twin_kmh = time.perf_counter(), [float(x) for x in args.sigmas.split(",")], []
    for sigma in sigmas:
        cfg = OmegaConf.merge(ring_config(), {"vehicle": {"sigma": sigma}})
        traj = twin_ring(cfg)
        share, speeds = jam_figures(traj, cfg.circumference_m, cfg.circumference_m / cfg.segments)
        mean_speed = float(traj.loc[traj["time_s"] >= 300, "speed_mps"].mean())
        twin_kmh.append(_row(f"{sigma:g}", "twin", share, speeds, mean_speed))
        if not args.no_sumo:
            from tests.traffic_sumo.test_ring_sumo import sumo_figures
            with tempfile.TemporaryDirectory() as d:
                _row("", "SUMO", *sumo_figures(Path(d), cfg))
    w = np.asarray(twin_kmh)
    cross = [i for i in range(len(w) - 1) if np.isfinite(w[i:i + 2]).all()
             and (w[i] + SUGIYAMA_KMH) * (w[i + 1] + SUGIYAMA_KMH) <= 0]
    if cross:
        i = cross[0]
        f = (-SUGIYAMA_KMH - w[i]) / (w[i + 1] - w[i]) if w[i + 1] != w[i] else 0.0
        print(f"the twin's wave travels at {SUGIYAMA_KMH:g} km/h at sigma "
              f"{sigmas[i] + f * (sigmas[i + 1] - sigmas[i]):.2f}")
    else:
        print(f"no sigma swept gives {SUGIYAMA_KMH:g} km/h")
    print(f"total {time.perf_counter() - t0:.0f} s; load average {load_avg()}")


if __name__ == "__main__":
    main()
