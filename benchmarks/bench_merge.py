"""A side road merging onto a main road, twin against SUMO side by side (rule 10's merges; issue 17).

The scenario of ``tests/traffic_sumo/test_merge.py``: a side road (250 vehicles an hour) joins a main road of one
lane (400 an hour) or three (700 an hour) at a priority junction, its vehicles turning into the main road's right
lane; on three lanes also against SUMO without keep-right lane changes (``lcKeepRight="0"``), as the twin runs
without lane changing here (with it, kernels rule 11 makes them since 6 Dec 2026). Per case and car-following model it prints the side vehicles' mean time loss (timeLoss + departDelay) per SUMO
seed and per twin replication, the means and their ratio: where a rule of rule 10 for merges is missing or wrong,
this ratio shows it (before ``kernels.merge_unsafe``: 0.28-0.62).

    PYTHONPATH=. python benchmarks/bench_merge.py [--seeds 6] [--models IDM,Krauss] [--compile false] [--lane-changing]

About 25 s on 2 cores (the compiled step; ``--compile false`` runs the tensor kernels).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _sumo_common import COMPILE, add_compile_option, cpu_name, load_avg
from tests.traffic_sumo.test_merge import CASES, scenario, sumo_loss, twin_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=6, help="SUMO seeds and twin replications (0..n-1)")
    ap.add_argument("--models", default="IDM,Krauss", help="comma-separated: IDM, Krauss")
    ap.add_argument("--lane-changing", action="store_true",
                    help="the twin with scenario.lane_changing (kernels rule 11: keep-right changes as SUMO's)")
    add_compile_option(ap)
    args = ap.parse_args()
    compile_ = COMPILE[args.compile]
    torch.set_num_threads(1)
    seeds = tuple(range(args.seeds))
    print(f"torch {torch.__version__}, 1 thread; CPU {cpu_name()}; load average {load_avg()}; "
          f"twin lane changing {'on' if args.lane_changing else 'off'}")
    print("side vehicles' mean time loss (s), per SUMO seed / twin replication:")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for lanes, vph in CASES.items():
            sub = Path(d) / f"lanes{lanes}"
            sub.mkdir()
            cfg = scenario(sub, lanes, vph)
            variants = [(cfg, "")]
            if lanes > 1 and not args.lane_changing:  # SUMO's drivers without keep-right changes, as the twin's
                sub = Path(d) / f"lanes{lanes}_nokr"
                sub.mkdir()
                variants.append((scenario(sub, lanes, vph, keep_right=False), ", SUMO lcKeepRight=0"))
            for (case, label), cf in ((v, cf) for v in variants for cf in args.models.split(",")):
                su = [sumo_loss(case, cf, (s,)) for s in seeds]
                tw, kernel = zip(*(twin_loss(case, cf, (s,), compile_, args.lane_changing) for s in seeds))
                print(f"{lanes} lane(s), {vph:.0f} veh/h, {cf}{label}: SUMO {np.mean(su):5.1f} "
                      f"[{' '.join(f'{x:.1f}' for x in su)}]")
                print(f"{'':8}twin {np.mean(tw):5.1f} [{' '.join(f'{x:.1f}' for x in tw)}]  "
                      f"twin/SUMO {np.mean(tw) / np.mean(su):.2f} (kernel {kernel[0]})")
    print(f"total {time.perf_counter() - t0:.0f} s; load average {load_avg()}")


if __name__ == "__main__":
    main()
