"""SUMO files of a calibration: ``calibrated.rou.xml`` and ``calibrated.sumocfg`` (which both SUMO and
``scenario=sumo`` load), and SUMO's own counts (edgeData ``entered`` per interval) of any scenario, used to
check a calibrated day in SUMO and to make test and benchmark observations."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from twins.traffic.demand_units import Units, integer_counts


def _fmt(x: float) -> str:
    return f"{float(x):.6g}"


def write_routes(units: Units, x: np.ndarray, path, car_following: str | None = None) -> dict:
    """``path``: the vTypes, then one ``<flow>`` per route and interval with ``number`` whole vehicles departing
    evenly over the interval (SUMO's rule for ``number`` with ``begin``/``end``); the numbers are ``x`` rounded
    cumulatively along each route (:func:`integer_counts`)."""
    from twins.traffic import sumo as ts
    from twins.traffic.demand import Demand

    path = Path(path)
    n = integer_counts(units, x)
    ts.write_routes(Demand(dict(units.vtype_defs), []), path, car_following=car_following)
    head = path.read_text(encoding="utf-8").rstrip().rsplit("</routes>", 1)[0].rstrip("\n")
    lines = []
    for u in np.argsort(units.interval_of, kind="stable"):
        if n[u] <= 0:
            continue
        r, k = int(units.route_of[u]), int(units.interval_of[u])
        b, e = units.intervals[k]
        lines.append(f"    <flow id={quoteattr(f'{units.route_ids[r]}@{k}')} type={quoteattr(units.vtypes[r])} "
                     f"begin=\"{_fmt(b)}\" end=\"{_fmt(e)}\" number=\"{int(n[u])}\">"
                     f"<route edges={quoteattr(' '.join(units.routes[r]))}/></flow>")
    path.write_text(head + "\n" + "\n".join(lines) + ("\n" if lines else "") + "</routes>\n", encoding="utf-8")
    return {"path": str(path), "vehicles": int(n.sum()), "flows": len(lines)}


def write_sumocfg(path, *, net: str, routes: str, additional: list[str], begin: float, end: float) -> Path:
    path = Path(path)
    add = f'\n        <additional-files value={quoteattr(",".join(additional))}/>' if additional else ""
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<configuration>\n    <input>\n'
        f'        <net-file value={quoteattr(str(net))}/>\n        <route-files value={quoteattr(str(routes))}/>{add}\n'
        f'    </input>\n    <time>\n        <begin value="{_fmt(begin)}"/>\n        <end value="{_fmt(end)}"/>\n'
        '    </time>\n</configuration>\n', encoding="utf-8")
    return path


def sumo_counts(scenario, *, seed: int, interval_s: float, begin: float, end: float, routes=None,
                binary: str | None = None, extra_args=(), timeout: float | None = None) -> pd.DataFrame:
    """SUMO's ``entered`` per edge and interval ``[begin + j interval_s, ...)`` for one run (``--seed seed``) of
    ``scenario`` (a .sumocfg, or ``{net, routes, additional}``); ``routes`` replaces its route files.
    Columns ``edge, begin_s, end_s, count`` (every edge and interval, zeros included)."""
    from twins.traffic.sumo_bridge import find_sumo, input_files, read_elements

    exe = binary or find_sumo("sumo")
    if isinstance(scenario, (str, Path)):
        scenario = Path(scenario).resolve()
    cfg, files = input_files(scenario)
    files = {k: [str(Path(v).resolve()) for v in vs] for k, vs in files.items()}
    cfg = Path(cfg).resolve() if cfg is not None else None
    with tempfile.TemporaryDirectory(prefix="twins_counts_") as wd:
        wd = Path(wd)
        add = wd / "edgedata.add.xml"
        out = wd / "edgedata.xml"
        add.write_text(f'<additional><edgeData id="twins_counts" file={quoteattr(str(out))} '
                       f'period="{_fmt(interval_s)}" '
                       f'begin="{_fmt(begin)}" end="{_fmt(end)}" excludeEmpty="false" withInternal="false"/>'
                       '</additional>\n', encoding="utf-8")
        cmd = [exe] + (["-c", str(cfg)] if cfg is not None else ["-n", files["net"][0]])
        given = ([routes] if isinstance(routes, (str, Path)) else routes) if routes else files["routes"]
        route_files = [str(Path(r).resolve()) for r in given]
        if route_files:
            cmd += ["--route-files", ",".join(route_files)]
        cmd += ["--additional-files", ",".join([*files["additional"], str(add)]), "--seed", str(int(seed)),
                "--begin", _fmt(begin), "--end", _fmt(end), "--no-step-log", "true", "--no-warnings", "true",
                *[str(a) for a in extra_args]]
        proc = subprocess.run(cmd, cwd=wd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"SUMO failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        rows = []
        cur = None
        for tag, a in read_elements(out, {"interval", "edge"}):
            if tag == "interval":
                cur = (float(a["begin"]), float(a["end"]))
            elif cur is not None:
                rows.append((a["id"], cur[0], cur[1], int(round(float(a.get("entered", 0))))))
    return pd.DataFrame(rows, columns=["edge", "begin_s", "end_s", "count"])
