"""SUMO demand: ``.rou.xml`` in (``vType``, ``route``, ``vehicle``, ``trip``, ``flow``) and out. The mapping rules
are stated in :mod:`twins.traffic.sumo`.

Length: the reader of every route-file element with SUMO's defaults and checks, and its writers (a demand as
flows, one world's drawn vehicles for ``transfer``); one reason to change: SUMO's route-file format.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from xml.sax.saxutils import quoteattr

import networkx as nx

from twins.core.errors import ConfigError
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.network import RoadNetwork

from .sumo_net import NON_CAR, fmt
from .sumo_xml import Report, Where, check_file, num, parse, sumo_time

# --------------------------------------------------------------------------------------------
# demand
# --------------------------------------------------------------------------------------------
# SUMO's vClass defaults (length m, accel, decel m/s², maxSpeed m/s), sumo.dlr.de "Vehicle Type Parameter Defaults"
_VCLASS = {
    "passenger": (5.0, 2.6, 4.5, 55.56), "private": (5.0, 2.6, 4.5, 55.56), "taxi": (5.0, 2.6, 4.5, 55.56),
    "evehicle": (5.0, 2.6, 4.5, 55.56), "hov": (5.0, 2.6, 4.5, 55.56), "custom1": (5.0, 2.6, 4.5, 55.56),
    "custom2": (5.0, 2.6, 4.5, 55.56), "vip": (5.0, 2.6, 4.5, 55.56), "army": (5.0, 2.6, 4.5, 55.56),
    "authority": (5.0, 2.6, 4.5, 55.56), "emergency": (6.5, 2.6, 4.5, 55.56), "delivery": (6.5, 2.6, 4.5, 55.56),
    "bus": (12.0, 1.2, 4.0, 27.78), "coach": (14.0, 2.0, 4.0, 27.78), "truck": (7.1, 1.3, 4.0, 36.11),
    "trailer": (16.5, 1.1, 4.0, 36.11), "motorcycle": (2.2, 6.0, 10.0, 55.56), "moped": (2.1, 1.1, 7.0, 12.5),
}
_COSMETIC_VTYPE = {"id", "vClass", "color", "guiShape", "imgFile", "width", "height", "osgFile", "emissionClass",
                   "personCapacity", "containerCapacity", "boardingDuration", "loadingDuration", "probability",
                   "mass", "manoeuverAngleTimes", "parkingBadges", "desiredMaxSpeed"}
_MODELED_VTYPE = {"length", "minGap", "accel", "decel", "maxSpeed", "tau", "speedFactor", "speedDev", "delta",
                  "carFollowModel", "sigma"}
CAR_FOLLOWING = ("IDM", "Krauss")  # SUMO models the twin runs (kernels rule 9)
# SUMO's departSpeed names: as fast as safe; the lane's mean speed (kernels rule 3); read as "max" and reported
DEPART_MAX, DEPART_AVG, DEPART_AS_MAX = ("max", "desired", "speedLimit"), "avg", ("random", "last")
_DIST = re.compile(r"^\s*(norm|normc|lognorm|uniform)\s*\(([^)]*)\)\s*$")
_VEHICLE_MODELED = {"id", "type", "route", "depart", "from", "to", "via", "color", "begin", "end", "vehsPerHour",
                    "period", "probability", "number", "line", "insertionChecks", "departSpeed",
                    "arrival"}  # 'arrival' is a recorded output value that SUMO itself ignores


def _speed_factor(v: str, where: Where, tid: str) -> tuple[float, float | None]:
    try:
        return float(v), None
    except ValueError:
        pass
    m = _DIST.match(v)
    if m:
        args = [float(x) for x in m.group(2).split(",")]
        if m.group(1) == "uniform":
            lo, hi = args[0], args[1]
            return (lo + hi) / 2, (hi - lo) / math.sqrt(12)
        return args[0], (args[1] if len(args) > 1 else 0.0)
    raise where.error(f"vType[{tid}].speedFactor", v, "a number or norm(mean,dev)/normc(mean,dev,min,max)")


class _RouteReader:
    """Shared state over the route files of one scenario."""

    def __init__(self, network: RoadNetwork, report: Report, begin: float = 0.0, default_depart_speed: str = DEPART_AVG):
        self.net = network
        self.report = report
        self.begin = begin
        self.default_depart_speed = default_depart_speed  # SUMO's --default.departspeed
        self.vtypes: dict[str, VehicleType] = {}
        self.vtype_alias: dict[str, str] = {}  # vTypeDistribution id -> chosen member
        self.skip_vtypes: set[str] = set()
        self.routes: dict[str, list[str]] = {}
        self.groups: dict[tuple[tuple[str, ...], str], tuple[str, list[float]]] = {}
        self.flows: list[Flow] = []
        self._graph: nx.DiGraph | None = None
        self._paths: dict[str, dict[str, list[str]]] = {}
        self._links = {(c.from_edge, c.to_edge) for c in network.connections}
        self.dropped_edges = getattr(network, "sumo_dropped_edges", set())
        # element being read
        self.cur: dict | None = None
        self.dist: dict | None = None
        self.vdist: dict | None = None
        self.last_vtype: str | None = None

    # --- helpers ------------------------------------------------------------------------------
    def graph(self) -> nx.DiGraph:
        if self._graph is None:
            self._graph = self.net.graph()
        return self._graph

    def route_between(self, frm: str, to: str, via: list[str], where: Where, owner: str) -> list[str]:
        stops = [frm, *via, to]
        for e in stops:
            self.edge_ok(e, where, owner)
        route = [frm]
        for a, b in zip(stops, stops[1:]):
            if a == b and len(stops) == 2:
                break
            if a not in self._paths:
                _, paths = nx.single_source_dijkstra(self.graph(), a, weight="weight")
                self._paths[a] = paths
            p = self._paths[a].get(b)
            if p is None:
                raise where.error(f"{owner}.to", f"{a}->{b}", "a pair of edges joined by connections",
                                  "No path exists for a passenger car between these edges.")
            route.extend(p[1:])
        return route

    def edge_ok(self, e: str, where: Where, owner: str) -> None:
        if e in self.net.edges:
            return
        if e in self.dropped_edges:
            raise _NonCarRoute(e)
        raise where.error(f"{owner}.route", e, "edges that exist in the network",
                          f"Edge {e!r} is not in network {self.net.name!r}.")

    def check_route(self, edges: list[str], where: Where, owner: str) -> list[str]:
        if not edges:
            raise where.error(f"{owner}.route", "", "a non-empty list of edges")
        for e in edges:
            self.edge_ok(e, where, owner)
        for a, b in zip(edges, edges[1:]):
            if (a, b) not in self._links:
                raise where.error(f"{owner}.route", f"{a} {b}", "consecutive edges joined by a connection",
                                  f"No connection from {a!r} to {b!r}.")
        return edges

    def vtype_of(self, a: dict, where: Where, owner: str) -> str | None:
        t = a.get("type", "DEFAULT_VEHTYPE")
        t = self.vtype_alias.get(t, t)
        if t in self.skip_vtypes:
            return None
        if t not in self.vtypes:
            if t == "DEFAULT_VEHTYPE":
                self.vtypes[t] = VehicleType(id=t, max_speed=55.56)
            else:
                raise where.error(f"{owner}.type", t, "a vType defined before it is used",
                                  f"Known: {', '.join(sorted(self.vtypes)) or 'none'}.")
        return t

    # --- element handlers -----------------------------------------------------------------
    def vtype(self, a: dict, where: Where) -> None:
        tid = a.get("id")
        if not tid:
            raise where.error("vType.id", None, "an id")
        self.last_vtype = tid
        vclass = a.get("vClass", "passenger")
        if self.vdist is not None:
            self.vdist["members"].append((tid, float(a.get("probability", 1.0))))
        if vclass in NON_CAR or vclass.startswith("rail"):
            self.skip_vtypes.add(tid)
            self.report.add(f"vTypes of vClass {vclass} (their vehicles are not loaded)")
            return
        if vclass not in ("passenger", "private"):
            self.report.add(f"vTypes of vClass {vclass} (run as cars with their length/accel/decel/maxSpeed)")
        length, accel, decel, vmax = _VCLASS.get(vclass, _VCLASS["passenger"])
        f = lambda k, d: num(where, a, k, d, tag=f"vType[{tid}]")  # noqa: E731
        sf, sdev = _speed_factor(a.get("speedFactor", "1.0"), where, tid)
        vt = VehicleType(id=tid, length=f("length", length), min_gap=f("minGap", 2.5), accel=f("accel", accel),
                         decel=f("decel", decel), max_speed=f("maxSpeed", vmax), tau=f("tau", 1.0),
                         delta=f("delta", 4.0), speed_factor=sf,
                         speed_dev=f("speedDev", sdev if sdev is not None else 0.1), sigma=f("sigma", 0.5),
                         car_following=a.get("carFollowModel"))
        try:
            vt.validate()
        except ConfigError as e:
            raise where.error(e.field, e.value, e.valid) from None
        cfm = a.get("carFollowModel")
        if cfm is not None and cfm not in CAR_FOLLOWING:
            self.report.add(f"vTypes with carFollowModel={cfm} (run with scenario.car_following)")
        for k in a:
            if k not in _MODELED_VTYPE and k not in _COSMETIC_VTYPE:
                self.report.add(f"vType attribute {k}")
        self.vtypes[tid] = vt

    def start(self, tag: str, a: dict, where: Where) -> None:
        parent = where.stack[-2] if len(where.stack) > 1 else ""
        if tag == "routes":
            return
        if tag == "vType":
            self.vtype(a, where)
        elif tag.startswith("carFollowing-"):
            model = tag.split("-", 1)[1]
            if model not in CAR_FOLLOWING:
                self.report.add(f"vTypes with carFollowModel={model} (run with scenario.car_following)")
            elif parent == "vType" and self.last_vtype in self.vtypes:
                vt = self.vtypes[self.last_vtype]
                vt.car_following = model
                for k, name in (("accel", "accel"), ("decel", "decel"), ("tau", "tau"), ("delta", "delta"),
                                ("minGap", "min_gap"), ("sigma", "sigma")):
                    if k in a:
                        setattr(vt, name, float(a[k]))
        elif tag == "vTypeDistribution":
            self.vdist = {"id": a.get("id"), "members": []}
            if "vTypes" in a:
                probs = [float(x) for x in a.get("probabilities", "").split()] or None
                for i, t in enumerate(a["vTypes"].split()):
                    self.vdist["members"].append((t, probs[i] if probs else 1.0))
        elif tag == "route":
            edges = a.get("edges", "").split()
            if parent in ("vehicle", "flow") and self.cur is not None:
                self.cur["edges"] = edges
                self.cur["route_where"] = (where.line, list(where.stack))
            elif parent == "routeDistribution" and self.dist is not None:
                if a.get("refId"):
                    edges = self.routes.get(a["refId"], [])
                elif a.get("id"):
                    self.routes[a["id"]] = edges
                self.dist["members"].append((edges, float(a.get("probability", 1.0))))
            elif a.get("refId") and self.dist is not None:
                self.dist["members"].append((self.routes.get(a["refId"], []), float(a.get("probability", 1.0))))
            else:
                rid = a.get("id")
                if not rid:
                    raise where.error("route.id", None, "an id for a route defined outside a vehicle")
                self.routes[rid] = edges
            if "repeat" in a:
                self.report.add("route 'repeat' attributes")
        elif tag == "routeDistribution":
            self.dist = {"id": a.get("id"), "members": [], "in_vehicle": parent in ("vehicle", "flow")}
        elif tag in ("vehicle", "trip", "flow"):
            self.cur = {"tag": tag, "a": a, "line": where.line}
            extra = [k for k in a if k not in _VEHICLE_MODELED]
            for k in extra:
                self.report.add(f"{tag} attribute {k}")
        elif tag in ("stop", "param") and parent in ("vehicle", "trip", "flow", "route", "vType"):
            self.report.add(f"<{tag}> of <{parent}>")
        elif tag in ("person", "personFlow", "container", "containerFlow"):
            self.report.add(f"<{tag}> elements")
        elif parent in ("person", "personFlow", "container", "containerFlow") or "person" in where.stack \
                or "personFlow" in where.stack or "container" in where.stack:
            pass
        else:
            self.report.add(f"<{tag}> elements")

    def end(self, tag: str, where: Where) -> None:
        if tag == "routeDistribution" and self.dist is not None:
            d, self.dist = self.dist, None
            if not d["members"]:
                raise where.error(f"routeDistribution[{d['id']}]", "", "at least one route")
            best = max(d["members"], key=lambda m: m[1])[0]
            if len(d["members"]) > 1:
                self.report.add("routeDistributions (the most probable route is used)")
            if d["in_vehicle"] and self.cur is not None:
                self.cur["edges"] = best
            elif d["id"]:
                self.routes[d["id"]] = best
        elif tag == "vTypeDistribution" and self.vdist is not None:
            d, self.vdist = self.vdist, None
            if d["members"]:
                best = max(d["members"], key=lambda m: m[1])[0]
                self.vtype_alias[d["id"]] = best
                if len(d["members"]) > 1:
                    self.report.add("vTypeDistributions (the most probable vType is used)")
        elif tag in ("vehicle", "trip", "flow") and self.cur is not None:
            cur, self.cur = self.cur, None
            try:
                self.finish(cur, where)
            except _NonCarRoute as e:
                self.report.add(f"{tag}s over edges closed to passenger cars (e.g. {e.args[0]!r})")

    def finish(self, cur: dict, where: Where) -> None:
        tag, a = cur["tag"], cur["a"]
        vid = a.get("id", "")
        owner = f"{tag}[{vid}]"
        w = Where(where.path)
        w.line, w.stack = cur["line"], [tag]
        vt = self.vtype_of(a, w, owner)
        if vt is None:
            return
        # route
        if "edges" in cur:
            wr = w
            if "route_where" in cur:  # errors point at the embedded <route>
                wr = Where(where.path)
                wr.line, wr.stack = cur["route_where"]
            route = self.check_route(cur["edges"], wr, owner)
        elif "route" in a:
            rid = a["route"]
            if rid not in self.routes:
                raise w.error(f"{owner}.route", rid, "the id of a route defined before it",
                              f"Known routes: {len(self.routes)}.")
            route = self.check_route(self.routes[rid], w, owner)
        elif "from" in a or "to" in a:
            cur["trip"] = True  # SUMO routes it at insertion (twins.traffic.routing)
            if "from" not in a or "to" not in a:
                raise w.error(f"{owner}.from/to", (a.get("from"), a.get("to")), "both from and to edges")
            route = self.route_between(a["from"], a["to"], a.get("via", "").split(), w, owner)
        elif any(k in a for k in ("fromJunction", "toJunction", "fromTaz", "toTaz", "fromXY", "toXY",
                                  "fromLonLat", "toLonLat")):
            self.report.add(f"{tag}s given by junctions, TAZ or coordinates")
            return
        else:
            raise w.error(f"{owner}.route", None, "a route id, an embedded <route>, or from/to edges")
        dspeed, trip = self.depart_speed(a, w, owner), bool(cur.get("trip"))
        if tag == "flow":
            self.flows.append(self.make_flow(a, route, vt, w, owner))
            self.flows[-1].depart_speed, self.flows[-1].reroute = dspeed, trip
            return
        dep = a.get("depart", "0")
        try:
            t = sumo_time(dep, f"{owner}.depart")
        except ConfigError:
            if dep == "begin":
                t = self.begin
            else:
                self.report.add(f"vehicles with depart={dep!r}")
                return
        if t < 0:
            raise w.error(f"{owner}.depart", dep, "a time >= 0")
        key = (tuple(route), vt, dspeed, trip)
        if key not in self.groups:
            self.groups[key] = (vid, [])
        self.groups[key][1].append(t)

    def depart_speed(self, a: dict, w: Where, owner: str) -> float | str | None:
        """SUMO's ``departSpeed`` (where the file states none, the reader's ``default_depart_speed``, SUMO's
        ``--default.departspeed``): a number, None for "max", "desired" and "speedLimit" (as fast as safe, up to the
        driver's desired speed), "avg" (the lane's mean speed, kernels rule 3); "random" and "last" are read as
        "max" and reported."""
        v = a.get("departSpeed", self.default_depart_speed).strip()
        if v in DEPART_MAX:
            return None
        if v == DEPART_AVG:
            return DEPART_AVG
        if v in DEPART_AS_MAX:
            self.report.add(f"departSpeed=\"{v}\" (inserted as fast as safe, as \"max\")")
            return None
        try:
            x = float(v)
        except ValueError:
            raise w.error(f"{owner}.departSpeed" if "departSpeed" in a else "default.departspeed", v,
                          "a speed >= 0 m/s, or max, desired, speedLimit, random, avg, last") from None
        if not (math.isfinite(x) and x >= 0):
            raise w.error(f"{owner}.departSpeed", v, "a speed >= 0 m/s")
        return x

    def make_flow(self, a: dict, route: list[str], vt: str, w: Where, owner: str) -> Flow:
        begin = sumo_time(a.get("begin", "0"), f"{owner}.begin") if a.get("begin") != "begin" else self.begin
        number = int(a["number"]) if "number" in a else None
        end = sumo_time(a["end"], f"{owner}.end") if "end" in a else None
        if number is not None and number < 0:
            raise w.error(f"{owner}.number", number, "a count >= 0")
        if "vehsPerHour" in a:
            kind, rate = "periodic", num(w, a, "vehsPerHour", tag=owner)
        elif "period" in a:
            p = a["period"].strip()
            m = re.match(r"^exp\(\s*([^)]+)\)$", p)
            if m:
                kind, rate = "poisson", 3600.0 * float(m.group(1))
            else:
                per = sumo_time(p, f"{owner}.period")
                if per <= 0:
                    raise w.error(f"{owner}.period", p, "a period > 0 seconds")
                kind, rate = "periodic", 3600.0 / per
        elif "probability" in a:
            prob = num(w, a, "probability", tag=owner)
            if not 0 <= prob <= 1:
                raise w.error(f"{owner}.probability", prob, "a probability in [0, 1]")
            kind, rate = "bernoulli", 3600.0 * prob
        elif number is not None:
            if end is None:
                raise w.error(f"{owner}.end", None, "an end time when only number is given")
            kind, rate = "periodic", (number * 3600.0 / (end - begin)) if end > begin else 0.0
        else:
            raise w.error(f"{owner}", "", "one of vehsPerHour, period, probability or number")
        if end is None:
            if number is not None and rate > 0:
                end = begin + number * 3600.0 / rate + 1.0
            else:
                end = begin + 86400.0  # SUMO's default: 24 hours
        if rate < 0:
            raise w.error(f"{owner}.rate", rate, "a flow >= 0 veh/h")
        if end < begin:
            raise w.error(f"{owner}.end", end, f">= begin ({begin})")
        return Flow(id=a.get("id", f"flow{len(self.flows)}"), route=list(route), rate=rate, begin=begin,
                    end=end, kind=kind, vtype=vt, number=number)

    def demand(self) -> Demand:
        flows = []
        for (route, vt, dspeed, trip), (vid, deps) in self.groups.items():
            deps = sorted(deps)
            fid = vid if len(deps) == 1 else f"{vid}+{len(deps) - 1}"
            flows.append(Flow(id=fid, route=list(route), rate=0.0, begin=deps[0], end=deps[-1], kind="fixed",
                              vtype=vt, departures=deps, depart_speed=dspeed, reroute=trip))
        # file order of first appearance is kept within each kind; explicit flows after grouped vehicles
        flows.extend(self.flows)
        used = {f.vtype for f in flows}
        vtypes = {k: v for k, v in self.vtypes.items()}
        if not vtypes:
            vtypes = {"DEFAULT_VEHTYPE": VehicleType(id="DEFAULT_VEHTYPE", max_speed=55.56)}
        assert used <= set(vtypes)
        return Demand(vtypes=vtypes, flows=flows)


class _NonCarRoute(Exception):
    pass


def routes_from(paths, network: RoadNetwork, report: Report, begin: float = 0.0,
                default_depart_speed: str = DEPART_AVG) -> Demand:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    reader = _RouteReader(network, report, begin, default_depart_speed)
    for p in paths:
        p = check_file(p, "route-files")
        parse(p, reader.start, reader.end)
    d = reader.demand()
    d.validate(network.edges)
    return d


def load_routes(path, network: RoadNetwork, *, begin: float = 0.0, default_depart_speed: str = DEPART_AVG) -> Demand:
    """Demand of one or several SUMO route files (later files see earlier files' vTypes and routes);
    ``default_depart_speed``: the ``departSpeed`` of vehicles that state none (SUMO's ``--default.departspeed``)."""
    report = Report(str(path) if isinstance(path, (str, Path)) else ", ".join(map(str, path)))
    d = routes_from(path, network, report, begin, default_depart_speed)
    report.emit()
    return d


def write_routes(demand: Demand, path, car_following: str | None = None) -> Path:
    """Demand as a SUMO route file (``fixed`` flows as vehicles, the others as ``<flow>``). A vType states
    ``carFollowModel`` when one is known: ``car_following`` (the model the twin runs), else the type's own; else
    none (SUMO then runs ``--default.carfollowmodel``, Krauss unless set)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>"]
    out += [_vtype_element(vt, car_following) for vt in demand.vtypes.values()]
    vehicles = []
    flows = []
    for f in demand.flows:
        if f.kind == "fixed":
            vehicles += [(t, _vehicle_element(f, f"{f.id}.{k}", t, trip=False))
                         for k, t in enumerate(sorted(f.departures))]
            continue
        edges = " ".join(f.route)
        for j, (b, e, r) in enumerate(f.segments()):
            fid = f.id if len(f.segments()) == 1 else f"{f.id}.{j}"
            if f.kind == "poisson":
                rate = f"period=\"exp({fmt(r / 3600.0)})\""
            elif f.kind == "periodic":
                rate = f"vehsPerHour=\"{fmt(r)}\""
            else:
                rate = f"probability=\"{fmt(r / 3600.0)}\""
            num = f" number=\"{f.number}\"" if f.number is not None else ""
            flows.append((b, f"    <flow id={quoteattr(fid)} type={quoteattr(f.vtype)} begin=\"{fmt(b)}\" "
                             f"end=\"{fmt(e)}\" {rate}{num}{_depart_speed(f)}><route edges={quoteattr(edges)}/></flow>"))
    # SUMO wants vehicles sorted by departure
    for _, line in sorted(vehicles + flows, key=lambda x: x[0]):
        out.append(line)
    out.append("</routes>")
    path = Path(path)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def write_drawn_routes(demand: Demand, flow, index_in_flow, depart, path, *, vtype_elements: list[str] = (),
                       car_following: str | None = None) -> Path:
    """One world's vehicles as the twin drew them, as a SUMO route file: slot ``j`` (``flow[j] >= 0``) is vehicle
    ``FLOW.k`` (``k = index_in_flow[j]``) of ``demand.flows[flow[j]]``, departing at ``depart[j]`` (seconds), on the
    flow's route (a ``<trip>`` from its first to its last edge when it is routed at insertion, as the twin routes
    it) with its ``departSpeed``. ``vtype_elements``: ``<vType>`` elements to write as they are (the source route
    files', :func:`vtype_elements`); the flows' types not among them are written from ``demand.vtypes``."""
    written = {_element_id(e) for e in vtype_elements}
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>", *("    " + e for e in vtype_elements)]
    out += [_vtype_element(vt, car_following) for vid, vt in demand.vtypes.items() if vid not in written]
    rows = sorted((float(t), int(f), int(k)) for f, k, t in zip(flow, index_in_flow, depart)
                  if int(f) >= 0 and math.isfinite(float(t)))
    for t, f, k in rows:
        fl = demand.flows[f]
        out.append(_vehicle_element(fl, f"{fl.id}.{k}", t, trip=fl.reroute))
    out.append("</routes>")
    path = Path(path)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def vtype_elements(paths) -> list[str]:
    """The ``<vType>`` and ``<vTypeDistribution>`` elements of SUMO route files, as XML text (children kept)."""
    import gzip
    import xml.etree.ElementTree as ET

    out = []
    for p in paths:
        p = Path(p)
        with (gzip.open(p) if p.suffix == ".gz" else open(p, "rb")) as fh:
            depth = 0
            for event, el in ET.iterparse(fh, events=("start", "end")):
                if event == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth == 1:  # a child of <routes>
                    if el.tag in ("vType", "vTypeDistribution"):
                        el.tail = None
                        out.append(ET.tostring(el, encoding="unicode").strip())
                    el.clear()
    return out


def _element_id(xml: str) -> str | None:
    m = re.search(r'\bid="([^"]*)"', xml)
    return m.group(1) if m else None


def _vtype_element(vt: VehicleType, car_following: str | None) -> str:
    cfm = car_following or vt.car_following
    cfm = f" carFollowModel=\"{cfm}\"" if cfm else ""
    return (f"    <vType id={quoteattr(vt.id)} length=\"{fmt(vt.length)}\" minGap=\"{fmt(vt.min_gap)}\" "
            f"accel=\"{fmt(vt.accel)}\" decel=\"{fmt(vt.decel)}\" maxSpeed=\"{fmt(vt.max_speed)}\" "
            f"tau=\"{fmt(vt.tau)}\" speedFactor=\"{fmt(vt.speed_factor)}\" speedDev=\"{fmt(vt.speed_dev)}\" "
            f"delta=\"{fmt(vt.delta)}\" sigma=\"{fmt(vt.sigma)}\"{cfm}/>")


def _depart_speed(f: Flow) -> str:
    """The twin's insertion speed, stated (SUMO's default would be its --default.departspeed)."""
    dsp = "max" if f.depart_speed is None else f.depart_speed if isinstance(f.depart_speed, str) else fmt(f.depart_speed)
    return f' departSpeed="{dsp}"'


def _vehicle_element(f: Flow, vid: str, t: float, *, trip: bool) -> str:
    head = f"    <{'trip' if trip else 'vehicle'} id={quoteattr(vid)} type={quoteattr(f.vtype)} depart=\"{fmt(t)}\""
    if trip:
        return f"{head}{_depart_speed(f)} from={quoteattr(f.route[0])} to={quoteattr(f.route[-1])}/>"
    return f"{head}{_depart_speed(f)}><route edges={quoteattr(' '.join(f.route))}/></vehicle>"
