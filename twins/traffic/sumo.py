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

Length (debt, issue 21): the four SUMO file formats (net, routes, ``tlLogic`` additional, ``.sumocfg``)
share one located-XML parser and one import report, kept private here; a split needs those made public first.
"""
from __future__ import annotations

import gzip
import math
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable
from xml.parsers import expat
from xml.sax.saxutils import quoteattr

import networkx as nx

from twins.core.errors import ConfigError
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.network import VALID_STATE, Connection, Edge, Junction, Lane, Phase, RoadNetwork, SignalProgram

__all__ = [
    "SumoImportWarning", "SumoScenario", "load_sumocfg", "load_net", "load_routes",
    "write_tllogic", "read_tllogic", "write_routes", "sumo_time",
]


class SumoImportWarning(UserWarning):
    """SUMO input the twin does not model was ignored (the message lists it with counts)."""


# --------------------------------------------------------------------------------------------
# safe streaming parser
# --------------------------------------------------------------------------------------------
class _Refused(Exception):
    pass


class _Where:
    """Where the parser is: file, line, current element (for error messages)."""

    def __init__(self, path: Path):
        self.path = path
        self.line = 0
        self.stack: list[str] = []

    def __str__(self) -> str:
        el = f", in <{self.stack[-1]}>" if self.stack else ""
        return f"{self.path}, line {self.line}{el}"

    def error(self, field: str, value, valid: str, hint: str | None = None) -> ConfigError:
        h = f"At {self}."
        return ConfigError(field, value, valid, f"{h} {hint}" if hint else h)


def _check_file(path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(what, str(p), "an existing SUMO file",
                          f"No file at {p.resolve()}. Check the path (relative paths in a .sumocfg are "
                          "relative to the .sumocfg's folder) or pass the file explicitly.")
    return p


def _parse(path: Path, start: Callable, end: Callable | None = None) -> _Where:
    """Stream ``path`` through expat; ``start(tag, attrs, where)`` / ``end(tag, where)``."""
    where = _Where(path)
    p = expat.ParserCreate()
    try:
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    except AttributeError:  # pragma: no cover
        pass

    def refuse_doctype(name, *_):
        where.line = p.CurrentLineNumber
        raise _Refused(f"a DOCTYPE declaration (<!DOCTYPE {name} ...>)")

    def refuse_entity(name, *_):
        where.line = p.CurrentLineNumber
        raise _Refused(f"an entity declaration ({name!r})")

    def refuse_external(*_):
        where.line = p.CurrentLineNumber
        raise _Refused("an external entity reference")

    p.StartDoctypeDeclHandler = refuse_doctype
    p.EntityDeclHandler = refuse_entity
    p.UnparsedEntityDeclHandler = refuse_entity
    p.ExternalEntityRefHandler = refuse_external

    stack = where.stack

    def on_start(tag, attrs):
        where.line = p.CurrentLineNumber
        stack.append(tag)
        start(tag, attrs, where)

    def on_end(tag):
        where.line = p.CurrentLineNumber
        if end is not None:
            end(tag, where)
        stack.pop()

    p.StartElementHandler = on_start
    p.EndElementHandler = on_end
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            p.ParseFile(f)
    except _Refused as e:
        raise ConfigError("file", str(path), "SUMO XML without DOCTYPE or entity declarations",
                          f"Line {where.line} contains {e}; entity expansion and external entities are "
                          "refused for safety (SUMO files never need them). Remove the <!DOCTYPE ...> block "
                          "if the file is trusted.") from None
    except expat.ExpatError as e:
        el = f", in <{stack[-1]}>" if stack else ""
        raise ConfigError("file", str(path), "well-formed XML",
                          f"Line {e.lineno}, column {e.offset}{el}: {expat.ErrorString(e.code)}.") from None
    except (OSError, EOFError) as e:
        raise ConfigError("file", str(path), "a readable SUMO XML file", str(e)) from None
    return where


# --------------------------------------------------------------------------------------------
# ignored-feature report: one warning per public call
# --------------------------------------------------------------------------------------------
class _Report:
    def __init__(self, what: str):
        self.what = what
        self.counts: Counter[str] = Counter()

    def add(self, item: str, n: int = 1) -> None:
        if n:
            self.counts[item] += n

    def emit(self, stacklevel: int = 3) -> None:
        if not self.counts:
            return
        items = "; ".join(f"{n} × {k}" for k, n in self.counts.items())
        warnings.warn(f"SUMO import of {self.what}: the twin does not model these, so they were ignored: "
                      f"{items}.", SumoImportWarning, stacklevel=stacklevel)


def _num(where: _Where, attrs: dict, key: str, default=None, *, tag: str | None = None) -> float:
    v = attrs.get(key)
    if v is None:
        if default is None:
            raise where.error(f"{tag or where.stack[-1]}.{key}", None, "a number (the attribute is required)")
        return default
    try:
        return float(v)
    except ValueError:
        raise where.error(f"{tag or where.stack[-1]}[{attrs.get('id', '')}].{key}", v, "a number") from None


def sumo_time(value: str, field: str = "time") -> float:
    """A SUMO time value: seconds, or ``[[d:]h:]m:s``."""
    try:
        return float(value)
    except ValueError:
        pass
    parts = value.split(":")
    try:
        secs = 0.0
        for p, mult in zip(reversed(parts), (1, 60, 3600, 86400)):
            secs += float(p) * mult
        if 1 < len(parts) <= 4:
            return secs
    except ValueError:
        pass
    raise ConfigError(field, value, "a time in seconds or [[d:]h:]m:s")


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
_VIA_INDEX = re.compile(r"^:(.+)_(\d+)_(\d+)$")
_DERIVED_NET = {"net", "location", "type", "restriction", "neigh", "roundabout", "junctions",
                "stopOffset", "processing", "lefthand"}
_NON_CAR = {"pedestrian", "bicycle", "tram", "rail_urban", "rail", "rail_electric", "rail_fast", "ship",
            "subway", "cable_car", "aircraft", "wheelchair", "scooter", "drone", "container"}


def _passenger_ok(attrs: dict) -> bool:
    allow = attrs.get("allow")
    if allow is not None:
        a = set(allow.split())
        return "passenger" in a or "all" in a
    dis = attrs.get("disallow")
    if dis is not None:
        d = set(dis.split())
        return not ("passenger" in d or "all" in d)
    return True


def _lane_label(attrs: dict) -> str:
    if "allow" in attrs:
        return f"allow={attrs['allow']}"
    return f"disallow={attrs.get('disallow', '')}"


def _shape(s: str | None) -> list[tuple[float, float]]:
    if not s:
        return []
    out = []
    for pt in s.split():
        xy = pt.split(",")
        out.append((float(xy[0]), float(xy[1])))
    return out


def _tl_collector(report: _Report, programs: dict[str, SignalProgram]):
    """Start-handler pieces for tlLogic/phase (shared by net and additional files)."""
    cur: dict = {}

    def start(tag, a, where):
        if tag == "tlLogic":
            kind = a.get("type", "static")
            if kind != "static":
                report.add(f"{kind} tlLogic (run as static programs with their phases' duration)")
            tid = a.get("id")
            if not tid:
                raise where.error("tlLogic.id", None, "an id")
            prog = SignalProgram(id=tid, phases=[], offset=sumo_time(a.get("offset", "0"), f"tlLogic[{tid}].offset"),
                                 program_id=a.get("programID", "0"), kind="static")
            if tid in programs:
                report.add("earlier programs of a signal with several programs (SUMO runs the last one loaded)")
            programs[tid] = prog
            cur["p"] = prog
            return True
        if tag == "phase" and where.stack[-2:-1] == ["tlLogic"]:
            prog = cur["p"]
            dur = sumo_time(a.get("duration", ""), f"tlLogic[{prog.id}].phase[{len(prog.phases)}].duration") \
                if "duration" in a else None
            if dur is None:
                raise where.error(f"tlLogic[{prog.id}].phase[{len(prog.phases)}].duration", None, "a duration")
            if "next" in a:
                report.add("phase 'next' attributes (phases run in file order)")
            state = a.get("state", "")
            bad = sorted(set(state) - VALID_STATE)
            if bad:  # refused here, where the file, line and element are known
                raise where.error(f"tlLogic[{prog.id}].phase[{len(prog.phases)}].state", state,
                                  f"SUMO link states from {''.join(sorted(VALID_STATE))}",
                                  f"Unknown state character(s) {''.join(bad)!r}: the twin cannot tell whether "
                                  "those links may drive.")
            bounds = {k: sumo_time(a[attr], f"tlLogic[{prog.id}].phase[{len(prog.phases)}].{attr}")
                      for k, attr in (("min_dur", "minDur"), ("max_dur", "maxDur")) if a.get(attr, "") != ""}
            prog.phases.append(Phase(duration=dur, state=state, name=a.get("name", ""), **bounds))
            return True
        if tag in ("condition", "assignment", "function") and "tlLogic" in where.stack:
            report.add(f"tlLogic <{tag}> elements (actuation logic)")
            return True
        return False

    return start


def _validate_programs(programs: dict[str, SignalProgram], path: Path) -> None:
    for p in programs.values():
        try:
            p.validate()
        except ConfigError as e:
            raise ConfigError(e.field, e.value, e.valid, f"In {path}.") from None


def _load_net(path, report: _Report) -> RoadNetwork:
    path = _check_file(path, "net-file")
    edges: dict[str, dict] = {}
    internal_len: dict[str, float] = {}
    internal_speed: dict[str, float] = {}
    junctions: dict[str, Junction] = {}
    conns: list[tuple[dict, int]] = []
    programs: dict[str, SignalProgram] = {}
    tl_start = _tl_collector(report, programs)
    state = {"edge": None}

    def start(tag, a, where):
        if tag == "edge":
            eid = a.get("id")
            if not eid:
                raise where.error("edge.id", None, "an edge id")
            fn = a.get("function", "normal")
            state["edge"] = eid
            edges[eid] = {"a": a, "fn": fn, "lanes": [], "line": where.line}
        elif tag == "lane" and where.stack[-2:-1] == ["edge"]:
            e = edges[state["edge"]]
            if e["fn"] == "internal":
                internal_len[a["id"]] = _num(where, a, "length", tag=f"lane[{a.get('id')}]")
                internal_speed[a["id"]] = _num(where, a, "speed", tag=f"lane[{a.get('id')}]")
            else:
                e["lanes"].append(a)
        elif tag == "junction":
            kind = a.get("type", "priority")
            if kind == "internal":
                return
            jid = a.get("id")
            junctions[jid] = Junction(id=jid, x=float(a.get("x", 0.0)), y=float(a.get("y", 0.0)), kind=kind)
            state["junction"] = jid
        elif tag == "request" and where.stack[-2:-1] == ["junction"] and state.get("junction") in junctions:
            # SUMO writes the response bits of link k at position len - 1 - k (right to left)
            resp = a.get("response", "")
            if set(resp) - set("01"):
                raise where.error("request.response", resp, "a string of 0 and 1")
            idx = int(_num(where, a, "index", tag="request"))
            junctions[state["junction"]].yields_to[idx] = [k for k, bit in enumerate(reversed(resp)) if bit == "1"]
        elif tag == "connection":
            conns.append((a, where.line))
        elif tag == "param":
            parent = where.stack[-2] if len(where.stack) > 1 else "?"
            report.add(f"<param> of <{parent}>")
        elif tl_start(tag, a, where):
            pass
        elif tag in _DERIVED_NET:
            pass
        else:
            report.add(f"<{tag}> elements")

    _parse(path, start)

    net = RoadNetwork(name=path.name.split(".")[0])
    lane_map: dict[tuple[str, int], int] = {}
    dropped_edges: set[str] = set()
    dropped_lanes: Counter[str] = Counter()
    change_restricted = 0
    for eid, e in edges.items():
        fn = e["fn"]
        if fn == "internal":
            continue
        if fn != "normal":
            report.add(f"{fn} edges")
            dropped_edges.add(eid)
            continue
        a = e["a"]
        kept = []
        for la in sorted(e["lanes"], key=lambda x: int(x.get("index", 0))):
            if _passenger_ok(la):
                kept.append(la)
            else:
                dropped_lanes[_lane_label(la)] += 1
        if not kept:
            dropped_edges.add(eid)
            continue
        lanes = []
        for new_i, la in enumerate(kept):
            lane_map[(eid, int(la.get("index", 0)))] = new_i
            if "changeLeft" in la or "changeRight" in la:
                change_restricted += 1
            where = _Where(path)
            where.line, where.stack = e["line"], ["lane"]
            lanes.append(Lane(id=la.get("id", f"{eid}_{la.get('index')}"), index=new_i,
                              length=_num(where, la, "length", tag=f"lane[{la.get('id')}]"),
                              speed=_num(where, la, "speed", tag=f"lane[{la.get('id')}]"),
                              shape=_shape(la.get("shape"))))
        frm, to = a.get("from"), a.get("to")
        for side, j in (("from", frm), ("to", to)):
            if j not in junctions:
                raise ConfigError(f"edge[{eid}].{side}", j, "a junction of the network", f"In {path}, line {e['line']}.")
        net.add_edge(Edge(id=eid, from_node=frm, to_node=to, lanes=lanes, name=a.get("name", "")))
    if dropped_lanes:
        detail = ", ".join(f"{k}: {n}" for k, n in sorted(dropped_lanes.items()))
        report.add(f"lanes closed to passenger cars ({detail})", sum(dropped_lanes.values()))
    n_non_car_edges = sum(1 for eid in dropped_edges if edges[eid]["fn"] == "normal")
    report.add("edges without a passenger-car lane (pedestrian, bicycle, rail, ...)", n_non_car_edges)
    report.add("lanes with lane-change restrictions (changeLeft/changeRight; lane changes not restricted)",
               change_restricted)

    # internal connections: internal lane -> next internal lane (internal junctions on the path)
    next_via: dict[str, str] = {}
    for a, _ in conns:
        f = a.get("from", "")
        if f.startswith(":") and a.get("via"):
            next_via[f"{f}_{a.get('fromLane', '0')}"] = a["via"]

    def via_path(lane_id: str | None) -> tuple[float, float]:
        """Length and speed limit of a connection's internal lane chain: the lengths summed, the slowest
        lane's speed (SUMO applies each internal lane's limit while the front is on it; the chains of one
        connection share one turning radius, so their limits barely differ)."""
        total, speed, seen = 0.0, math.inf, set()
        while lane_id and lane_id not in seen:
            seen.add(lane_id)
            total += internal_len.get(lane_id, 0.0)
            speed = min(speed, internal_speed.get(lane_id, math.inf))
            lane_id = next_via.get(lane_id)
        return total, speed

    dropped_conns = 0
    crossing_links: dict[str, set[int]] = {}  # tl -> link indices of pedestrian crossings
    for a, line in conns:
        f, t = a.get("from", ""), a.get("to", "")
        if f.startswith(":"):
            # a walking area's link onto a crossing (or a crossing's onto a walking area) with a signal: that
            # tls link index is a pedestrian crossing (the crossing itself is not modelled)
            if a.get("tl") and "crossing" in (edges.get(t, {}).get("fn"), edges.get(f, {}).get("fn")):
                for attr in ("linkIndex", "linkIndex2"):
                    if a.get(attr, "") not in ("", "-1"):
                        crossing_links.setdefault(a["tl"], set()).add(int(a[attr]))
            continue
        try:
            fl, tl_ = int(a.get("fromLane", "")), int(a.get("toLane", ""))
        except ValueError:
            raise ConfigError(f"connection[{f}->{t}].fromLane/toLane", (a.get("fromLane"), a.get("toLane")),
                              "lane indices", f"In {path}, line {line}.") from None
        if (f, fl) not in lane_map or (t, tl_) not in lane_map:
            if f in net.edges or t in net.edges or f in edges or t in edges:
                dropped_conns += 1
                continue
            raise ConfigError(f"connection[{f}->{t}]", f"{f}->{t}", "edges of the network", f"In {path}, line {line}.")
        tl = a.get("tl")
        via_len, via_speed = via_path(a.get("via"))
        # an internal junction on the path (the first internal lane continues on another): vehicles wait there
        wait_len = internal_len.get(a.get("via") or "", 0.0) if next_via.get(a.get("via") or "") else 0.0
        try:  # SUMO's foe visibility distance; negative: unspecified (SUMO then takes 4.5 m)
            visibility = float(a.get("visibility", 4.5))
        except ValueError:
            raise ConfigError(f"connection[{f}->{t}].visibility", a.get("visibility"), "a distance in metres",
                              f"In {path}, line {line}.") from None
        visibility = 4.5 if visibility < 0 else visibility
        # the link's index in its junction's request table: the first internal lane's edge index plus its lane
        # index (:J_<k>_<l> is link k + l; netconvert numbers the parallel lanes of one internal edge so)
        m = _VIA_INDEX.match(a.get("via") or "")
        jindex = int(m.group(2)) + int(m.group(3)) if m else -1
        link_state = a.get("state", "M")
        c = Connection(from_edge=f, from_lane=lane_map[(f, fl)], to_edge=t, to_lane=lane_map[(t, tl_)],
                       via_length=via_len, via_speed=via_speed, junction_index=jindex, state=link_state, tl=tl,
                       link_index=int(a.get("linkIndex", -1)) if tl else -1, direction=a.get("dir", "s"),
                       wait_length=wait_len, visibility=visibility)
        net.connections.append(c)
        if tl:
            j = junctions.get(net.edges[f].to_node)
            if j is not None and j.tl is None:
                j.tl = tl
    report.add("connections of lanes closed to passenger cars", dropped_conns)
    for j in junctions.values():
        if j.tl is None and j.kind.startswith("traffic_light") and j.id in programs:
            j.tl = j.id
    used = {e.from_node for e in net.edges.values()} | {e.to_node for e in net.edges.values()}
    report.add("junctions reached only by edges closed to passenger cars",
               sum(1 for jid in junctions if jid not in used))
    net.junctions = {jid: j for jid, j in junctions.items() if jid in used}
    net.programs = programs
    for pid, prog in programs.items():  # every imported program says which of its links are crossings
        prog.crossing_links = sorted(crossing_links.get(pid, ()))
    _validate_programs(programs, path)
    for c in net.connections:
        if c.tl is not None and c.tl not in programs:
            raise ConfigError("connection.tl", c.tl, "a tlLogic id of the network", f"In {path}.")
    try:
        net.validate()
    except ConfigError as e:
        raise ConfigError(e.field, e.value, e.valid, f"In {path}.") from None
    net.sumo_dropped_edges = dropped_edges  # edges SUMO has but cars cannot use (read by load_routes)
    return net


def load_net(path) -> RoadNetwork:
    """A SUMO ``.net.xml`` as a :class:`RoadNetwork` (passenger-car part of it)."""
    report = _Report(str(path))
    net = _load_net(path, report)
    report.emit()
    return net


# --------------------------------------------------------------------------------------------
# signal programs out / in
# --------------------------------------------------------------------------------------------
def _fmt(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def write_tllogic(programs: dict[str, SignalProgram] | Iterable[SignalProgram], path, *,
                  program_id: str | None = None) -> Path:
    """Write programs as a SUMO additional file of ``<tlLogic>`` elements.

    ``program_id`` overrides every program's id (SUMO refuses a second program
    with the same ``programID`` as one in the net; a new id loaded after the
    net becomes the active program).
    """
    progs = list(programs.values()) if isinstance(programs, dict) else list(programs)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<!-- signal programs written by twins -->", "<additional>"]
    for p in progs:
        p.validate()
        pid = program_id if program_id is not None else p.program_id
        lines.append(f"    <tlLogic id={quoteattr(p.id)} type=\"static\" programID={quoteattr(str(pid))} "
                     f"offset=\"{_fmt(p.offset)}\">")
        for ph in p.phases:
            name = f" name={quoteattr(ph.name)}" if ph.name else ""
            lines.append(f"        <phase duration=\"{_fmt(ph.duration)}\" state={quoteattr(ph.state)}{name}/>")
        lines.append("    </tlLogic>")
    lines.append("</additional>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _read_tllogic(path, report: _Report) -> dict[str, SignalProgram]:
    path = _check_file(path, "tllogic file")
    programs: dict[str, SignalProgram] = {}
    tl_start = _tl_collector(report, programs)

    def start(tag, a, where):
        if tl_start(tag, a, where) or tag in ("additional", "net") or tag in _DERIVED_NET:
            return
        if tag == "param":
            report.add(f"<param> of <{where.stack[-2] if len(where.stack) > 1 else '?'}>")
        elif "tlLogic" not in where.stack:
            report.add(f"<{tag}> elements")

    _parse(path, start)
    _validate_programs(programs, path)
    return programs


def read_tllogic(path) -> dict[str, SignalProgram]:
    """The ``<tlLogic>`` programs of a SUMO additional (or net) file, keyed by signal id."""
    report = _Report(str(path))
    programs = _read_tllogic(path, report)
    report.emit()
    return programs


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
_DIST = re.compile(r"^\s*(norm|normc|lognorm|uniform)\s*\(([^)]*)\)\s*$")
_VEHICLE_MODELED = {"id", "type", "route", "depart", "from", "to", "via", "color", "begin", "end", "vehsPerHour",
                    "period", "probability", "number", "line", "insertionChecks", "departSpeed",
                    "arrival"}  # 'arrival' is a recorded output value that SUMO itself ignores


def _speed_factor(v: str, where: _Where, tid: str) -> tuple[float, float | None]:
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

    def __init__(self, network: RoadNetwork, report: _Report, begin: float = 0.0):
        self.net = network
        self.report = report
        self.begin = begin
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

    def route_between(self, frm: str, to: str, via: list[str], where: _Where, owner: str) -> list[str]:
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

    def edge_ok(self, e: str, where: _Where, owner: str) -> None:
        if e in self.net.edges:
            return
        if e in self.dropped_edges:
            raise _NonCarRoute(e)
        raise where.error(f"{owner}.route", e, "edges that exist in the network",
                          f"Edge {e!r} is not in network {self.net.name!r}.")

    def check_route(self, edges: list[str], where: _Where, owner: str) -> list[str]:
        if not edges:
            raise where.error(f"{owner}.route", "", "a non-empty list of edges")
        for e in edges:
            self.edge_ok(e, where, owner)
        for a, b in zip(edges, edges[1:]):
            if (a, b) not in self._links:
                raise where.error(f"{owner}.route", f"{a} {b}", "consecutive edges joined by a connection",
                                  f"No connection from {a!r} to {b!r}.")
        return edges

    def vtype_of(self, a: dict, where: _Where, owner: str) -> str | None:
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
    def vtype(self, a: dict, where: _Where) -> None:
        tid = a.get("id")
        if not tid:
            raise where.error("vType.id", None, "an id")
        self.last_vtype = tid
        vclass = a.get("vClass", "passenger")
        if self.vdist is not None:
            self.vdist["members"].append((tid, float(a.get("probability", 1.0))))
        if vclass in _NON_CAR or vclass.startswith("rail"):
            self.skip_vtypes.add(tid)
            self.report.add(f"vTypes of vClass {vclass} (their vehicles are not loaded)")
            return
        if vclass not in ("passenger", "private"):
            self.report.add(f"vTypes of vClass {vclass} (run as cars with their length/accel/decel/maxSpeed)")
        length, accel, decel, vmax = _VCLASS.get(vclass, _VCLASS["passenger"])
        f = lambda k, d: _num(where, a, k, d, tag=f"vType[{tid}]")  # noqa: E731
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

    def start(self, tag: str, a: dict, where: _Where) -> None:
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

    def end(self, tag: str, where: _Where) -> None:
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

    def finish(self, cur: dict, where: _Where) -> None:
        tag, a = cur["tag"], cur["a"]
        vid = a.get("id", "")
        owner = f"{tag}[{vid}]"
        w = _Where(where.path)
        w.line, w.stack = cur["line"], [tag]
        vt = self.vtype_of(a, w, owner)
        if vt is None:
            return
        # route
        if "edges" in cur:
            wr = w
            if "route_where" in cur:  # errors point at the embedded <route>
                wr = _Where(where.path)
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

    def depart_speed(self, a: dict, w: _Where, owner: str) -> float | None:
        """SUMO's ``departSpeed`` (default 0): a number, or None for "max", "desired" and "speedLimit" (as fast as
        safe, up to the driver's desired speed); "random", "avg" and "last" are read as "max" and reported."""
        v = a.get("departSpeed", "0").strip()
        if v in ("max", "desired", "speedLimit"):
            return None
        if v in ("random", "avg", "last"):
            self.report.add(f"departSpeed=\"{v}\" (inserted as fast as safe, as \"max\")")
            return None
        try:
            x = float(v)
        except ValueError:
            raise w.error(f"{owner}.departSpeed", v, "a speed >= 0 m/s, or max, desired, speedLimit, random, avg, "
                          "last") from None
        if not (math.isfinite(x) and x >= 0):
            raise w.error(f"{owner}.departSpeed", v, "a speed >= 0 m/s")
        return x

    def make_flow(self, a: dict, route: list[str], vt: str, w: _Where, owner: str) -> Flow:
        begin = sumo_time(a.get("begin", "0"), f"{owner}.begin") if a.get("begin") != "begin" else self.begin
        number = int(a["number"]) if "number" in a else None
        end = sumo_time(a["end"], f"{owner}.end") if "end" in a else None
        if number is not None and number < 0:
            raise w.error(f"{owner}.number", number, "a count >= 0")
        if "vehsPerHour" in a:
            kind, rate = "periodic", _num(w, a, "vehsPerHour", tag=owner)
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
            prob = _num(w, a, "probability", tag=owner)
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


