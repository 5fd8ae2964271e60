"""Issue 20 item 1, the CPU side of the decision: one traffic step source for CPU and GPU. Side by side on the same
twin state (benchmarks/bench_traffic.py's grid, one world loaded to --target vehicles): the compiled C++ step
(twins.traffic.native, the CPU default today), the tensor kernels with index subsets (eager), the tensor kernels in
their fixed-shape mode (eager; CUDA's default), and that fixed-shape step compiled whole by inductor
(``torch.compile(kernels.step, fullgraph=True, dynamic=False)``: the option (b) of the issue; static shapes, as the
fixed-shape windows come in a few sizes). Prints ms/step, the
compile time and whether every state column is bit-identical to the C++ step's after the timed steps.

    python benchmarks/bench_step_engines.py --target 5000 --steps 100 --threads 1
"""
from __future__ import annotations

import argparse
import time

import torch

from twins.traffic import kernels

from bench_traffic import build


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=int, default=5000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-inductor", action="store_true", help="skip the compiled variant (its compile takes ~1 min)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = build(1, "cpu", torch.float32, a.target, compile=None)
    while int(base.count(kernels.RUNNING).min()) < a.target:
        base.step()
    load_steps = base.step_index
    print(f"1 world, {int(base.count(kernels.RUNNING)[0])} vehicles running at t={base.time_s:.0f} s; "
          f"{a.steps} steps; {torch.get_num_threads()} thread(s); torch {torch.__version__}")
    variants = [("C++ step (native)", dict(native=True)), ("tensor, index subsets", dict()),
                ("tensor, fixed shape", dict(fixed=True))]
    if not a.no_inductor:
        variants.append(("tensor, fixed shape, inductor", dict(fixed=True, inductor=True)))
    ref = None
    eager_step = kernels.step
    for name, v in variants:
        if v.get("native"):
            tw = base
        else:  # the same twin on the tensor kernels, stepped to the same state (the engines agree bit for bit)
            tw = build(1, "cpu", torch.float32, a.target, compile=False)
            tw.fixed_shape = bool(v.get("fixed"))
            while tw.step_index < load_steps:
                tw.step()
        if v.get("inductor"):
            kernels.step = torch.compile(eager_step, fullgraph=True, dynamic=False)
        t0 = time.perf_counter()
        tw.step()  # untimed: the first (compiling) steps
        tw.step()
        compile_s = time.perf_counter() - t0 if v.get("inductor") else 0.0
        t0 = time.perf_counter()
        for _ in range(a.steps):
            tw.step()
        ms = (time.perf_counter() - t0) / a.steps * 1e3
        kernels.step = eager_step
        cols = tw.state.columns()
        if ref is None:
            ref, ref_steps = cols, tw.step_index
            same = "reference"
        else:
            same = "bit-identical" if tw.step_index == ref_steps and all(
                torch.equal(c, ref[k]) for k, c in cols.items()) else "DIFFERENT"
        extra = f"  (compile {compile_s:.1f} s, 2 steps not timed)" if compile_s else ""
        print(f"{name:32s} {ms:7.2f} ms/step  {same}{extra}")


if __name__ == "__main__":
    main()
