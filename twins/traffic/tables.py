"""Compile a :class:`RoadNetwork` and :class:`Demand` into the tensors the kernels read.

Lanes are numbered globally. A vehicle lives on a lane; crossing the stop line
puts it on a lane of the next edge of its route at position ``-via_length``.
Which lane: any lane of the next edge from which the edge after can be
reached (the route's *allowed lanes*), the one with most room — a strategic
lane choice made at the junction, which stands in for lane changing.

Signals: every link of every program gets a global index; the phase of each
program in each world is found from per-world phase durations and offsets,
so interventions can give each world its own plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from twins.core.errors import ConfigError

from .demand import Demand, departure_times
from .kernels import NO_SIGNAL, SIG_GREEN, SIG_GREEN_MINOR, SIG_RED, SIG_YELLOW, ZONE_BINS  # noqa: F401  (signal codes)
from .network import (GREEN, MINOR, YELLOW, RoadNetwork, best_lanes_lookahead, conflict_zone, same_source_siblings,
                      zone_start)


@dataclass
class NetworkTables:
    """Static network tensors (shared by all worlds)."""

    lane_ids: list[str]
    edge_ids: list[str]
    lane_length: torch.Tensor  # [L]
    lane_speed: torch.Tensor  # [L]
    lane_edge: torch.Tensor  # [L] int64
    lane_index: torch.Tensor  # [L] index within its edge
    edge_first_lane: torch.Tensor  # [E] int64
    edge_n_lanes: torch.Tensor  # [E] int64
    max_lanes: int
    # connections keyed by from_lane * E + to_edge (sorted), one per key
    conn_key: torch.Tensor  # [C] int64 sorted
    conn_via: torch.Tensor  # [C]
    conn_link: torch.Tensor  # [C] global signal link or NO_SIGNAL
    # right of way (kernels rule 10): whether an unsignalized connection is minor (yields always), and the
    # connections each one yields to (a minor one always, a signalized one while its signal shows 'g'); -1 padded
    conn_yield: torch.Tensor  # [C] bool
    # SUMO's zipper merge (unsignalized link state 'Z'): its links yield to each other, so the vehicle that arrives
    # first goes (ties: the lower connection index), and the other follows it (kernels rule 10)
    conn_zipper: torch.Tensor  # [C] bool
    # rule 4: whether a vehicle takes the connection only when it can clear the junction (RoadNetwork.keeps_clear)
    conn_keep_clear: torch.Tensor  # [C] bool
    # SUMO's cautious approach to a minor link: where the vehicle waits past the stop line (m), and from how far
    # before that point it sees its foes (m)
    conn_wait: torch.Tensor  # [C]
    conn_visibility: torch.Tensor  # [C]
    conn_to_edge: torch.Tensor  # [C] int64: each connection's to-edge (its foes into the same edge merge, not cross)
    conn_foes: torch.Tensor  # [C, F] int64
    # the parts of each foe's path (kernels.ZONE_BINS) this connection crosses, bitmask per conn_foes entry: a foe's
    # vehicle standing inside the junction is in the way only where its body covers one (network.conflict_zone)
    conn_zone: torch.Tensor  # [C, F] int64
    # m along each connection's own path from its line to where each foe's path crosses it (0 where unknown)
    conn_zone_at: torch.Tensor  # [C, F] float64
    has_foes: bool  # any connection yields to another (decided once: the step never asks the device)
    # the same connections by lane: lane_conn_edge[l, j] is the j-th edge lane l connects to (-1: none),
    # lane_conn[l, j] that connection's index in the arrays above (elementwise lookup in the kernel)
    lane_conn_edge: torch.Tensor  # [L, J] int64
    lane_conn: torch.Tensor  # [L, J] int64
    # rule 11 (lane changing): the lanes of its to-edge a connection leads to, as a bitmask of lane indices (with
    # lane changing a vehicle enters one of these, as in SUMO, and changes lanes on the edge to continue its route)
    conn_to_mask: torch.Tensor  # [C] int64
    # rule 10, SUMO's same-source foes: the other connections out of each connection's lane (-1 padded) and where
    # their paths part (network.divergence), past the stop line on this one's path and on the other's; a vehicle
    # follows one that left its lane by another connection until that one's back has passed the divergence
    conn_sib: torch.Tensor  # [C, J] int64
    conn_div: torch.Tensor  # [C, J]
    conn_div_foe: torch.Tensor  # [C, J]
    # signals
    program_ids: list[str]
    phase_durations: torch.Tensor  # [P, K] float64, 0 for padding
    phase_code: torch.Tensor  # [P, K, Lmax] int8 per link code
    program_offset: torch.Tensor  # [P] float64
    link_program: torch.Tensor  # [G] int64
    link_local: torch.Tensor  # [G] int64
    has_siblings: bool = False  # any conn_sib (decided once: the step never asks the device)

    @property
    def n_lanes(self) -> int:
        return len(self.lane_ids)

    @property
    def n_links(self) -> int:
        return int(self.link_program.numel())

    def to(self, device, dtype):
        out = {}
        for k, v in self.__dict__.items():
            if isinstance(v, torch.Tensor):
                v = v.to(device)
                if k in ("lane_length", "lane_speed", "conn_via", "conn_wait", "conn_visibility", "conn_div",
                         "conn_div_foe", "conn_zone_at"):
                    v = v.to(dtype)
            out[k] = v
        return NetworkTables(**out)


@dataclass
class RouteTables:
    route_edges: torch.Tensor  # [R, M] int64, -1 padding
    route_len: torch.Tensor  # [R] int64 number of edges
    route_mask: torch.Tensor  # [R, M] int64 bitmask of allowed lane indices on each edge
    route_length_m: torch.Tensor  # [R] float64 total length (edges + junction paths)
    route_free_time: torch.Tensor  # [R] float64 free-flow travel time at the speed limits
    # [R, M] float64: the speed limit across the junction after route edge k (the slowest connection from
    # edge k to edge k + 1, Connection.via_speed); +inf on the last edge, in padding and where none is set
    route_turn_speed: torch.Tensor
    has_turn_speeds: bool = False  # any finite turning speed (decided once, so the step never asks the device)
    # [R, M] int64 bitmask (kernels rule 11): SUMO's "best lanes" of each route edge: the lanes of route_mask whose
    # connection leads to a best lane of the next edge (where none does, the ones that leave fewest lane changes
    # there), over the edges SUMO looks ahead to from that edge (network.best_lanes_lookahead; on the last of them
    # every lane, on the route's last edge every lane). A vehicle changes lanes to reach one, and enters one where
    # it can
    route_best_mask: torch.Tensor | None = None
    # [R, M] float64 m (kernels rule 11, keep-right): the length of the route edges after edge k that SUMO's best lanes
    # look ahead to from it (network.best_lanes_lookahead), so that a best lane goes on for its remaining length plus
    # this (SUMO's LaneQ.length)
    route_ahead_m: torch.Tensor | None = None
    # [R, M, max lanes] float64 m (kernels rule 11): SUMO's ``LaneQ.length`` seen from route edge k: per lane of that
    # edge, how far a vehicle drives from the lane's start along its route without changing lanes, over the edges
    # SUMO looks ahead to from edge k (the last of them: its own length); +inf on the route's last edge and in padding
    route_lane_cont: torch.Tensor | None = None


def network_tables(net: RoadNetwork) -> NetworkTables:
    net.validate()
    edge_ids = list(net.edges)
    edge_pos = {e: i for i, e in enumerate(edge_ids)}
    lane_ids, length, speed, lane_edge, lane_index, first, count = [], [], [], [], [], [], []
    for i, e in enumerate(net.edges.values()):
        first.append(len(lane_ids))
        count.append(len(e.lanes))
        for ln in sorted(e.lanes, key=lambda l: l.index):
            lane_ids.append(ln.id)
            length.append(ln.length)
            speed.append(ln.speed)
            lane_edge.append(i)
            lane_index.append(ln.index)
    E = len(edge_ids)

    program_ids = list(net.programs)
    prog_pos = {p: i for i, p in enumerate(program_ids)}
    link_offset, link_program, link_local = {}, [], []
    for p in program_ids:
        link_offset[p] = len(link_program)
        n = net.programs[p].n_links
        link_program += [prog_pos[p]] * n
        link_local += list(range(n))

    conns, merged = {}, {}
    for c in net.connections:
        lane = first[edge_pos[c.from_edge]] + c.from_lane
        key = lane * E + edge_pos[c.to_edge]
        link = link_offset[c.tl] + c.link_index if c.tl is not None else NO_SIGNAL
        if key not in conns:  # several lane-to-lane connections: keep the first's signal and path
            conns[key] = (c.via_length, link)
            merged[key] = []
        merged[key].append(c)  # ... and yield as any of them does (their links' foes together)
    keys = sorted(conns)
    # rule 10: (junction, request index) -> compiled connection, then each connection's foes
    at_link = {}
    for i, key in enumerate(keys):
        for c in merged[key]:
            if c.junction_index >= 0:
                at_link.setdefault((net.edges[c.from_edge].to_node, c.junction_index), i)
    foes = []
    for key in keys:
        out = set()
        for c in merged[key]:
            junction = net.junctions.get(net.edges[c.from_edge].to_node)
            for k in (junction.yields_to.get(c.junction_index, []) if junction is not None else []):
                if (junction.id, k) in at_link:  # a foe link of cars (not of a dropped footpath, say)
                    out.add(at_link[(junction.id, k)])
        foes.append(sorted(out))
    F = max((len(f) for f in foes), default=0) or 1
    conn_foes = torch.full((len(keys), F), -1, dtype=torch.int64)
    conn_zone = torch.zeros((len(keys), F), dtype=torch.int64)
    conn_zone_at = torch.zeros((len(keys), F), dtype=torch.float64)
    for i, f in enumerate(foes):
        conn_foes[i, :len(f)] = torch.tensor(f, dtype=torch.int64)
        conn_zone[i, :len(f)] = torch.tensor(
            [conflict_zone(merged[keys[i]][0], merged[keys[k]][0], ZONE_BINS) for k in f], dtype=torch.int64)
        conn_zone_at[i, :len(f)] = torch.tensor(
            [zone_start(merged[keys[i]][0], merged[keys[k]][0], ZONE_BINS) for k in f], dtype=torch.float64)
    conn_yield = torch.tensor([merged[k][0].tl is None and merged[k][0].state in MINOR for k in keys], dtype=torch.bool)
    conn_zipper = torch.tensor([merged[k][0].tl is None and merged[k][0].state == "Z" for k in keys], dtype=torch.bool)
    by_lane = [[] for _ in lane_ids]
    for i, key in enumerate(keys):
        by_lane[key // E].append((key % E, i))
    J = max((len(b) for b in by_lane), default=0) or 1
    lane_conn_edge = torch.full((len(lane_ids), J), -1, dtype=torch.int64)
    lane_conn = torch.full((len(lane_ids), J), -1, dtype=torch.int64)
    for lane, b in enumerate(by_lane):
        for j, (e, i) in enumerate(b):
            lane_conn_edge[lane, j], lane_conn[lane, j] = e, i
    conn_sib = torch.full((len(keys), J), -1, dtype=torch.int64)
    conn_div = torch.zeros((len(keys), J), dtype=torch.float64)
    conn_div_foe = torch.zeros((len(keys), J), dtype=torch.float64)
    siblings = same_source_siblings([[merged[keys[i]][0] for _, i in b] for b in by_lane])
    for b, rows in zip(by_lane, siblings):
        for (_, i), row in zip(b, rows):
            for j, (k, d_own, d_other) in enumerate(row):
                conn_sib[i, j], conn_div[i, j], conn_div_foe[i, j] = b[k][1], d_own, d_other
    K = max((len(p.phases) for p in net.programs.values()), default=1)
    Lmax = max((p.n_links for p in net.programs.values()), default=1)
    P = len(program_ids)
    durations = torch.zeros(P, K, dtype=torch.float64)
    code = torch.full((P, K, Lmax), SIG_RED, dtype=torch.int8)
    offsets = torch.zeros(P, dtype=torch.float64)
    for i, p in enumerate(program_ids):
        prog = net.programs[p]
        offsets[i] = prog.offset
        for k, ph in enumerate(prog.phases):
            durations[i, k] = ph.duration
            for j, ch in enumerate(ph.state):
                code[i, k, j] = (SIG_GREEN_MINOR if ch == "g" else SIG_GREEN if ch in GREEN or ch in "oO"
                                 else SIG_YELLOW if ch in YELLOW else SIG_RED)
    return NetworkTables(
        lane_ids=lane_ids,
        edge_ids=edge_ids,
        lane_length=torch.tensor(length, dtype=torch.float64),
        lane_speed=torch.tensor(speed, dtype=torch.float64),
        lane_edge=torch.tensor(lane_edge, dtype=torch.int64),
        lane_index=torch.tensor(lane_index, dtype=torch.int64),
        edge_first_lane=torch.tensor(first, dtype=torch.int64),
        edge_n_lanes=torch.tensor(count, dtype=torch.int64),
        max_lanes=max(count),
        conn_key=torch.tensor(keys, dtype=torch.int64),
        conn_via=torch.tensor([conns[k][0] for k in keys], dtype=torch.float64),
        conn_link=torch.tensor([conns[k][1] for k in keys], dtype=torch.int64),
        conn_yield=conn_yield,
        conn_zipper=conn_zipper,
        conn_keep_clear=torch.tensor([net.keeps_clear(merged[k][0]) for k in keys], dtype=torch.bool),
        conn_wait=torch.tensor([merged[k][0].wait_length for k in keys], dtype=torch.float64),
        conn_visibility=torch.tensor([merged[k][0].visibility for k in keys], dtype=torch.float64),
        conn_to_edge=torch.tensor([k % E for k in keys], dtype=torch.int64),
        conn_foes=conn_foes,
        conn_zone=conn_zone,
        conn_zone_at=conn_zone_at,
        has_foes=bool((conn_foes >= 0).any()),
        lane_conn_edge=lane_conn_edge,
        lane_conn=lane_conn,
        conn_to_mask=torch.tensor([sum({1 << c.to_lane for c in merged[k]}) for k in keys], dtype=torch.int64),
        conn_sib=conn_sib,
        conn_div=conn_div,
        conn_div_foe=conn_div_foe,
        program_ids=program_ids,
        phase_durations=durations,
        phase_code=code,
        program_offset=offsets,
        link_program=torch.tensor(link_program, dtype=torch.int64),
        link_local=torch.tensor(link_local, dtype=torch.int64),
        has_siblings=bool((conn_sib >= 0).any()),
    )


def concat_routes(a: RouteTables, b: RouteTables) -> RouteTables:
    """The rows of ``a`` then those of ``b`` (padded to the wider of the two)."""
    M = max(a.route_edges.shape[1], b.route_edges.shape[1])
    lanes = max(a.route_lane_cont.shape[2], b.route_lane_cont.shape[2])

    def cat(k, fill):
        x, y = getattr(a, k), getattr(b, k)
        return torch.cat([torch.nn.functional.pad(z, (0, M - z.shape[1]), value=fill) for z in (x, y)])
    return RouteTables(cat("route_edges", -1), torch.cat([a.route_len, b.route_len]), cat("route_mask", 0),
                          torch.cat([a.route_length_m, b.route_length_m]),
                          torch.cat([a.route_free_time, b.route_free_time]), cat("route_turn_speed", float("inf")),
                          a.has_turn_speeds or b.has_turn_speeds, cat("route_best_mask", 0), cat("route_ahead_m", 0.0),
                          torch.cat([torch.nn.functional.pad(z.route_lane_cont, (0, lanes - z.route_lane_cont.shape[2],
                                                                                 0, M - z.route_lane_cont.shape[1]),
                                                             value=float("inf")) for z in (a, b)]))


def route_links(net: RoadNetwork) -> tuple[dict, dict]:
    """What :func:`route_tables` needs of the connections: per (from edge, to edge) the from-lanes, the shortest
    junction path and the slowest turning speed; per (from edge, from lane, to edge) the to-lanes."""
    succ: dict[str, dict[str, tuple[set, float, float]]] = {}
    to_lanes: dict[tuple[str, int, str], set[int]] = {}
    for c in net.connections:
        to_lanes.setdefault((c.from_edge, c.from_lane, c.to_edge), set()).add(c.to_lane)
        d = succ.setdefault(c.from_edge, {})
        lanes, via, vs = d.get(c.to_edge, (set(), c.via_length, c.via_speed))
        lanes.add(c.from_lane)
        d[c.to_edge] = (lanes, min(via, c.via_length), min(vs, c.via_speed))
    return succ, to_lanes


def route_tables(net: RoadNetwork, routes: list[list[str]], names: list[str] | None = None,
                   links: tuple[dict, dict] | None = None) -> RouteTables:
    """Route tables; every consecutive pair must be joined by a connection. ``links``: :func:`route_links` of
    ``net``, when the caller compiles routes of one network again and again."""
    edge_pos = {e: i for i, e in enumerate(net.edges)}
    succ, to_lanes = links if links is not None else route_links(net)
    for i, r in enumerate(routes):
        if not r:  # a row of -1 padding only, e.g.; no lane to insert on
            raise ConfigError(names[i] if names else f"route[{i}]", list(r), "a route of at least one edge")
    M = max(len(r) for r in routes)
    R = len(routes)
    # built in numpy (host tables, element by element: no tensor operation per element), tensors at the end
    edges = np.full((R, M), -1, dtype=np.int64)
    mask = np.zeros((R, M), dtype=np.int64)
    total = np.zeros(R, dtype=np.float64)
    free = np.zeros(R, dtype=np.float64)
    turn = np.full((R, M), np.inf, dtype=np.float64)
    for i, r in enumerate(routes):
        name = names[i] if names else f"route[{i}]"
        for k, e in enumerate(r):
            if e not in net.edges:
                raise ConfigError(f"{name}.edges", e, "edges that exist in the network")
            edge = net.edges[e]
            edges[i, k] = edge_pos[e]
            total[i] += edge.length
            free[i] += edge.length / edge.speed
            if k + 1 < len(r):
                nxt = succ.get(e, {}).get(r[k + 1])
                if nxt is None:
                    raise ConfigError(f"{name}", f"{e} -> {r[k + 1]}",
                                      "consecutive edges joined by a connection",
                                      "The route leaves the edge in a direction the junction does not allow.")
                lanes, via, turn[i, k] = nxt
                mask[i, k] = sum(1 << l for l in lanes)
                total[i] += via
                free[i] += via / net.edges[r[k + 1]].speed
            else:
                mask[i, k] = (1 << len(edge.lanes)) - 1
    best = mask.copy()
    ahead_m = np.zeros((R, M), dtype=np.float64)
    cont = np.full((R, M, max(len(e.lanes) for e in net.edges.values())), np.inf)
    for i, r in enumerate(routes):
        lengths = [net.edges[e].lanes[0].length for e in r]
        passes: dict[int, dict[int, int]] = {}  # the last edge seen -> best lanes per edge back from it
        conts: dict[int, dict[int, list[float]]] = {}  # ... and each lane's continuation per edge back from it
        for k0 in range(len(r) - 1):
            # as SUMO, from the edges a vehicle on edge k0 looks ahead to: every lane of the last one it sees (the
            # lanes it leaves that one by do not matter yet), then back to k0; edges that see the same last edge
            # share the pass (k0 grows, so the first of them takes it furthest back)
            end = best_lanes_lookahead(lengths, k0)
            ahead_m[i, k0] = sum(lengths[k0 + 1:end + 1])
            if end not in passes:
                cur, passes[end] = (1 << len(net.edges[r[end]].lanes)) - 1, {}
                run, conts[end] = [ln.length for ln in net.edges[r[end]].lanes], {}
                for k in range(end - 1, k0 - 1, -1):
                    ahead = [b for b in range(len(net.edges[r[k + 1]].lanes)) if (cur >> b) & 1]
                    # each lane by how many changes its connection leaves to reach a best lane of the next edge
                    need = {l: min(abs(t - b) for t in to_lanes[(r[k], l, r[k + 1])] for b in ahead)
                            for l in range(len(net.edges[r[k]].lanes)) if (int(mask[i, k]) >> l) & 1}
                    fewest = min(need.values())
                    cur = passes[end][k] = sum(1 << l for l, n in need.items() if n == fewest)
                    # ... and how far each lane goes on: itself, then the longest way on from the lanes it leads to
                    run = conts[end][k] = [ln.length + (max(run[t] for t in to_lanes[(r[k], l, r[k + 1])])
                                                        if (int(mask[i, k]) >> l) & 1 else 0.0)
                                           for l, ln in enumerate(net.edges[r[k]].lanes)]
            best[i, k0] = passes[end][k0]
            cont[i, k0, :len(conts[end][k0])] = conts[end][k0]
    t = torch.from_numpy
    return RouteTables(t(edges), torch.tensor([len(r) for r in routes]), t(mask), t(total), t(free), t(turn),
                       bool(np.isfinite(turn).any()), t(best), t(ahead_m), t(cont))


@dataclass
class Population:
    """Per-world vehicle slots, sorted by desired departure within each world."""

    flow: torch.Tensor  # [W, S] int64, -1 for an empty slot
    index_in_flow: torch.Tensor  # [W, S] int64
    depart: torch.Tensor  # [W, S] float64 seconds, inf for an empty slot
    vehicle_id: torch.Tensor  # [W, S] int64 global id: flow_offset + k (stable across worlds and policies)


def build_population(demand: Demand, seed: int, replications: torch.Tensor) -> Population:
    """All vehicles a world may ever load; per-world slot order by departure then id.

    Every world at once: each flow's departures are drawn for all worlds in one call (the noise is
    elementwise, keyed by replication, and the only reductions run along a world's own row), so a world's
    numbers never depend on the batch it is built in or its position there (``tests/traffic/test_build_vectorised.py``
    compares a batch with one world at a time, bit for bit)."""
    W = replications.numel()
    reps = replications.cpu()
    caps = [f.capacity() for f in demand.flows]
    if not caps:
        z = torch.zeros(W, 0)
        return Population(z.long(), z.long(), z.double(), z.long())
    N = sum(caps)
    # the slot count comes from the flows' capacities (never from this batch's draws),
    # padded to a multiple of 16: a world's row layout is the same in any batch
    S = max(16, -(-N // 16) * 16)
    # column j < N: vehicle id j, the flows' vehicles in id order (flow by flow, k = 0, 1, ...); then padding
    t = torch.full((W, S), torch.inf, dtype=torch.float64)
    at = 0
    for i, f in enumerate(demand.flows):
        ti = departure_times(f, i, seed, reps)
        cap = ti.shape[1]
        if f.kind == "poisson" and cap > 0 and bool(torch.isfinite(ti[:, -1]).any()):
            raise ConfigError(f"flow[{f.id}]", cap, "a capacity the Poisson draw never reaches",
                              "This should be astronomically rare; please report it.")
        t[:, at:at + cap] = ti
        at += cap
    caps_t = torch.tensor(caps, dtype=torch.int64)
    col_flow = torch.repeat_interleave(torch.arange(len(caps), dtype=torch.int64), caps_t, output_size=N)
    col_k = torch.arange(N, dtype=torch.int64) - (torch.cumsum(caps_t, 0) - caps_t)[col_flow]
    pad = torch.full((S - N,), -1, dtype=torch.int64)
    col_flow, col_k = torch.cat([col_flow, pad]), torch.cat([col_k, pad])
    # order by (depart, id): the columns are in id order, so one stable sort by departure (ties keep the id
    # order; the padding, +inf, stays last as the last columns)
    t, vid = torch.sort(t, dim=1, stable=True)
    fl, k = col_flow[vid], col_k[vid]
    vid[:, N:] = -1
    fl.masked_fill_(~torch.isfinite(t), -1)
    return Population(fl, k, t, vid)


# ---------------------------------------------------------------------------------------------
# per-world variations written by interventions (read by TrafficTwin.__init__)
def route_edge_lists(edge_ids: list[str], rows: torch.Tensor) -> list[list[str]]:
    """Edge-index rows ``[X, M]`` (-1 padded) as lists of edge ids (for :func:`route_tables`)."""
    rows = rows.detach().cpu().to(torch.int64)
    return [[edge_ids[int(i)] for i in r if int(i) >= 0] for r in rows]


def route_edge_rows(edge_ids: list[str], routes: list[list[str]], width: int | None = None) -> torch.Tensor:
    """Lists of edge ids as edge-index rows ``[X, M]`` (-1 padded), the inverse of :func:`route_edge_lists`."""
    pos = {e: i for i, e in enumerate(edge_ids)}
    M = max([width or 0] + [len(r) for r in routes])
    out = torch.full((len(routes), M), -1, dtype=torch.int64)
    for i, r in enumerate(routes):
        out[i, :len(r)] = torch.tensor([pos[e] for e in r], dtype=torch.int64)
    return out


def slot_routes(flow: torch.Tensor, route_of_flow: torch.Tensor | None) -> torch.Tensor:
    """Per-slot route index ``[W, S]``: flow ``f`` of world ``w`` drives route ``route_of_flow[w, f]``
    (identity when ``None``); empty slots (flow -1) stay -1."""
    if route_of_flow is None:
        return flow
    rof = route_of_flow.to(flow.device, torch.int64)
    return torch.where(flow >= 0, rof.gather(1, flow.clamp(min=0)), flow)


def retention_draws(seed: int, replications: torch.Tensor, vehicle_id: torch.Tensor) -> torch.Tensor:
    """U(0,1) per vehicle, keyed by (replication, vehicle id) on :attr:`Stream.CHOICE`: the same vehicle
    gets the same number in every policy arm (noise alignment)."""
    from twins.core import noise

    rep = replications.to(vehicle_id.device, torch.int64).unsqueeze(1)
    return noise.uniform(seed, rep, noise.Stream.CHOICE, vehicle_id, 0, 0, device=vehicle_id.device)


def thin_population(pop: Population, retention: torch.Tensor | None, seed: int,
                    replications: torch.Tensor) -> Population:
    """Keep vehicle ``v`` of flow ``f`` in world ``w`` iff ``u_v < retention[w, f]`` (``u`` from
    :func:`retention_draws`); a dropped vehicle becomes an empty slot (departure +inf, flow and id -1),
    never loaded. Rows are re-sorted by departure (stable, so survivors keep their (depart, id) order).
    Worlds whose retention is 1 everywhere keep their rows bit for bit; ``None`` returns ``pop``."""
    if retention is None:
        return pop
    ret = retention.detach().cpu().to(torch.float64)
    W, S = pop.flow.shape
    if ret.dim() != 2 or ret.shape[0] != W:
        raise ConfigError("worlds.params.flow_retention", tuple(ret.shape), f"a [W={W}, flows] tensor")
    if bool(((ret < 0) | (ret > 1) | ~torch.isfinite(ret)).any()):
        raise ConfigError("worlds.params.flow_retention", "values outside [0, 1]", "shares in [0, 1]")
    if bool((ret == 1).all()) or S == 0:
        return pop
    if int(pop.flow.max()) >= ret.shape[1]:
        raise ConfigError("worlds.params.flow_retention", tuple(ret.shape), "one column per flow")
    u = retention_draws(seed, replications.cpu(), pop.vehicle_id)
    r = ret.gather(1, pop.flow.clamp(min=0))
    drop = (pop.flow >= 0) & ~(u < r)
    if not bool(drop.any()):
        return pop
    t = torch.where(drop, torch.inf, pop.depart)
    fl, k, vid = (torch.where(drop, -1, x) for x in (pop.flow, pop.index_in_flow, pop.vehicle_id))
    order = torch.argsort(t, dim=1, stable=True)
    return Population(*(x.gather(1, order) for x in (fl, k, t, vid)))
