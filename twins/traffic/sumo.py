"""SUMO files in, signal plans out.

Reads SUMO's ``.net.xml`` (edges, lanes, connections, junctions, ``tlLogic``),
``.rou.xml`` (``vType``, ``route``, ``vehicle``, ``trip``, ``flow``) and
``.sumocfg`` (input files, begin/end) into :class:`~twins.traffic.network.RoadNetwork`
and :class:`~twins.traffic.demand.Demand`, and writes signal programs back as a
SUMO additional file of ``<tlLogic>`` elements.

Mapping rules
-------------
* Internal edges (id ``:...``) are not edges of the model: the length of the
  internal lane chain a connection runs through (its ``via`` and the ``via`` of
  the internal connections after it) becomes ``Connection.via_length``, and
  the slowest of those lanes' ``speed`` (netconvert's turning speed)
  ``Connection.via_speed``. Where the chain has an internal junction (a left
  turn's waiting point, ``cont="1"``), the first internal lane's length is
  ``Connection.wait_length``; the connection's ``visibility`` (default 4.5 m,
  as in SUMO) is ``Connection.visibility`` (kernels rule 10).
* Only what a passenger car may use is kept: a lane whose ``allow``/``disallow``
  excludes ``passenger`` is dropped (the remaining lanes are re-indexed from 0,
  rightmost first; ``Lane.id`` keeps the SUMO lane id), an edge without such a
  lane is dropped with its connections, and so is a junction left without edges.
* ``tlLogic`` of any type becomes a static program with its phases'
  ``duration``; ``offset`` and ``programID`` are kept. SUMO's cycle position at
  absolute simulation time ``t`` is ``(t - offset) mod cycle`` (independent of
  the simulation's begin time). When a signal has several programs, the last
  one loaded is the one SUMO runs, and the one kept.
* ``vehicle``/``trip`` elements are grouped into ``fixed`` flows, one per
  distinct (route, vType); ``flow`` with ``vehsPerHour``/``period`` is
  ``periodic``, with ``period="exp(x)"`` ``poisson`` at ``3600*x`` veh/h, with
  ``probability`` ``bernoulli``; ``number`` caps the count (alone, with
  begin/end, it spaces vehicles evenly as SUMO does). ``trip``s and flows given
  by ``from``/``to``(``/via``) are routed on the free-flow fastest path.
* A phase's ``minDur``/``maxDur`` are kept (``Phase.min_dur``/``max_dur``: the
  bounds ``signal_timing`` retimes greens within). Crossings are not modelled,
  but the tls link indices that signal them (a walking area's connection onto a
  ``crossing`` edge, ``linkIndex``) are kept as ``SignalProgram.crossing_links``
  (the pedestrian-green gate applies to the phases that show them green).
* Whatever is not modelled (pedestrian, bicycle and rail lanes, crossings,
  walking areas, actuated programs, persons, stops, detectors, car-following
  parameters other than IDM's, ...) is reported by ONE
  :class:`SumoImportWarning` per call that lists each kind with its count.
  Elements that are derived data in SUMO (junction ``request`` matrices,
  ``neigh``, edge ``type`` tables, ``roundabout``, ``location``) are skipped
  without mention.

Parsing is safe: files are read with expat with every DOCTYPE, entity
declaration and external entity refused (SUMO files never need one), and every
error names the file, the line and the element.

Modules: :mod:`.sumo_xml` (the located, safe XML parser and the import report every reader shares),
:mod:`.sumo_net` (networks and ``tlLogic``), :mod:`.sumo_routes` (demand); this one reads ``.sumocfg`` and is
the public API (``from twins.traffic import sumo``: ``sumo.load_net``, ``sumo.load_routes``, ...).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from twins.core.errors import ConfigError
from twins.traffic.demand import Demand, Flow
from twins.traffic.network import RoadNetwork

from .sumo_net import load_net, net_from, read_tllogic, tllogic_from, write_tllogic
from .sumo_routes import CAR_FOLLOWING, DEPART_AS_MAX, DEPART_AVG, DEPART_MAX, load_routes, routes_from, write_routes
from .sumo_xml import Report, SumoImportWarning, check_file, parse, sumo_time

__all__ = [
    "SumoImportWarning", "SumoScenario", "load_sumocfg", "load_net", "load_routes",
    "write_tllogic", "read_tllogic", "write_routes", "sumo_time", "CAR_FOLLOWING", "DEPART_MAX", "DEPART_AVG",
    "DEPART_AS_MAX",
]


# --------------------------------------------------------------------------------------------
# .sumocfg
# --------------------------------------------------------------------------------------------
@dataclass
class SumoScenario:
    """An imported SUMO scenario."""

    network: RoadNetwork
    demand: Demand
    begin: float = 0.0
    end: float | None = None  # None: SUMO runs until every vehicle has arrived
    files: dict = field(default_factory=dict)  # sumocfg, net, routes [..], additional [..]
    ignored: dict = field(default_factory=dict)  # what the import ignored, with counts
    step_length: float = 1.0


# The departSpeed of a route file's vehicles that state none, where the .sumocfg sets no default.departspeed: SUMO
# 1.28's own, "avg" (the lane's mean speed; benchmarks/README.md, "SUMO's departure speed, followed")
DEFAULT_DEPART_SPEED = DEPART_AVG
# time-to-teleport: read by scenarios/sumo.py (kernels rule 12)
_CFG_USED = {"net-file", "route-files", "additional-files", "begin", "end", "step-length", "time-to-teleport",
             "default.departspeed"}
_CFG_SILENT = re.compile(r"(output|log|verbose|no-step-log|no-warnings|duration-log|gui|window|start|quit-on-end|"
                         r"delay|breakpoints|demo|game|tracker|xml-validation|print|save|write|help|version|"
                         r"precision|human-readable|configuration)")


def config_files(value: str, base: Path) -> list[Path]:
    """The files a ``.sumocfg`` option lists (comma- or space-separated), relative to the ``.sumocfg``'s folder."""
    return [base / v if not Path(v).is_absolute() else Path(v) for v in re.split(r"[,\s]+", value.strip()) if v]


