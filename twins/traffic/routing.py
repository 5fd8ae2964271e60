"""Routing trips at insertion on each world's current travel times, as SUMO routes vehicles given as trips.

SUMO equips a vehicle defined by its origin and destination (a ``<trip>``, or a ``<flow>`` with ``from``/``to``)
with its rerouting device and routes it when it is inserted, on the edge travel times of that moment
(``MSRoutingEngine``; ``--vehroute-output`` records ``reason="device.rerouting"``). The twin does the same per
world (``scenario.routing=insertion``): every step it updates each edge's smoothed speed from the vehicles on
it, and a vehicle whose departure time has come gets the fastest route from its first to its last edge on those
times (Dijkstra on the edge graph). What follows SUMO:

* an edge's speed sample is SUMO's ``MSEdge::getMeanSpeed``: each lane's mean speed weighted by its number of
  vehicles, an empty lane counting as one vehicle at its speed limit, and the edge's lanes closed to cars (SUMO's
  sidewalks and bike lanes, which the twin does not model: ``Edge.closed_lane_speeds``) counted as such empty
  lanes; so a queue on one lane of an edge with a free lane or a sidewalk beside it is not taken as the edge's
  speed (with the plain mean of the vehicles' speeds, the twin's router steered ~45 an hour fewer vehicles than
  SUMO's into RESCO ingolstadt21's single-lane corridor `-201201945`, whose edges have sidewalks). The router's
  edge time is ``length / max(smoothed speed, 0.1 m/s)``;
* the samples are smoothed over about ``--device.rerouting.adaptation-steps`` = 180 steps of 1 s, here as an
  exponential average with the same mean age (``alpha = 2 / (180 + 1)``; SUMO keeps the plain mean of the last
  180 samples): a simplification;
* a connection costs its path across the junction at its own speed plus SUMO's penalties on links neither
  signalised nor major (5 s for a turnaround, else 1.5 s; none on a signal's links, as ``MSEdge::recalcCache``: adding
  them there steered trips away from RESCO ingolstadt21's signalised corridors, lanes' summed time-loss difference
  from SUMO's 596k -> 578k s once removed): :meth:`~twins.traffic.network.RoadNetwork.crossing_cost`, also used by
  :meth:`~twins.traffic.network.RoadNetwork.graph` (the cost at the start, free flow);
* the samples are summed on the device in whole µm/s (integers: exact, so the same in any summation order,
  CUDA's atomics included) and smoothed there; only the rows of the worlds that route in the next step are
  copied to the host, without waiting, right after the step that samples them;
* the route is chosen once, when the vehicle's departure time has come (SUMO routes at the insertion attempt and
  every ``pre-period`` = 60 s while a vehicle waits to be inserted; here the first choice stays).

Routes are rows of the twin's route table; a route not in the table yet is compiled and appended (rows are
never removed, so a slot's row index stays valid). Each world's numbers depend only on that world's state, so
batch independence and paired arms (a null intervention gives exactly zero) hold.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch

from .network import RoadNetwork

ADAPTATION_STEPS = 180  # SUMO's --device.rerouting.adaptation-steps (samples of 1 s)
MIN_SPEED = 0.1  # m/s: the slowest speed a travel time is computed with
SPEED_STEPS_PER_MPS = 1_000_000  # samples are summed in whole µm/s
# routes_many: at most this many entries in one call's tables (origins x nodes). Every origin's row spans all the
# group's copies, so the tables grow with the square of the group: small groups (a few worlds) cost least once a
# call's overhead is paid (64 worlds of RESCO cologne8: 4M entries 12.3-12.8 s an hour, 64k 10.9 s)
GROUP_ENTRIES = 1 << 16


class InsertionRouter:
    """Per-world smoothed edge speeds and the fastest route of each trip at its departure."""

    def __init__(self, net: RoadNetwork, edge_ids: list[str], W: int, dt: float, device="cpu"):
        self.edge_ids = edge_ids
        self.index = {e: i for i, e in enumerate(edge_ids)}
        E = len(edge_ids)
        self.length = np.array([net.edges[e].length for e in edge_ids])
        # the lanes in the twin's order (tables.network_tables): each one's edge, and its speed limit in whole µm/s;
        # per edge the lanes closed to cars, always empty (SUMO's edge mean speed counts them at their limits)
        lanes = [(i, ln.speed) for i, e in enumerate(edge_ids)
                 for ln in sorted(net.edges[e].lanes, key=lambda l: l.index)]
        self.lane_edge = np.array([i for i, _ in lanes], dtype=np.int64)
        self.lane_limit = np.array([_speed_units(v) for _, v in lanes], dtype=np.int64)
        self.closed_n = np.array([len(net.edges[e].closed_lane_speeds) for e in edge_ids], dtype=np.int64)
        self.closed_sum = np.array([sum(_speed_units(v) for v in net.edges[e].closed_lane_speeds) for e in edge_ids],
                                   dtype=np.int64)
        # arcs of the edge graph: a -> b costs b's travel time plus the crossing (free-flow time and penalties)
        arcs = {}
        for c in net.connections:
            key = (self.index[c.from_edge], self.index[c.to_edge])
            arcs[key] = min(net.crossing_cost(c), arcs.get(key, np.inf))
        # the graph's CSR layout once (arcs sorted by tail, then head); each call fills in the costs only
        keys = sorted(arcs)
        self.arc_to = np.array([b for _, b in keys], dtype=np.int64)
        self.arc_cost = np.array([arcs[k] for k in keys])
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount([a for a, _ in keys], minlength=E))])
        self.graph = scipy.sparse.csr_matrix((self.arc_cost.copy(), self.arc_to, self.indptr), shape=(E, E))  # forced()
        self._graphs: dict[int, scipy.sparse.csr_matrix] = {}  # routes_many: n copies side by side, by n
        self._forced: dict[tuple[int, int], list[str] | None] = {}
        self._reverse = None  # the graph's arcs reversed (structure only), for forced()
        self.E = E
        self.W = W
        self._lane_edge = torch.tensor(self.lane_edge, device=device)
        self._lane_limit = torch.tensor(self.lane_limit, device=device)
        self._closed = torch.tensor(np.stack([self.closed_n, self.closed_sum]), device=device)
        # [W, E] smoothed speeds on the device, free flow at the start (an empty edge's sample, as SUMO starts)
        self.speed = self._empty_sample().repeat(W, 1)
        # an exponential average with the mean age of a plain mean over ADAPTATION_STEPS samples of 1 s
        self.alpha = min(1.0, 2.0 / (ADAPTATION_STEPS / dt + 1.0))

    def observe(self, lane: torch.Tensor, speed: torch.Tensor, world: torch.Tensor, running: torch.Tensor) -> None:
        """One step's sample, on the device and without a host read: ``lane``, ``speed``, ``world`` of vehicles,
        ``running`` the ones counted (tensors of one shape). On the CPU the same arithmetic runs in numpy on the
        same memory (a torch operation's dispatch costs more than these small arrays' work: 5x per step)."""
        if self.speed.device.type == "cpu":
            self._observe_host(lane, speed, world, running)
        else:
            self._observe_device(lane, speed, world, running)

    def _empty_sample(self) -> torch.Tensor:
        """An empty edge's sample [E] (every lane counted once at its limit, closed lanes included)."""
        n = torch.zeros(self.E, dtype=torch.int64, device=self._lane_edge.device).index_add_(
            0, self._lane_edge, torch.ones_like(self._lane_limit)) + self._closed[0]
        s = torch.zeros_like(n).index_add_(0, self._lane_edge, self._lane_limit) + self._closed[1]
        return s.to(torch.float64) / SPEED_STEPS_PER_MPS / n

    def _observe_host(self, lane, speed, world, running) -> None:
        W, E, L = self.W, self.E, len(self.lane_edge)
        seg = np.where(running.numpy(), world.numpy() * L + lane.numpy(), W * L).reshape(-1)
        q = np.round(speed.numpy().reshape(-1).astype(np.float64) * SPEED_STEPS_PER_MPS).astype(np.int64)
        n = np.bincount(seg, minlength=W * L + 1)[:-1].reshape(W, L)
        # integer sums below 2**53 (int64 -> float64 exact), so a weighted bincount sums them exactly too
        s = np.bincount(seg, weights=q, minlength=W * L + 1)[:-1].reshape(W, L).astype(np.int64)
        # SUMO's MSEdge::getMeanSpeed: an empty lane counts as one vehicle at its limit; lanes summed per edge
        # (bincount's float64 sums of integers below 2**53 are exact: the device's int64 sums, bit for bit)
        s, n = np.where(n > 0, s, self.lane_limit), np.maximum(n, 1)
        to_edge = (np.arange(W)[:, None] * E + self.lane_edge).reshape(-1)
        s_e = np.bincount(to_edge, weights=s.reshape(-1), minlength=W * E).reshape(W, E) + self.closed_sum
        n_e = np.bincount(to_edge, weights=n.reshape(-1), minlength=W * E).reshape(W, E) + self.closed_n
        sample = s_e / SPEED_STEPS_PER_MPS / n_e
        smoothed = self.speed.numpy()  # (the same memory)
        smoothed += self.alpha * (sample - smoothed)

    def _observe_device(self, lane, speed, world, running) -> None:
        W, L = self.W, len(self.lane_edge)
        seg = torch.where(running, world * L + lane, W * L).reshape(-1)
        q = torch.round(speed.reshape(-1).to(torch.float64) * SPEED_STEPS_PER_MPS).to(torch.int64)
        acc = torch.zeros(2, W * L + 1, dtype=torch.int64, device=seg.device).index_add_(
            1, seg, torch.stack([torch.ones_like(q), q]))
        n, s = acc[0, :-1].view(W, L), acc[1, :-1].view(W, L)
        s, n = torch.where(n > 0, s, self._lane_limit), n.clamp(min=1)
        acc_e = self._closed.unsqueeze(1).repeat(1, W, 1).index_add_(2, self._lane_edge, torch.stack([n, s]))
        sample = acc_e[1].to(torch.float64) / SPEED_STEPS_PER_MPS / acc_e[0]
        self.speed += self.alpha * (sample - self.speed)

    def routes(self, world: int, pairs: list[tuple[int, int]], speed: np.ndarray | None = None) -> list[list[str]]:
        """The fastest route in ``world`` for each (first edge, last edge) pair, as edge-id lists (None where there
        is none); ``speed``: that world's smoothed speeds already on the host (else they are read from the device)."""
        if speed is None:
            speed = self.speed[world].cpu().numpy()
        return self.routes_many({world: pairs}, {world: speed})[world]

    def routes_many(self, pairs: dict[int, list[tuple[int, int]]], speeds: dict[int, np.ndarray]
                    ) -> dict[int, list[list[str] | None]]:
        """:meth:`routes` for several worlds at once (``pairs`` and ``speeds`` by world): the worlds' graphs side by
        side as one graph of disconnected copies, searched in one call per group of worlds (a call costs more than
        a small network's search; a search never leaves its world's copy, so each finds what it would alone)."""
        forced = {w: [self.forced(a, b) for a, b in ps] for w, ps in pairs.items()}
        searched = [w for w, ps in pairs.items() if any(f is None for f in forced[w])]
        pred, offset = {}, {}
        for group in self._groups(searched, pairs):
            graph = self._copies(len(group))
            tt = self.length / np.maximum(np.stack([speeds[w] for w in group]), MIN_SPEED)  # [worlds, edges]
            np.add(self.arc_cost, tt[:, self.arc_to], out=graph.data.reshape(len(group), -1))  # each world's copy
            origins = sorted({k * self.E + a for k, w in enumerate(group)
                              for (a, _), f in zip(pairs[w], forced[w]) if f is None})
            _, p = scipy.sparse.csgraph.dijkstra(graph, indices=origins, return_predecessors=True)
            for i, o in enumerate(origins):
                w = group[o // self.E]
                pred[w, o % self.E], offset[w, o % self.E] = p[i], (o // self.E) * self.E
        out = {}
        for w, ps in pairs.items():
            out[w] = []
            for (a, b), f in zip(ps, forced[w]):
                if f is not None:
                    out[w].append(f)
                    continue
                p, off = pred[w, a], offset[w, a]
                node, path = off + b, [b]
                while node != off + a:
                    node = int(p[node])
                    if node < 0:  # unreachable: keep None (the caller keeps the file's route)
                        path = None
                        break
                    path.append(node - off)
                out[w].append(None if path is None else [self.edge_ids[e] for e in reversed(path)])
        return out

    def _groups(self, worlds: list[int], pairs: dict) -> list[list[int]]:
        """The worlds to search, in groups whose searches' tables (one row of a group's size per origin) stay
        below :data:`GROUP_ENTRIES` entries."""
        groups, cur, n_orig = [], [], 0
        for w in worlds:
            k = len({a for a, _ in pairs[w]})
            if cur and (n_orig + k) * (len(cur) + 1) * self.E > GROUP_ENTRIES:
                groups.append(cur)
                cur, n_orig = [], 0
            cur.append(w)
            n_orig += k
        return groups + ([cur] if cur else [])

    def _copies(self, n: int):
        """The graph of ``n`` disconnected copies of the edge graph (structure kept per ``n``; costs written per
        search)."""
        if n not in self._graphs:
            A = len(self.arc_to)
            indptr = np.concatenate([[0], (self.indptr[1:][None, :] + A * np.arange(n)[:, None]).ravel()])
            to = (self.arc_to[None, :] + self.E * np.arange(n)[:, None]).ravel()
            self._graphs[n] = scipy.sparse.csr_matrix((np.zeros(n * A), to, indptr), shape=(n * self.E, n * self.E))
        return self._graphs[n]

    def forced(self, a: int, b: int) -> list[str] | None:
        """The route from edge ``a`` to edge ``b`` where the network leaves no choice, else None (a search is
        needed). Forced: the edges reachable from ``a`` that reach ``b`` form one chain from ``a`` to ``b``, each
        with one successor among them (then every travel time gives that route, the only simple path; a search
        would find it too). Found once per pair, from the graph's structure alone."""
        key = (a, b)
        if key not in self._forced:
            self._forced[key] = None if (path := self._only_path(a, b)) is None else [self.edge_ids[e] for e in path]
        return self._forced[key]

    def _only_path(self, a: int, b: int) -> list[int] | None:
        if a == b:
            return [a]
        if self._reverse is None:
            self._reverse = self.graph.T.tocsr()
        bfs = scipy.sparse.csgraph.breadth_first_order
        ahead = set(bfs(self.graph, a, directed=True, return_predecessors=False).tolist())
        behind = set(bfs(self._reverse, b, directed=True, return_predecessors=False).tolist())
        between = ahead & behind
        path, node = [a], a
        while node != b:
            nxt = [int(x) for x in self.arc_to[self.indptr[node]:self.indptr[node + 1]] if int(x) in between]
            if len(nxt) != 1 or nxt[0] in path:
                return None
            node = nxt[0]
            path.append(node)
        if any(int(x) in between for x in self.arc_to[self.indptr[b]:self.indptr[b + 1]]) or len(path) != len(between):
            return None  # (a way on from b back into the chain: a loop, so not one chain)
        return path


def _speed_units(v: float) -> int:
    """A speed in the samples' whole µm/s."""
    return int(round(v * SPEED_STEPS_PER_MPS))


def due_now(depart_sorted: np.ndarray, t: float, dt: float) -> slice:
    """The entries of ascending departure times whose time falls in this step, ``(t - dt, t]`` (the step inserts
    them): two binary searches on host data, nothing read from the device."""
    a, b = np.searchsorted(depart_sorted, [t - dt + 1e-9, t + 1e-9], side="right")
    return slice(int(a), int(b))
