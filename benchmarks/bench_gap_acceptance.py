"""Gap acceptance at a priority junction, twin against SUMO side by side (rule 10; issue 17).

The scenario of ``tests/traffic_sumo/test_gap_acceptance.py``: a minor stream (450 vehicles an hour) crossing a major
one (600 or 900 an hour, random headways) at a four-arm priority junction. Per car-following model and major flow it
prints the minor vehicles' mean time loss (timeLoss + departDelay) in SUMO and in the twin, and how many minor
vehicles enter the junction in each gap between two major vehicles entering it, by the gap's length: where the twin
takes gaps differently from SUMO, this table shows which gaps.

    PYTHONPATH=. python benchmarks/bench_gap_acceptance.py [--flows 600,900] [--models Krauss,IDM] [--compile false]

About 20 s on 2 cores (the compiled step; ``--compile false`` runs the tensor kernels).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from _sumo_common import COMPILE, add_compile_option, cpu_name, load_avg
from tests.traffic_sumo.test_gap_acceptance import GAPS, per_gap, run_sumo, run_twin, scenario


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", default="600,900", help="comma-separated major flows, vehicles an hour")
    ap.add_argument("--models", default="Krauss,IDM", help="comma-separated: Krauss, IDM")
    add_compile_option(ap)
    args = ap.parse_args()
    compile_ = COMPILE[args.compile]
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; CPU {cpu_name()}; load average {load_avg()}")
    print("minor vehicles per gap between two major vehicles entering the junction, by the gap (s):")
    print(f"{'flow':>5} {'model':6} {'side':5} {'loss s':>7} | " + " ".join(f"{g:>5}" for g in GAPS))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        for vph in (float(x) for x in args.flows.split(",")):
            sub = Path(d) / f"major{int(vph)}"
            sub.mkdir()
            cfg = scenario(sub, vph)
            for cf in args.models.split(","):
                su_loss, su_in = run_sumo(cfg, cf)
                tw_loss, tw_in, kernel = run_twin(cfg, cf, compile_)
                for side, loss, ent in (("SUMO", su_loss, su_in), ("twin", tw_loss, tw_in)):
                    row = " ".join(f"{v:5.2f}" for v in per_gap(ent).values())
                    print(f"{vph:5.0f} {cf:6} {side:5} {loss:7.1f} | {row}")
                print(f"{'':19} twin/SUMO loss {tw_loss / su_loss:.2f} (twin kernel {kernel})")
    print(f"total {time.perf_counter() - t0:.0f} s; load average {load_avg()}")


if __name__ == "__main__":
    main()