def read_sumocfg(path) -> tuple[dict[str, str], Path]:
    path = check_file(path, "sumocfg")
    opts: dict[str, str] = {}

    def start(tag, a, where):
        if "value" in a:
            opts[tag] = a["value"]

    parse(path, start)
    return opts, path


def _skip_before(demand: Demand, begin: float, report: Report) -> Demand:
    """Drop given vehicles that depart before ``begin``: SUMO never inserts them either."""
    flows, skipped = [], 0
    for f in demand.flows:
        if f.kind == "fixed" and f.departures and f.departures[0] < begin:
            keep = [t for t in f.departures if t >= begin]
            skipped += len(f.departures) - len(keep)
            if not keep:
                continue
            f = Flow(**{**f.__dict__, "departures": keep, "begin": keep[0]})
        flows.append(f)
    report.add("vehicles departing before the begin time (SUMO skips them too)", skipped)
    return Demand(demand.vtypes, flows)


def load_sumocfg(path, *, net: str | None = None, routes=None, default_depart_speed: str | None = None) -> SumoScenario:
    """Network, demand, begin and end of a SUMO ``.sumocfg`` (``net``/``routes`` override its files;
    ``default_depart_speed`` its ``default.departspeed``, which is SUMO's "avg" where it states none: the departSpeed
    of the vehicles that state none)."""
    report = Report(str(path))
    opts, path = read_sumocfg(path)
    base = path.parent
    for k in opts:
        if k not in _CFG_USED and not _CFG_SILENT.search(k):
            report.add(f"sumocfg option {k}={opts[k]}")
    net_file = Path(net) if net else (config_files(opts["net-file"], base)[0] if "net-file" in opts else None)
    if net_file is None:
        raise ConfigError("net-file", None, "a net-file in the .sumocfg", f"{path} names no net-file.")
    route_files = ([Path(r) for r in ([routes] if isinstance(routes, (str, Path)) else routes)] if routes
                   else config_files(opts.get("route-files", ""), base))
    add_files = config_files(opts.get("additional-files", ""), base)
    begin = sumo_time(opts.get("begin", "0"), "begin")
    end = sumo_time(opts["end"], "end") if "end" in opts and float(sumo_time(opts["end"], "end")) >= 0 else None
    step = sumo_time(opts.get("step-length", "1"), "step-length")
    network = net_from(net_file, report)
    for af in add_files:
        progs = tllogic_from(af, report)
        for pid, prog in progs.items():
            if pid not in network.programs:
                raise ConfigError(f"tlLogic[{pid}]", pid, "a signal of the network", f"In {af}.")
            if prog.n_links != network.programs[pid].n_links:
                raise ConfigError(f"tlLogic[{pid}].state", prog.phases[0].state,
                                  f"{network.programs[pid].n_links} links like the net's program", f"In {af}.")
            prog.crossing_links = network.programs[pid].crossing_links  # the same links: the net says which
            network.programs[pid] = prog
    dspeed = default_depart_speed or opts.get("default.departspeed", DEFAULT_DEPART_SPEED)
    demand = routes_from(route_files, network, report, begin, dspeed) if route_files else Demand(flows=[])
    demand = _skip_before(demand, begin, report)
    report.emit()
    return SumoScenario(network=network, demand=demand, begin=begin, end=end,
                        files={"sumocfg": str(path), "net": str(net_file), "routes": [str(r) for r in route_files],
                               "additional": [str(a) for a in add_files]},
                        ignored=dict(report.counts), step_length=step)
