"""Calibration to counts (issue 22): a RESCO scenario, counts made by SUMO from a perturbed demand, the
twin's calibration (``python -m twins calibrate``) from the unperturbed file, checked in SUMO on held-out
seeds, side by side with SUMO's own ``routeSampler.py`` on the same counts.

    PYTHONPATH=. python benchmarks/bench_calibration.py                          # cologne8, em and ls
    PYTHONPATH=. python benchmarks/bench_calibration.py --scenario cologne3 --methods em --sigma 0.4

**The truth**: the scenario's own route file with every route's vehicles in every 15-minute interval
thinned or repeated by a factor drawn per route and interval from a lognormal (``--sigma``, 0.5: a
factor between 0.38 and 2.7 for 95 % of them; ``--seed``), repeated vehicles departing 5 s apart within
the interval. **Observed counts**: SUMO's edgeData ``entered`` per edge and 15 minutes (``--interval``) in
one SUMO run of the truth (``--obs-seed``, 1), on every edge that some vehicle entered. **Prior**: the
unperturbed file (what the twin is calibrated from, and routeSampler's candidate routes).

**The twin**: ``python -m twins calibrate scenario=sumo scenario.sumocfg=RESCO/NAME.sumocfg
observed.counts=counts.csv calibrate.method=M compute.threads=1`` (default budget: 4 iterations of 8
worlds, an ensemble of 16), its wall time measured around the subprocess. **routeSampler**:
``routeSampler.py -r ROUTES -d counts.edg.xml --edgedata-attribute entered --optimize full`` with the
prior's routes as candidates (``--optimize full``: its linear program after the sampling), vehicles of the
scenario's vType.

**Checked in SUMO**: each demand (truth, prior, twin's ``calibrated.sumocfg``, routeSampler's routes) runs in
SUMO on held-out seeds (``--heldout``, 11 and 12; none used above); its counts against the observed ones:
share of counts with GEH < 5, mean GEH, total-flow error (simulated total / observed − 1), mean over the
seeds. ``gap closed`` = (prior mean GEH − mean GEH) / (prior mean GEH − truth mean GEH). Route flows:
the Pearson correlation of each route's vehicles per interval with the truth's.

Results: ``--out DIR`` (default ``outputs/bench_calibration/DATE_TIME``) gets ``calibration_bench.json``,
``table.md`` and the calibration folders.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sumo_common import DEFAULT_RESCO, ROOT, cpu_name, load_avg, load_resco, resco_cfg  # noqa: E402

ROUTESAMPLER = "routeSampler.py"


def sumo_tools() -> Path:
    import sumo

    return Path(os.path.dirname(sumo.__file__)) / "tools"


def perturb(sc, sigma: float, seed: int, width: float):
    """The truth: every route's vehicles per interval thinned or repeated by a lognormal factor."""
    from twins.traffic.demand import Demand, Flow

    rng = np.random.default_rng(seed)
    flows = []
    begin = sc.begin
    for f in sc.demand.flows:
        by_k: dict[int, list[float]] = {}
        for t in (f.departures if f.kind == "fixed" else []):
            by_k.setdefault(int((t - begin) // width), []).append(t)
        deps = []
        for k, ts in sorted(by_k.items()):
            fac = rng.lognormal(0.0, sigma)
            end_k = begin + (k + 1) * width
            for t in ts:
                n = int(np.floor(fac)) + int(rng.random() < fac - np.floor(fac))
                deps += [min(t + 5.0 * j, end_k - 1.0) for j in range(n)]
        if deps:
            flows.append(Flow(f.id, list(f.route), 0.0, min(deps), max(deps), "fixed", f.vtype,
                              departures=sorted(deps)))
    return Demand(dict(sc.demand.vtypes), flows)


def counts_xml(counts, path: Path) -> None:
    """The counts as SUMO edgeData (routeSampler's input)."""
    lines = ["<data>"]
    for (b, e), g in counts.groupby(["begin_s", "end_s"]):
        lines.append(f'    <interval id="obs" begin="{b:g}" end="{e:g}">')
        lines += [f'        <edge id="{r.edge}" entered="{int(r.count)}"/>' for r in g.itertuples()]
        lines.append("    </interval>")
    lines.append("</data>")
    path.write_text("\n".join(lines) + "\n")


def heldout(sumocfg, counts, seeds, begin, end, width, routes=None) -> dict:
    from twins.calibration import fit as F
    from twins.calibration.sumo_files import sumo_counts

    m = counts["count"].to_numpy(float)
    per = []
    for s in seeds:
        sc = sumo_counts(sumocfg, seed=s, interval_s=width, begin=begin, end=end, routes=routes)
        key = {(e, b): n for e, b, n in zip(sc["edge"], sc["begin_s"], sc["count"])}
        c = np.array([key.get((e, b), 0) for e, b in zip(counts["edge"], counts["begin_s"])], float)
        per.append(F.stats(m, c))
    keys = ("geh_share_below_5", "mean_geh", "total_flow_error")
    return {**{k: float(np.mean([p[k] for p in per])) for k in keys}, "per_seed": per}


def route_flows(demand, units) -> np.ndarray:
    """Vehicles per unit (route and interval) of ``demand`` on the units of a calibration."""
    from twins.traffic.demand_units import units_of

    u2 = units_of(demand, units.intervals)
    look = {(tuple(u2.routes[u2.route_of[i]]), int(u2.interval_of[i])): u2.prior[i] for i in range(u2.size)}
    return np.array([look.get((tuple(units.routes[units.route_of[i]]), int(units.interval_of[i])), 0.0)
                     for i in range(units.size)])


def _wall(r: dict) -> str:
    return f"{r['wall_s']:.0f} s" if "wall_s" in r else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", default="cologne8")
    ap.add_argument("--resco", default=str(DEFAULT_RESCO))
    ap.add_argument("--methods", default="em,ls")
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--interval", type=float, default=900.0)
    ap.add_argument("--obs-seed", type=int, default=1)
    ap.add_argument("--heldout", default="11,12")
    ap.add_argument("--overrides", default="", help="extra calibrate overrides, space-separated")
    ap.add_argument("--no-routesampler", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    import pandas as pd

    from twins.traffic.demand_units import intervals_of, units_of
    from twins.calibration.sumo_files import sumo_counts, write_sumocfg
    from twins.traffic import sumo as ts

    cfgp = resco_cfg(Path(a.resco), a.scenario)
    if not cfgp.is_file():
        print(f"no {cfgp}: give --resco DIR (the RESCO scenarios)", file=sys.stderr)
        return 2
    out = Path(a.out or ROOT / "outputs" / "bench_calibration" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))
    out.mkdir(parents=True, exist_ok=True)
    sc = load_resco(cfgp)
    begin, end, width = float(sc.begin), float(sc.end), float(a.interval)
    seeds = [int(s) for s in a.heldout.split(",")]
    net = str(Path(sc.files["net"]).resolve())
    truth = perturb(sc, a.sigma, a.seed, width)
    ts.write_routes(truth, out / "truth.rou.xml")
    write_sumocfg(out / "truth.sumocfg", net=net, routes="truth.rou.xml", additional=[], begin=begin, end=end)
    obs = sumo_counts(out / "truth.sumocfg", seed=a.obs_seed, interval_s=width, begin=begin, end=end)
    seen = obs.groupby("edge")["count"].transform("sum") > 0
    obs = obs[seen].reset_index(drop=True)
    obs.to_csv(out / "counts.csv", index=False)
    print(f"{a.scenario}: truth {sum(len(f.departures) for f in truth.flows)} vehicles (prior "
          f"{sum(len(f.departures) for f in sc.demand.flows)}); {len(obs)} counts on {obs['edge'].nunique()} edges, "
          f"total {int(obs['count'].sum())}", flush=True)
    rows = {}
    rows["truth"] = heldout(out / "truth.sumocfg", obs, seeds, begin, end, width)
    rows["prior"] = heldout(cfgp, obs, seeds, begin, end, width)
    units = units_of(sc.demand, intervals_of(begin, end, width))
    x_true = route_flows(truth, units)
    for name in ("truth", "prior"):
        print(f"  {name:<12} GEH<5 {100 * rows[name]['geh_share_below_5']:5.1f}%  mean GEH "
              f"{rows[name]['mean_geh']:.2f}  total {100 * rows[name]['total_flow_error']:+.1f}%", flush=True)
    rows["prior"]["route_corr"] = float(np.corrcoef(x_true, units.prior)[0, 1])
    for method in [m for m in a.methods.split(",") if m]:
        run = out / f"calibrate_{method}"
        cmd = [sys.executable, "-m", "twins", "calibrate", "scenario=sumo", f"scenario.sumocfg={cfgp}",
               f"observed.counts={out / 'counts.csv'}", f"calibrate.method={method}", "compute.threads=1",
               "calibrate.progress=false", f"hydra.run.dir={run}", "output.overwrite=true", *a.overrides.split()]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        rec = json.loads((run / "calibration.json").read_text())
        r = heldout(run / "calibrated.sumocfg", obs, seeds, begin, end, width)
        dem = pd.read_parquet(run / "demand.parquet")
        r.update({"wall_s": wall, "twin_fit": rec["fit"], "ensemble": rec.get("ensemble"),
                  "route_corr": float(np.corrcoef(x_true, dem["vehicles"].to_numpy())[0, 1]),
                  "iterations": len(rec["iterations"]) - 1, "command": " ".join(cmd[1:])})
        rows[f"twin {method}"] = r
        print(f"  twin {method:<7} GEH<5 {100 * r['geh_share_below_5']:5.1f}%  mean GEH {r['mean_geh']:.2f}  total "
              f"{100 * r['total_flow_error']:+.1f}%  routes r={r['route_corr']:.2f}  {wall:.0f} s", flush=True)
    if not a.no_routesampler:
        counts_xml(obs, out / "counts.edg.xml")
        vtypes = out / "vtypes.add.xml"
        ts.write_routes(type(sc.demand)(dict(sc.demand.vtypes), []), vtypes)
        routes = out / "candidate.rou.xml"
        routes.write_text("<routes>\n" + "\n".join(f'    <route id="r{i}" edges="{" ".join(r)}"/>'
                                                   for i, r in enumerate(units.routes)) + "\n</routes>\n")
        vt = next(iter(sc.demand.vtypes))
        rs_out = out / "routesampler.rou.xml"
        cmd = [sys.executable, str(sumo_tools() / ROUTESAMPLER), "-r", str(routes), "-d", str(out / "counts.edg.xml"),
               "--edgedata-attribute", "entered", "-o", str(rs_out), "--optimize", "full", "-s", "1",
               "-a", f'type="{vt}"', "-b", f"{begin:g}", "-e", f"{end:g}"]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stdout[-2000:], p.stderr[-2000:], file=sys.stderr)
            rows["routeSampler"] = {"error": p.stderr[-500:]}
        else:
            r = heldout(cfgp, obs, seeds, begin, end, width, routes=[str(vtypes), str(rs_out)])
            rs_dem = ts.load_routes([str(vtypes), str(rs_out)], sc.network)
            r.update({"wall_s": wall, "route_corr": float(np.corrcoef(x_true, route_flows(rs_dem, units))[0, 1]),
                      "command": " ".join(cmd[1:])})
            rows["routeSampler"] = r
            print(f"  routeSampler GEH<5 {100 * r['geh_share_below_5']:5.1f}%  mean GEH {r['mean_geh']:.2f}  total "
                  f"{100 * r['total_flow_error']:+.1f}%  routes r={r['route_corr']:.2f}  {wall:.0f} s", flush=True)
    gp, gt = rows["prior"]["mean_geh"], rows["truth"]["mean_geh"]
    lines = [f"{a.scenario}, {len(obs)} counts (15 min) from SUMO on a demand perturbed per route and interval "
             f"(lognormal sigma {a.sigma}), SUMO held-out seeds {a.heldout}; {cpu_name()}, load {load_avg()}", "",
             "| demand checked in SUMO | GEH < 5 | mean GEH | gap closed | total flow | route flows r (truth) "
             "| wall time |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed | | | | | |")
            continue
        closed = (gp - r["mean_geh"]) / (gp - gt) if gp != gt else float("nan")
        r["gap_closed"] = closed
        rc = r.get("route_corr")
        lines.append(f"| {name} | {100 * r['geh_share_below_5']:.1f} % | {r['mean_geh']:.2f} | "
                     f"{'' if name in ('truth', 'prior') else f'{100 * closed:.0f} %'} | "
                     f"{100 * r['total_flow_error']:+.1f} % | {'' if rc is None else f'{rc:.2f}'} | "
                     f"{_wall(r)} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    (out / "calibration_bench.json").write_text(json.dumps({"args": vars(a), "rows": rows, "machine": cpu_name(),
                                                            "argv": sys.argv}, indent=1, default=str))
    print("\n" + table)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