def _load_routes(paths, network: RoadNetwork, report: _Report, begin: float = 0.0) -> Demand:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    reader = _RouteReader(network, report, begin)
    for p in paths:
        p = _check_file(p, "route-files")
        _parse(p, reader.start, reader.end)
    d = reader.demand()
    d.validate(network.edges)
    return d


def load_routes(path, network: RoadNetwork, *, begin: float = 0.0) -> Demand:
    """Demand of one or several SUMO route files (later files see earlier files' vTypes and routes)."""
    report = _Report(str(path) if isinstance(path, (str, Path)) else ", ".join(map(str, path)))
    d = _load_routes(path, network, report, begin)
    report.emit()
    return d


def write_routes(demand: Demand, path, car_following: str | None = None) -> Path:
    """Demand as a SUMO route file (``fixed`` flows as vehicles, the others as ``<flow>``). A vType states
    ``carFollowModel`` when one is known: ``car_following`` (the model the twin runs), else the type's own; else
    none (SUMO then runs ``--default.carfollowmodel``, Krauss unless set)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<routes>"]
    for vt in demand.vtypes.values():
        cfm = car_following or vt.car_following
        cfm = f" carFollowModel=\"{cfm}\"" if cfm else ""
        out.append(f"    <vType id={quoteattr(vt.id)} length=\"{_fmt(vt.length)}\" minGap=\"{_fmt(vt.min_gap)}\" "
                   f"accel=\"{_fmt(vt.accel)}\" decel=\"{_fmt(vt.decel)}\" maxSpeed=\"{_fmt(vt.max_speed)}\" "
                   f"tau=\"{_fmt(vt.tau)}\" speedFactor=\"{_fmt(vt.speed_factor)}\" speedDev=\"{_fmt(vt.speed_dev)}\" "
                   f"delta=\"{_fmt(vt.delta)}\" sigma=\"{_fmt(vt.sigma)}\"{cfm}/>")
    vehicles = []
    flows = []
    for i, f in enumerate(demand.flows):
        edges = " ".join(f.route)
        # the twin's insertion speed, stated (SUMO's default would be 0)
        dsp = f' departSpeed="{"max" if f.depart_speed is None else _fmt(f.depart_speed)}"'
        if f.kind == "fixed":
            for k, t in enumerate(sorted(f.departures)):
                vehicles.append((t, f"    <vehicle id={quoteattr(f'{f.id}.{k}')} type={quoteattr(f.vtype)} "
                                    f"depart=\"{_fmt(t)}\"{dsp}><route edges={quoteattr(edges)}/></vehicle>"))
            continue
        for j, (b, e, r) in enumerate(f.segments()):
            fid = f.id if len(f.segments()) == 1 else f"{f.id}.{j}"
            if f.kind == "poisson":
                rate = f"period=\"exp({_fmt(r / 3600.0)})\""
            elif f.kind == "periodic":
                rate = f"vehsPerHour=\"{_fmt(r)}\""
            else:
                rate = f"probability=\"{_fmt(r / 3600.0)}\""
            num = f" number=\"{f.number}\"" if f.number is not None else ""
            flows.append((b, f"    <flow id={quoteattr(fid)} type={quoteattr(f.vtype)} begin=\"{_fmt(b)}\" "
                             f"end=\"{_fmt(e)}\" {rate}{num}{dsp}><route edges={quoteattr(edges)}/></flow>"))
    # SUMO wants vehicles sorted by departure
    for _, line in sorted(vehicles + flows, key=lambda x: x[0]):
        out.append(line)
    out.append("</routes>")
    path = Path(path)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


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


# time-to-teleport: read by scenarios/sumo.py (kernels rule 12)
_CFG_USED = {"net-file", "route-files", "additional-files", "begin", "end", "step-length", "time-to-teleport"}
_CFG_SILENT = re.compile(r"(output|log|verbose|no-step-log|no-warnings|duration-log|gui|window|start|quit-on-end|"
                         r"delay|breakpoints|demo|game|tracker|xml-validation|print|save|write|help|version|"
                         r"precision|human-readable|configuration)")


def _files(value: str, base: Path) -> list[Path]:
    return [base / v if not Path(v).is_absolute() else Path(v) for v in re.split(r"[,\s]+", value.strip()) if v]


def read_sumocfg(path) -> tuple[dict[str, str], Path]:
    path = _check_file(path, "sumocfg")
    opts: dict[str, str] = {}

    def start(tag, a, where):
        if "value" in a:
            opts[tag] = a["value"]

    _parse(path, start)
    return opts, path


def _skip_before(demand: Demand, begin: float, report: _Report) -> Demand:
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


def load_sumocfg(path, *, net: str | None = None, routes=None) -> SumoScenario:
    """Network, demand, begin and end of a SUMO ``.sumocfg`` (``net``/``routes`` override its files)."""
    report = _Report(str(path))
    opts, path = read_sumocfg(path)
    base = path.parent
    for k in opts:
        if k not in _CFG_USED and not _CFG_SILENT.search(k):
            report.add(f"sumocfg option {k}={opts[k]}")
    net_file = Path(net) if net else (_files(opts["net-file"], base)[0] if "net-file" in opts else None)
    if net_file is None:
        raise ConfigError("net-file", None, "a net-file in the .sumocfg", f"{path} names no net-file.")
    route_files = ([Path(r) for r in ([routes] if isinstance(routes, (str, Path)) else routes)] if routes
                   else _files(opts.get("route-files", ""), base))
    add_files = _files(opts.get("additional-files", ""), base)
    begin = sumo_time(opts.get("begin", "0"), "begin")
    end = sumo_time(opts["end"], "end") if "end" in opts and float(sumo_time(opts["end"], "end")) >= 0 else None
    step = sumo_time(opts.get("step-length", "1"), "step-length")
    network = _load_net(net_file, report)
    for af in add_files:
        progs = _read_tllogic(af, report)
        for pid, prog in progs.items():
            if pid not in network.programs:
                raise ConfigError(f"tlLogic[{pid}]", pid, "a signal of the network", f"In {af}.")
            if prog.n_links != network.programs[pid].n_links:
                raise ConfigError(f"tlLogic[{pid}].state", prog.phases[0].state,
                                  f"{network.programs[pid].n_links} links like the net's program", f"In {af}.")
            prog.crossing_links = network.programs[pid].crossing_links  # the same links: the net says which
            network.programs[pid] = prog
    demand = _load_routes(route_files, network, report, begin) if route_files else Demand(flows=[])
    demand = _skip_before(demand, begin, report)
    report.emit()
    return SumoScenario(network=network, demand=demand, begin=begin, end=end,
                        files={"sumocfg": str(path), "net": str(net_file), "routes": [str(r) for r in route_files],
                               "additional": [str(a) for a in add_files]},
                        ignored=dict(report.counts), step_length=step)
