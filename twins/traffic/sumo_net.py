"""SUMO networks and signal programs: ``.net.xml`` in (edges, lanes, connections, junctions, ``tlLogic``),
``<tlLogic>`` additional files out and in. The mapping rules are stated in :mod:`twins.traffic.sumo`.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Iterable
from xml.sax.saxutils import quoteattr

from twins.core.errors import ConfigError
from twins.traffic.network import VALID_STATE, Connection, Edge, Junction, Lane, Phase, RoadNetwork, SignalProgram

from .sumo_xml import Report, Where, check_file, num, parse, sumo_time

# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
_VIA_INDEX = re.compile(r"^:(.+)_(\d+)_(\d+)$")
DERIVED_NET = {"net", "location", "type", "restriction", "neigh", "roundabout", "junctions",
                "stopOffset", "processing", "lefthand"}
NON_CAR = {"pedestrian", "bicycle", "tram", "rail_urban", "rail", "rail_electric", "rail_fast", "ship",
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


def tl_collector(report: Report, programs: dict[str, SignalProgram]):
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


def validate_programs(programs: dict[str, SignalProgram], path: Path) -> None:
    for p in programs.values():
        try:
            p.validate()
        except ConfigError as e:
            raise ConfigError(e.field, e.value, e.valid, f"In {path}.") from None


def net_from(path, report: Report) -> RoadNetwork:
    path = check_file(path, "net-file")
    edges: dict[str, dict] = {}
    internal_len: dict[str, float] = {}
    internal_speed: dict[str, float] = {}
    internal_shape: dict[str, tuple[tuple[float, float], ...]] = {}
    internal_width: dict[str, float] = {}
    junctions: dict[str, Junction] = {}
    conns: list[tuple[dict, int]] = []
    programs: dict[str, SignalProgram] = {}
    tl_start = tl_collector(report, programs)
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
                internal_len[a["id"]] = num(where, a, "length", tag=f"lane[{a.get('id')}]")
                internal_speed[a["id"]] = num(where, a, "speed", tag=f"lane[{a.get('id')}]")
                internal_shape[a["id"]] = tuple(_shape(a.get("shape")))
                internal_width[a["id"]] = num(where, a, "width", 3.2, tag=f"lane[{a.get('id')}]")  # SUMO's default
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
            idx = int(num(where, a, "index", tag="request"))
            junctions[state["junction"]].yields_to[idx] = [k for k, bit in enumerate(reversed(resp)) if bit == "1"]
            foes = a.get("foes", "")
            if set(foes) - set("01"):
                raise where.error("request.foes", foes, "a string of 0 and 1")
            junctions[state["junction"]].conflicts[idx] = [k for k, bit in enumerate(reversed(foes)) if bit == "1"]
        elif tag == "connection":
            conns.append((a, where.line))
        elif tag == "param":
            parent = where.stack[-2] if len(where.stack) > 1 else "?"
            report.add(f"<param> of <{parent}>")
        elif tl_start(tag, a, where):
            pass
        elif tag in DERIVED_NET:
            pass
        else:
            report.add(f"<{tag}> elements")

    parse(path, start)

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
        kept, closed = [], []
        for la in sorted(e["lanes"], key=lambda x: int(x.get("index", 0))):
            if _passenger_ok(la):
                kept.append(la)
            else:
                dropped_lanes[_lane_label(la)] += 1
                closed.append(la)
        if not kept:
            dropped_edges.add(eid)
            continue
        lanes = []
        for new_i, la in enumerate(kept):
            lane_map[(eid, int(la.get("index", 0)))] = new_i
            if "changeLeft" in la or "changeRight" in la:
                change_restricted += 1
            where = Where(path)
            where.line, where.stack = e["line"], ["lane"]
            lanes.append(Lane(id=la.get("id", f"{eid}_{la.get('index')}"), index=new_i,
                              length=num(where, la, "length", tag=f"lane[{la.get('id')}]"),
                              speed=num(where, la, "speed", tag=f"lane[{la.get('id')}]"),
                              shape=_shape(la.get("shape"))))
        frm, to = a.get("from"), a.get("to")
        for side, j in (("from", frm), ("to", to)):
            if j not in junctions:
                raise ConfigError(f"edge[{eid}].{side}", j, "a junction of the network", f"In {path}, line {e['line']}.")
        closed_speeds = tuple(num(where, la, "speed", tag=f"lane[{la.get('id')}]") for la in closed)
        net.add_edge(Edge(id=eid, from_node=frm, to_node=to, lanes=lanes, name=a.get("name", ""),
                          closed_lane_speeds=closed_speeds))
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

    def via_shape(lane_id: str | None) -> tuple:
        """The shape of a connection's internal lane chain, its lanes' shapes joined."""
        out, seen = [], set()
        while lane_id and lane_id not in seen:
            seen.add(lane_id)
            pts = internal_shape.get(lane_id, ())
            out += pts[1:] if out and pts and pts[0] == out[-1] else pts
            lane_id = next_via.get(lane_id)
        return tuple(out)

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
                       wait_length=wait_len, visibility=visibility,
                       keep_clear=a.get("keepClear", "1") not in ("0", "false", "False"),
                       path_shape=via_shape(a.get("via")), via_width=internal_width.get(a.get("via") or "", 3.2),
                       via_shape=internal_shape.get(a.get("via") or "", ()),
                       via_lane_length=internal_len.get(a.get("via") or "", 0.0))
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
    validate_programs(programs, path)
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
    report = Report(str(path))
    net = net_from(path, report)
    report.emit()
    return net


# --------------------------------------------------------------------------------------------
# signal programs out / in
# --------------------------------------------------------------------------------------------
def fmt(x: float) -> str:
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
                     f"offset=\"{fmt(p.offset)}\">")
        for ph in p.phases:
            name = f" name={quoteattr(ph.name)}" if ph.name else ""
            lines.append(f"        <phase duration=\"{fmt(ph.duration)}\" state={quoteattr(ph.state)}{name}/>")
        lines.append("    </tlLogic>")
    lines.append("</additional>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def tllogic_from(path, report: Report) -> dict[str, SignalProgram]:
    path = check_file(path, "tllogic file")
    programs: dict[str, SignalProgram] = {}
    tl_start = tl_collector(report, programs)

    def start(tag, a, where):
        if tl_start(tag, a, where) or tag in ("additional", "net") or tag in DERIVED_NET:
            return
        if tag == "param":
            report.add(f"<param> of <{where.stack[-2] if len(where.stack) > 1 else '?'}>")
        elif "tlLogic" not in where.stack:
            report.add(f"<{tag}> elements")

    parse(path, start)
    validate_programs(programs, path)
    return programs


def read_tllogic(path) -> dict[str, SignalProgram]:
    """The ``<tlLogic>`` programs of a SUMO additional (or net) file, keyed by signal id."""
    report = Report(str(path))
    programs = tllogic_from(path, report)
    report.emit()
    return programs
