"""Issue 18: do the plans a search finds in the twin hold in SUMO? Per RESCO scenario, a search with the README's
defaults (``python -m twins search scenario=sumo scenario.sumocfg=... intervention=signal_timing``: budget 32,
8 replications, objective ``total_delay_veh_h``, the scenario's own plan as trial 0), then ``python -m twins
transfer`` with IDM and Krauss; one markdown table of the twin's predicted effect (the search's objective, mean
delay and RESCO's delay), SUMO's realized effects, their ratio, and the plan's SUMO delay (RESCO's definition)
next to RESCO's published fixed-time and adaptive delays.

    PYTHONPATH=. python benchmarks/bench_transfer.py --out outputs/bench_transfer            # search + transfer
    PYTHONPATH=. python benchmarks/bench_transfer.py --out outputs/bench_transfer --table    # table only
    PYTHONPATH=. python benchmarks/bench_transfer.py --scenarios cologne1 --search "ethics=traffic" ...

The searches and SUMO run with one thread / one process (a shared machine); each scenario's folders are
``OUT/NAME`` (the search folder, with ``transfer.json``) and ``OUT/NAME.{search,transfer}.log``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from _sumo_common import DEFAULT_RESCO, cpu_name, load_avg, resco_cfg

SCENARIOS = ["cologne1", "ingolstadt1", "cologne3", "cologne8"]


def published(resco: Path) -> dict:
    """RESCO's published mean delays from the data folder's README: {scenario: (fixed-time, adaptive A, B)}."""
    out = {}
    try:
        text = (Path(resco) / "README.md").read_text()
    except OSError:
        return out
    part = text[text.find("Published mean delay"):]
    for m in re.finditer(r"^\|\s*(\w+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|", part, re.M):
        out[m.group(1)] = tuple(float(m.group(i)) for i in (2, 3, 4))
    return out


def run(cmd: list[str], log: Path, ok=(0,)) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode not in ok:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def kept_baseline(folder: Path) -> str | None:
    """The search's reason when it recommends the baseline (then there is no plan to transfer)."""
    best = json.loads((folder / "best_policy.json").read_text()) or {}
    return None if best.get("recommendation") == "candidate" else (best.get("reason") or "no feasible candidate")


def f(x, sign=True, digits=3) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{digits}g}" if sign else f"{x:.{digits}g}"


def interval(d: dict | None) -> str:
    if not d or d.get("effect") is None:
        return "n/a"
    return f"{f(d['effect'])} [{f(d.get('ci_low'))}, {f(d.get('ci_high'))}]"


def rows(out: Path, names: list[str], pub: dict) -> list[str]:
    head = ["| scenario | plan (cycle s) | invalid | metric | twin predicted | SUMO IDM | SUMO Krauss | ratio IDM | "
            "ratio Krauss | plan's SUMO delay IDM / Krauss (baseline) | RESCO fixed-time | RESCO adaptive A / B |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines = []
    for name in names:
        man = json.loads((out / name / "manifest.json").read_text())
        inv = man.get("search_summary") or {}
        why = kept_baseline(out / name)
        if why:
            lines.append(f"| {name} | baseline kept | {inv.get('invalid', 'n/a')} of {inv.get('evaluated', 'n/a')} | "
                         f"{why} | | | | | | | | |")
            continue
        t = json.loads((out / name / "transfer.json").read_text())
        cycles = sorted({round(p["cycle_s"], 1) for p in t["plan"]["programs"]})
        base_cycles = sorted({round(p["cycle_s"], 1) for p in t["baseline"]["programs"]})
        rd = t["metrics"]["resco_delay_s"]["realized"]
        delay = " / ".join(f"{rd[m]['plan_mean']:.1f}" for m in ("IDM", "Krauss")) + " (" + " / ".join(
            f"{rd[m]['baseline_mean']:.1f}" for m in ("IDM", "Krauss")) + ")"
        fixed, a, b = pub.get(name, (None, None, None))
        plan = ", ".join(f"{c:g}" for c in cycles) + " (was " + ", ".join(f"{c:g}" for c in base_cycles) + ")"
        best = json.loads((out / name / "best_policy.json").read_text()) or {}
        objective = ((best.get("objectives") or [{}])[0]).get("metric", "mean_delay_s")
        shown = [m for m in dict.fromkeys((objective, "mean_delay_s", "resco_delay_s")) if m in t["metrics"]]
        for k, metric in enumerate(shown):
            m = t["metrics"][metric]
            first = k == 0
            lines.append(
                f"| {name if first else ''} | "
                f"{plan if first else ''} | "
                f"{(str(inv.get('invalid', 'n/a')) + ' of ' + str(inv.get('evaluated', 'n/a'))) if first else ''} | "
                f"{metric} | {interval(m['predicted'])} | {interval(m['realized']['IDM'])} | "
                f"{interval(m['realized']['Krauss'])} | {f(m['ratio'].get('IDM'), False, 2)} | "
                f"{f(m['ratio'].get('Krauss'), False, 2)} | {delay if not first else ''} | "
                f"{(f'{fixed:g}' if fixed is not None else 'n/a') if not first else ''} | "
                f"{(f'{a:g} / {b:g}' if a is not None else 'n/a') if not first else ''} |")
    return head + lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--resco", default=str(DEFAULT_RESCO))
    ap.add_argument("--out", default="outputs/bench_transfer")
    ap.add_argument("--seeds", type=int, default=16,
                    help="SUMO seeds per car-following model (16: each replays one of the search's 16 held-out "
                         "replications, transfer.demand=auto)")
    ap.add_argument("--search", default="", help="extra search overrides, space-separated")
    ap.add_argument("--table", action="store_true", help="only print the table from OUT's folders")
    a = ap.parse_args()
    names = [s for s in a.scenarios.split(",") if s]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_name()}, {os.cpu_count()} CPUs; "
          f"load {load_avg()}")
    if not a.table:
        for name in names:
            cfg = resco_cfg(Path(a.resco), name)
            if not cfg.is_file():
                sys.exit(f"{cfg} does not exist (--resco DIR)")
            s = run([sys.executable, "-m", "twins", "search", "scenario=sumo", f"scenario.sumocfg={cfg}",
                     "intervention=signal_timing", "compute.threads=1", "progress=false", "output.overwrite=true",
                     f"hydra.run.dir={out / name}", *a.search.split()], out / f"{name}.search.log")
            t = run([sys.executable, "-m", "twins", "transfer", str(out / name), f"transfer.seeds={a.seeds}",
                     "transfer.car_following=[IDM,Krauss]", "transfer.jobs=1", "transfer.progress=false"],
                    out / f"{name}.transfer.log", ok=(0, 2) if kept_baseline(out / name) else (0,))
            print(f"# {name}: search {s:.0f} s, transfer {t:.0f} s; load {load_avg()}")
    print("\n".join(rows(out, names, published(Path(a.resco)))))


if __name__ == "__main__":
    main()
