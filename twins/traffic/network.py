"""Road network: junctions, edges with lanes, lane-to-lane connections, signal programs.

The model follows SUMO's: a connection joins one lane of an edge to one lane of
the next edge, crosses the junction on an internal path of ``via_length``
metres, and — at a signalized junction — is controlled by one link index of
a traffic-light program whose phases are state strings (one character per
link: ``G``/``g`` green, ``y`` yellow, ``r`` red, ...).

This module is plain Python (no tensors): generators and importers build a
:class:`RoadNetwork`; :mod:`twins.traffic.tables` turns it into tensors.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from twins.core.errors import ConfigError, check

GREEN = frozenset("Gg")
YELLOW = frozenset("yYuU")  # SUMO 'u' (red+yellow) treated like yellow: do not enter if you can stop
RED = frozenset("rsO")  # 'O' (off, no signal) is handled as green by the compiler; listed for parsing
VALID_STATE = frozenset("GgyYrRuUsoO")
MINOR = frozenset("m=swZ")  # unsignalized link states that yield to their junction's foes (SUMO's lower-case rule)


@dataclass
class Junction:
    id: str
    x: float = 0.0
    y: float = 0.0
    kind: str = "priority"  # traffic_light | priority | dead_end | ...
    tl: str | None = None  # id of the signal program controlling it
    # SUMO's right of way: request index -> the links it must yield to (``Connection.junction_index`` values; the
    # ``response`` bit string read right to left); empty: no one yields (generated networks)
    yields_to: dict[int, list[int]] = field(default_factory=dict)
    # request index -> the links that conflict with it at all (the ``foes`` bit string, read the same way)
    conflicts: dict[int, list[int]] = field(default_factory=dict)


@dataclass
class Lane:
    id: str
    index: int  # 0 = rightmost, as in SUMO
    length: float
    speed: float  # speed limit, m/s
    shape: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Edge:
    id: str
    from_node: str
    to_node: str
    lanes: list[Lane]
    name: str = ""
    # the speed limits of its lanes closed to cars (SUMO sidewalks, bike lanes), which the twin does not model but
    # SUMO's edge mean speed counts as empty lanes (the router's samples, twins.traffic.routing)
    closed_lane_speeds: tuple = field(default=(), compare=False)

    @property
    def length(self) -> float:
        return self.lanes[0].length

    @property
    def speed(self) -> float:
        return max(l.speed for l in self.lanes)


MINOR_PENALTY_S = 1.5  # SUMO's --weights.minor-penalty (routing cost of a minor link)
TURNAROUND_PENALTY_S = 5.0  # SUMO's --weights.turnaround-penalty


@dataclass
class Connection:
    from_edge: str
    from_lane: int
    to_edge: str
    to_lane: int
    via_length: float = 0.0  # length of the path across the junction, metres
    tl: str | None = None  # signal program id, None if unsignalized
    link_index: int = -1  # index into the program's state strings
    direction: str = "s"  # s straight, l left, r right, t turn, L/R partial
    # speed limit on the path across the junction (SUMO: the slowest internal lane of the connection's
    # ``via`` chain, netconvert's turning speed); +inf: none (generated networks)
    via_speed: float = float("inf")
    # right of way (kernels rule 10): the link's index in its junction's request table (-1: none), and its state
    # where no signal controls it: SUMO's M (major), m (minor), = (equal), s (stop), w (all-way stop), Z (zipper)
    junction_index: int = -1
    state: str = "M"
    # SUMO's cautious approach to a minor link (kernels rule 10): where a vehicle on this link waits for its foes,
    # metres past the stop line (SUMO's internal junction of a left turn, ``cont="1"``; 0: at the stop line), and
    # the distance before that point from which it sees its foes (the connection's ``visibility``, SUMO's 4.5 m)
    wait_length: float = field(default=0.0, compare=False)
    visibility: float = field(default=4.5, compare=False)
    # SUMO's ``keepClear`` attribute of the connection: false lets vehicles stop on the junction (kernels rule 4)
    keep_clear: bool = field(default=True, compare=False)
    # the path across the junction: its shape (every internal lane of SUMO's ``via`` chain; empty: not known, as on
    # generated networks) and its lanes' width, from which :func:`conflict_zone` finds where paths cross
    path_shape: tuple = field(default=(), compare=False)
    via_width: float = field(default=3.2, compare=False)
    # its first internal lane (SUMO's ``via`` lane): shape and length, from which :func:`divergence` finds where
    # paths out of one lane part
    via_shape: tuple = field(default=(), compare=False)
    via_lane_length: float = field(default=0.0, compare=False)


DIVERGENCE_MIN_WIDTH_M = 2.5  # SUMO's DIVERGENCE_MIN_WIDTH: sibling internal lanes closer than this overlap


def _seg_dist(p, a, b) -> float:
    ax, ay = a
    dx, dy = b[0] - ax, b[1] - ay
    n = dx * dx + dy * dy
    u = 0.0 if n == 0 else min(1.0, max(0.0, ((p[0] - ax) * dx + (p[1] - ay) * dy) / n))
    return ((p[0] - ax - u * dx) ** 2 + (p[1] - ay - u * dy) ** 2) ** 0.5


def _poly_dist(p, poly) -> float:
    """The distance from point ``p`` to the polyline ``poly`` (SUMO's ``PositionVector::distance2D``)."""
    return min(_seg_dist(p, poly[i], poly[i + 1]) for i in range(len(poly) - 1))


def divergence(a: Connection, b: Connection) -> tuple[float, float] | None:
    """Where the paths of two connections out of one lane part (kernels rule 10, SUMO's same-source foes): the
    distance past the stop line, on each one's first internal lane, up to which a vehicle on ``a`` and one on ``b``
    still follow each other; None where their internal lanes do not start together (or are not known).

    SUMO's ``MSLink::computeDistToDivergence`` with ``sameSource``: walking back from the lanes' ends, the last
    points farther than ``min(2.5 m, mean width)`` from the other lane (interpolated on the segment where they
    come that close) mark the divergence (where either lane ends that close to the other, none: the whole lane);
    its distance from the start is the larger of the two lanes', at most either lane's shape length, and is read
    on each lane in lane length (``interpolateGeometryPosToLanePos``)."""
    la, lb = list(a.via_shape), list(b.via_shape)
    if len(la) < 2 or len(lb) < 2 or a.via_lane_length <= 0 or b.via_lane_length <= 0:
        return None
    min_dist = min(DIVERGENCE_MIN_WIDTH_M, 0.5 * (a.via_width + b.via_width))
    if math.dist(la[0], lb[0]) >= min_dist:
        return None
    len_a, len_b = _poly_len(la), _poly_len(lb)
    back_a = back_b = 0.0  # length behind the divergence point on each

    def behind(own, other_d):
        total = 0.0
        for i in range(len(own) - 2, -1, -1):
            seg = math.dist(own[i], own[i + 1])
            if other_d[i] > min_dist:
                total += seg
            else:
                step = other_d[i + 1] - other_d[i]
                total += seg - ((min_dist - other_d[i]) * seg / step if step > 0 else 0.0)
                break
        return total

    if math.dist(la[-1], lb[-1]) > min_dist:
        da = [_poly_dist(p, lb) for p in la]
        db = [_poly_dist(p, la) for p in lb]
        if db[-1] > min_dist and da[-1] > min_dist:
            back_a, back_b = behind(la, da), behind(lb, db)
    d = min(max(a.via_lane_length - back_a, b.via_lane_length - back_b), len_a, len_b)
    return d * a.via_lane_length / len_a, d * b.via_lane_length / len_b


def same_source_siblings(lanes) -> list[list[list[tuple[int, float, float]]]]:
    """Kernels rule 10's same-source foes. ``lanes``: per lane, the connections out of it (one per next edge, in the
    caller's order). Returns, per lane and connection, the lane's other connections a vehicle on it follows until
    their paths part, as ``(index, distance on its own path, distance on the other's)`` (:func:`divergence`). Where
    another lane of the edge also leads into the connection's next edge, SUMO's follower mostly changes lanes to pass
    one held by the traffic ahead, which the twin without lane changing cannot: there it follows only one on a path
    with an internal junction (``wait_length``: one that may stand there for its foes; kernels.same_source)."""
    lanes_into = Counter((c.from_edge, c.to_edge) for conns in lanes for c in conns)
    out = []
    for conns in lanes:
        rows = []
        for i, a in enumerate(conns):
            parallel = lanes_into[(a.from_edge, a.to_edge)] > 1
            row = []
            for k, b in enumerate(conns):
                split = divergence(a, b) if k != i and (not parallel or b.wait_length > 0) else None
                if split is not None:
                    row.append((k, *split))
            rows.append(row)
        out.append(rows)
    return out


def _poly_len(poly) -> float:
    return sum(math.dist(poly[i], poly[i + 1]) for i in range(len(poly) - 1))


def _intersections(p, q):
    """Where polylines ``p`` and ``q`` cross: (distance along p, distance along q, sine of the angle) per crossing."""
    out, sp = [], 0.0
    for i in range(len(p) - 1):
        (ax, ay), (bx, by) = p[i], p[i + 1]
        rx, ry = bx - ax, by - ay
        lp = (rx * rx + ry * ry) ** 0.5
        sq = 0.0
        for j in range(len(q) - 1):
            (cx, cy), (dx, dy) = q[j], q[j + 1]
            sx, sy = dx - cx, dy - cy
            lq = (sx * sx + sy * sy) ** 0.5
            den = rx * sy - ry * sx
            if den != 0 and lp > 0 and lq > 0:
                u = ((cx - ax) * sy - (cy - ay) * sx) / den
                v = ((cx - ax) * ry - (cy - ay) * rx) / den
                if 0.0 <= u <= 1.0 and 0.0 <= v <= 1.0:
                    out.append((sp + u * lp, sq + v * lq, abs(den) / (lp * lq)))
            sq += lq
        sp += lp
    return out


def conflict_zone(c: Connection, foe: Connection, bins: int) -> int:
    """Rule 10: where on ``foe``'s path across the junction the path of ``c`` crosses it, as a bitmask of the
    ``bins`` equal parts of ``foe``'s path (``via_length``; kernels.ZONE_BINS): a vehicle of ``foe`` standing inside
    the junction is in the way of ``c`` only where its body covers one of them (SUMO's ``inTheWay``: a foe on its
    internal lane that has entered the crossing point and not passed it; one standing short of it will not pass,
    ``willPass``, and is ignored). The zone is SUMO's conflict size around the crossing point: ``c``'s lane width
    times ``2 / max(sin(angle), 0.2) - 1`` (``MSLink::setRequestInformation``). All parts where either shape is
    unknown (generated networks: every standing foe inside is in the way); none where the paths do not cross."""
    full = (1 << bins) - 1
    p, q = list(c.path_shape), list(foe.path_shape)
    if len(p) < 2 or len(q) < 2 or foe.via_length <= 0:
        return full
    hits = _intersections(q, p)
    if not hits:
        return 0
    scale = foe.via_length / _poly_len(q)  # shape length to lane length (SUMO's interpolateGeometryPosToLanePos)
    mask, size = 0, foe.via_length / bins
    for at, _, sine in hits:
        half = 0.5 * c.via_width * (2.0 / max(sine, 0.2) - 1.0) * scale
        lo = max(0, min(bins - 1, int((at * scale - half) // size)))
        hi = max(0, min(bins - 1, int((at * scale + half) // size)))
        for b in range(lo, hi + 1):
            mask |= 1 << b
    return mask


def zone_start(c: Connection, foe: Connection, bins: int) -> float:
    """Rule 10: m along ``c``'s own path from its line to the first part of it that ``foe``'s path crosses
    (:func:`conflict_zone` seen from ``foe``); 0 where a shape is unknown or the paths do not cross."""
    own = conflict_zone(foe, c, bins)
    if own == 0 or own == (1 << bins) - 1:
        return 0.0
    return ((own & -own).bit_length() - 1) * c.via_length / bins


@dataclass
class Phase:
    duration: float
    state: str
    name: str = ""
    # SUMO's minDur / maxDur of the phase (seconds; None: not given). Static programs run ``duration``; the
    # bounds are what the network's engineer allows, and signal_timing keeps retimed greens inside them.
    # Metadata of the network file: not compared (a plan written as <tlLogic> and read back equals its program).
    min_dur: float | None = field(default=None, compare=False)
    max_dur: float | None = field(default=None, compare=False)


@dataclass
class SignalProgram:
    id: str  # the tlLogic id (the junction's tl)
    phases: list[Phase]
    offset: float = 0.0
    program_id: str = "0"
    kind: str = "static"
    # the link indices (positions in the state strings) that are pedestrian crossings (SUMO ``crossing``
    # edges entered from a walking area with this tl and linkIndex); None: not known (generated networks,
    # where every green phase is taken to carry the crossing parallel to it), []: the junction has none.
    # Found from the net's connections, not part of a <tlLogic>: not compared.
    crossing_links: list[int] | None = field(default=None, compare=False)

    def serves_crossing(self, k: int) -> bool | None:
        """Whether phase ``k`` shows green to a pedestrian crossing (None: the network does not say)."""
        if self.crossing_links is None:
            return None
        st = self.phases[k].state
        return any(i < len(st) and st[i] in GREEN for i in self.crossing_links)

    @property
    def cycle(self) -> float:
        return sum(p.duration for p in self.phases)

    @property
    def n_links(self) -> int:
        return len(self.phases[0].state) if self.phases else 0

    def validate(self) -> None:
        check(len(self.phases) > 0, f"tlLogic[{self.id}].phases", [], "at least one phase")
        n = self.n_links
        for i, p in enumerate(self.phases):
            check(p.duration > 0, f"tlLogic[{self.id}].phase[{i}].duration", p.duration, "> 0 seconds")
            check(len(p.state) == n, f"tlLogic[{self.id}].phase[{i}].state", p.state,
                  f"a state string of {n} characters like the first phase")
            bad = set(p.state) - VALID_STATE
            check(not bad, f"tlLogic[{self.id}].phase[{i}].state", p.state,
                  f"characters from {''.join(sorted(VALID_STATE))}")
        for i in self.crossing_links or []:
            check(0 <= i < n, f"tlLogic[{self.id}].crossing link", i, f"0..{n - 1}")


# SUMO's look-ahead for a vehicle's best lanes (MSVehicle::updateBestLanes): at least this many edges and metres ...
BEST_LANES_MIN_EDGES, BEST_LANES_MOTORWAY_M = 5, 3000.0
# ... or this many edges and the braking distance of SUMO's default passenger car from its top speed, beyond the
# edge it starts on (tau·v + brakeGap(v) + minGap, v = 55.56 m/s, decel 4.5 m/s², tau 1 s, Euler steps of 1 s)
BEST_LANES_URBAN_EDGES, BEST_LANES_BRAKE_M = 9, 429.3


def best_lanes_lookahead(lengths: list[float], k: int) -> int:
    """The last route edge SUMO looks at for the best lanes of a vehicle on route edge ``k`` (``lengths``: the route's
    edge lengths, SUMO's lane 0 of each): 5 edges or more, until the edges seen add up to 3000 m and the braking
    distance (edge ``k``'s length plus ``BEST_LANES_BRAKE_M``); from 9 edges on, until they add up to the braking
    distance; at most to the route's end."""
    brake = lengths[k] + BEST_LANES_BRAKE_M
    seen, seen_m, j = 0, 0.0, k
    while j + 1 < len(lengths):
        seen += 1
        seen_m += lengths[j]
        if seen >= BEST_LANES_MIN_EDGES and seen_m >= max(brake, BEST_LANES_MOTORWAY_M):
            break
        if seen >= BEST_LANES_URBAN_EDGES and seen_m >= max(brake, 200.0):
            break
        j += 1
    return j


@dataclass
class RoadNetwork:
    junctions: dict[str, Junction] = field(default_factory=dict)
    edges: dict[str, Edge] = field(default_factory=dict)
    connections: list[Connection] = field(default_factory=list)
    programs: dict[str, SignalProgram] = field(default_factory=dict)
    name: str = "network"

    # --- building -----------------------------------------------------------------
    def add_junction(self, j: Junction) -> Junction:
        self.junctions[j.id] = j
        return j

    def add_edge(self, e: Edge) -> Edge:
        self.edges[e.id] = e
        return e

    # --- queries --------------------------------------------------------------------
    def lane_count(self) -> int:
        return sum(len(e.lanes) for e in self.edges.values())

    def keeps_clear(self, c: Connection) -> bool:
        """Whether a vehicle takes this connection only when it can clear the junction (kernels rule 4, SUMO's
        ``MSVehicle::keepClear``): its path crosses a junction area (``via_length > 0``), the connection does not
        waive it (``keepClear="0"``), and another link of the junction conflicts with it (its request's ``foes``;
        a junction without request tables, as a generated network's, is taken to have some). Where none
        conflicts, SUMO lets a queue stand across the junction."""
        if not (c.via_length > 0 and c.keep_clear):
            return False
        j = self.junctions.get(self.edges[c.from_edge].to_node)
        if j is None or not j.conflicts or c.junction_index < 0:
            return True
        return c.junction_index not in j.conflicts or bool(j.conflicts[c.junction_index])

    def crossing_cost(self, c: Connection) -> float:
        """The routing cost of crossing a junction by ``c`` (s): its path at its own speed (at most the next edge's)
        plus SUMO's minor-link and turnaround penalties (see :meth:`graph`)."""
        w = c.via_length / max(min(self.edges[c.to_edge].speed, c.via_speed), 0.1)
        if c.tl is not None or "A" <= c.state <= "Z":  # (SUMO's MSEdge::recalcCache: a signal's or a major link)
            return w
        return w + (TURNAROUND_PENALTY_S if c.direction == "t" else MINOR_PENALTY_S)

    def graph(self) -> nx.DiGraph:
        """Edge-to-edge graph (nodes are edges; an arc is a connection), weighted by free-flow time as SUMO's
        router weighs a route when it routes a trip at insertion (``MSEdge::getMinimumTravelTime``): the next
        edge at its speed limit, the path across the junction at its own (turning) speed, plus SUMO's default
        penalties on a link neither signalised nor major (``MSEdge::recalcCache``: not ``isTLSControlled()``, a
        state that is not an upper-case letter): 5 s for a turnaround (``--weights.turnaround-penalty``), else 1.5 s
        (``--weights.minor-penalty``); SUMO adds none on a signal's links (its ``--weights.tls-penalty`` is 0)."""
        g = nx.DiGraph()
        for e in self.edges.values():
            g.add_node(e.id, time=e.length / max(e.speed, 0.1))
        for c in self.connections:
            t = self.edges[c.to_edge]
            w = t.length / max(t.speed, 0.1) + self.crossing_cost(c)
            if not g.has_edge(c.from_edge, c.to_edge) or g[c.from_edge][c.to_edge]["weight"] > w:
                g.add_edge(c.from_edge, c.to_edge, weight=w)
        return g

    def junction_graph(self) -> nx.DiGraph:
        """Junction-to-junction graph (a road is an arc), for maps and Mesa's Network space."""
        g = nx.DiGraph()
        for j in self.junctions.values():
            g.add_node(j.id, pos=(j.x, j.y), kind=j.kind)
        for e in self.edges.values():
            g.add_edge(e.from_node, e.to_node, edge=e.id, length=e.length)
        return g

    def shortest_route(self, from_edge: str, to_edge: str, graph: nx.DiGraph | None = None) -> list[str]:
        """Free-flow fastest route between two edges (both included)."""
        g = graph or self.graph()
        for name, e in (("from", from_edge), ("to", to_edge)):
            if e not in self.edges:
                raise ConfigError(f"route.{name}", e, "an edge of the network")
        try:
            return nx.shortest_path(g, from_edge, to_edge, weight="weight")
        except nx.NetworkXNoPath:
            raise ConfigError("route", f"{from_edge}->{to_edge}", "a pair of edges joined by connections",
                              "No path exists in the network.") from None

    def validate(self) -> None:
        check(len(self.edges) > 0, "network.edges", 0, "at least one edge")
        for e in self.edges.values():
            check(e.from_node in self.junctions, f"edge[{e.id}].from", e.from_node, "a junction id")
            check(e.to_node in self.junctions, f"edge[{e.id}].to", e.to_node, "a junction id")
            check(len(e.lanes) > 0, f"edge[{e.id}].lanes", 0, "at least one lane")
            for l in e.lanes:
                check(l.length > 0, f"lane[{l.id}].length", l.length, "> 0 metres")
                check(l.speed > 0, f"lane[{l.id}].speed", l.speed, "> 0 m/s")
        for i, c in enumerate(self.connections):
            for side in ("from", "to"):
                eid, li = getattr(c, f"{side}_edge"), getattr(c, f"{side}_lane")
                check(eid in self.edges, f"connection[{i}].{side}", eid, "an edge id")
                check(0 <= li < len(self.edges[eid].lanes), f"connection[{i}].{side}Lane", li,
                      f"0..{len(self.edges[eid].lanes) - 1}")
            check(c.via_length >= 0, f"connection[{i}].via_length", c.via_length, ">= 0")
            check(c.via_speed > 0, f"connection[{i}].via_speed", c.via_speed, "> 0 m/s (+inf: no limit)")
            if c.tl is not None:
                check(c.tl in self.programs, f"connection[{i}].tl", c.tl, "a tlLogic id of the network")
                check(0 <= c.link_index < self.programs[c.tl].n_links, f"connection[{i}].linkIndex",
                      c.link_index, f"0..{self.programs[c.tl].n_links - 1}")
        for p in self.programs.values():
            p.validate()
