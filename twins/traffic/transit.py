"""Public transport in the traffic twin: bus lines, stops, passengers, boarding.

A :class:`BusLine` dispatches a bus every ``headway_s`` seconds from ``offset_s`` on a
fixed route. Buses are ordinary vehicles of the kernel (car following, signals,
queues, spillback) with one more rule (:func:`twins.traffic.kernels.step`, rule 7):
a bus treats its next unserved stop on its current edge as a stop line, docks
there, and dwells

    t_dwell = dwell_base_s + board_s_per_pax · boardings + alight_s_per_pax · alightings

— the additive dwell model of the Transit Capacity and Quality of Service Manual
(TCRP Report 165, 3rd ed., 2013, ch. 6: t_d = P_a·t_a + P_b·t_b + t_oc; it gives
t_b ≈ 2.5–4 s per boarding passenger, t_a ≈ 1.5–2 s per alighting one and
t_oc ≈ 2–5 s to open and close the doors; the defaults here are 3 s, 1.5 s and 4 s).

Passengers arrive at each stop as a Poisson process of ``pax_per_h``; the k-th
arrival time is keyed by (replication, stop, k) on :attr:`noise.Stream.PASSENGER`,
so every policy arm sees the same passengers (common random numbers). They board
first come, first served, at the moment a bus docks, up to the room left after
alighting (``capacity``); passengers who arrive while it dwells wait for the next
bus. Alighting: each passenger on board leaves at one of the remaining stops with
equal probability, in expectation — a bus alights ``round(load / remaining stops)``
(everyone at the last stop).

Everything here is plain Python or a pure tensor function; the Mesa model
(:mod:`twins.traffic.model`) owns the state and calls :func:`board`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from twins.core import noise
from twins.core.errors import ConfigError, check

from .tables import Population
from .demand import VehicleType
from .state import StopTables
#: stops lie at least this far from the start of their lane: a bus entering the edge lands behind them
MIN_STOP_POS_M = 30.0
#: bus vehicle ids: first id after the cars, then ``line * BUS_ID_STRIDE + k`` (stable across policies)
BUS_ID_STRIDE = 1_000_000


def bus_type() -> VehicleType:
    """SUMO's default ``bus`` vehicle class: 12 m, accel 1.2 m/s², decel 4 m/s², 85 km/h."""
    return VehicleType(id="bus", length=12.0, min_gap=2.5, accel=1.2, decel=4.0, max_speed=85 / 3.6, tau=1.0,
                       delta=4.0, speed_factor=1.0, speed_dev=0.05, param_cv=0.0)


@dataclass
class BusStop:
    id: str
    edge: str
    pos_m: float  # where the bus front halts, metres from the start of the edge's lanes
    pax_per_h: float = 60.0  # Poisson passenger arrivals


@dataclass
class BusLine:
    id: str
    route: list[str]
    stops: list[BusStop]
    headway_s: float = 600.0
    offset_s: float = 0.0  # first departure
    end_s: float | None = None  # no departure at or after this time; None: the horizon
    capacity: int = 80  # passengers on board
    dwell_base_s: float = 4.0  # doors open/close (TCQSM t_oc)
    board_s_per_pax: float = 3.0  # TCQSM t_b
    alight_s_per_pax: float = 1.5  # TCQSM t_a
    vtype: VehicleType = field(default_factory=bus_type)

    def validate(self, net) -> list[int]:
        """Check the line against ``net``; returns each stop's position in the route."""
        f = f"scenario.bus_lines[{self.id}]"
        check(len(self.route) > 0, f"{f}.route", self.route, "a non-empty list of edges")
        for e in self.route:
            check(e in net.edges, f"{f}.route", e, "edges that exist in the network")
        check(math.isfinite(self.headway_s) and self.headway_s > 0, f"{f}.headway_s", self.headway_s,
              "a headway > 0 seconds")
        check(math.isfinite(self.offset_s) and self.offset_s >= 0, f"{f}.offset_s", self.offset_s, ">= 0 seconds")
        check(int(self.capacity) == self.capacity and self.capacity >= 1, f"{f}.capacity", self.capacity,
              "an integer >= 1 passengers")
        for k in ("dwell_base_s", "board_s_per_pax", "alight_s_per_pax"):
            v = getattr(self, k)
            check(math.isfinite(v) and v >= 0, f"{f}.{k}", v, "a number >= 0 seconds")
        check(len(self.stops) > 0, f"{f}.stops", [], "at least one stop")
        self.vtype.validate()
        where, k = [], 0
        for i, s in enumerate(self.stops):
            sf = f"{f}.stops[{i}]"
            check(s.pax_per_h >= 0 and math.isfinite(s.pax_per_h), f"{sf}.pax_per_h", s.pax_per_h,
                  "a rate >= 0 passengers/h")
            if s.edge not in self.route[k:]:
                hint = ("Stops are listed in route order." if s.edge in self.route
                        else f"The line's route is {self.route}.")
                raise ConfigError(f"{sf}.edge", s.edge, "an edge of the line's route after the previous stop's", hint)
            k = self.route.index(s.edge, k)
            if where and where[-1] == k:
                check(s.pos_m > self.stops[i - 1].pos_m, f"{sf}.pos_m", s.pos_m,
                      f"> {self.stops[i - 1].pos_m:g} m (the previous stop on the same edge)")
            length = net.edges[s.edge].length
            check(MIN_STOP_POS_M <= s.pos_m <= length, f"{sf}.pos_m", s.pos_m,
                  f"a position in [{MIN_STOP_POS_M:g}, {length:g}] m along edge {s.edge}",
                  "A bus entering the edge lands up to a few tens of metres in; a stop nearer the start "
                  "would be passed.")
            where.append(k)
        return where


# ---------------------------------------------------------------------------------------------
# tables and populations
@dataclass
class TransitTables:
    """Static stop tables (global stop index z, lines' stops in route order)."""

    stop_ids: list[str]
    line_of_stop: torch.Tensor  # [Z] int64
    route_pos: torch.Tensor  # [Z] int64 position of the stop's edge in its line's route
    pos: torch.Tensor  # [Z] model dtype
    next: torch.Tensor  # [Z] int64 next stop of the line, -1 after the last
    first_stop: torch.Tensor  # [nL] int64
    remaining: torch.Tensor  # [Z] float64 stops left including this one (alighting share 1/remaining)
    capacity: torch.Tensor  # [Z] int64 (of the stop's line)
    dwell_base: torch.Tensor  # [Z] float64
    board_s: torch.Tensor  # [Z] float64
    alight_s: torch.Tensor  # [Z] float64
    pax_per_h: torch.Tensor  # [Z] float64

    def stop_tables(self) -> StopTables:
        """What the kernel's stop rule reads."""
        return StopTables(route_pos=self.route_pos, pos=self.pos, next=self.next)


def transit_tables(lines: list[BusLine], net, device, dtype) -> TransitTables:
    ids, line_of, rpos, pos, nxt, first, rem, cap, base, tb, ta, rate = ([] for _ in range(12))
    for l, line in enumerate(lines):
        where = line.validate(net)
        first.append(len(ids))
        n = len(line.stops)
        for i, (s, k) in enumerate(zip(line.stops, where)):
            ids.append(f"{line.id}:{s.id}")
            line_of.append(l)
            rpos.append(k)
            pos.append(float(s.pos_m))
            nxt.append(len(ids) if i + 1 < n else -1)
            rem.append(float(n - i))
            cap.append(int(line.capacity))
            base.append(float(line.dwell_base_s))
            tb.append(float(line.board_s_per_pax))
            ta.append(float(line.alight_s_per_pax))
            rate.append(float(s.pax_per_h))
    seen = set()
    for i in ids:
        check(i not in seen, "bus_lines", i, "unique line ids and stop ids within a line")
        seen.add(i)
    i64 = lambda x: torch.tensor(x, dtype=torch.int64, device=device)  # noqa: E731
    f64 = lambda x: torch.tensor(x, dtype=torch.float64, device=device)  # noqa: E731
    return TransitTables(ids, i64(line_of), i64(rpos), f64(pos).to(dtype), i64(nxt), i64(first), f64(rem),
                         i64(cap), f64(base), f64(tb), f64(ta), f64(rate))


def dispatch_times(headway: torch.Tensor, offset: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Departures ``offset + k·headway < end`` per world and line, ``[W, nL, B]`` float64 (+inf padding)."""
    n = torch.ceil((end - offset) / headway).clamp(min=0)
    B = max(1, int(n.max()))
    k = torch.arange(B, dtype=torch.float64, device=headway.device)
    t = offset.unsqueeze(-1) + k * headway.unsqueeze(-1)
    return torch.where(k < n.unsqueeze(-1), t, torch.inf)


def bus_population(times: torch.Tensor, first_flow: int, first_id: int) -> Population:
    """Bus slots ``[W, nL·B]``: the k-th bus of line l is flow ``first_flow + l`` with vehicle id
    ``first_id + l·BUS_ID_STRIDE + k`` whatever the headway (its driver draws follow its id)."""
    W, nL, B = times.shape
    line = torch.arange(nL, dtype=torch.int64).view(1, nL, 1).expand(W, nL, B)
    k = torch.arange(B, dtype=torch.int64).view(1, 1, B).expand(W, nL, B)
    t = times.cpu().reshape(W, -1)
    ok = torch.isfinite(t)
    fl = torch.where(ok, first_flow + line.reshape(W, -1), -1)
    vid = torch.where(ok, first_id + line.reshape(W, -1) * BUS_ID_STRIDE + k.reshape(W, -1), -1)
    return Population(fl, torch.where(ok, k.reshape(W, -1), -1), t, vid)


def merge_populations(a: Population, b: Population) -> Population:
    """Both populations in one slot table, ordered by (departure, vehicle id) as ``build_population``
    orders one: ``a``'s slots (a multiple of 16, from the flows' capacities) plus ``b``'s padded to a
    multiple of 16 — a count that depends on the timetables, never on random draws."""
    t, fl, k, vid = (torch.cat([x, y], 1) for x, y in zip((a.depart, a.flow, a.index_in_flow, a.vehicle_id),
                                                         (b.depart, b.flow, b.index_in_flow, b.vehicle_id)))
    # empty slots (id -1) sort after real ones at equal (+inf) departure
    order = torch.argsort(torch.where(vid >= 0, vid, torch.iinfo(torch.int64).max), dim=1, stable=True)
    t, fl, k, vid = (x.gather(1, order) for x in (t, fl, k, vid))
    order = torch.argsort(t, dim=1, stable=True)
    t, fl, k, vid = (x.gather(1, order) for x in (t, fl, k, vid))
    pad = -(-t.shape[1] // 16) * 16 - t.shape[1]
    t = torch.nn.functional.pad(t, (0, pad), value=torch.inf)
    fl, k, vid = (torch.nn.functional.pad(x, (0, pad), value=-1) for x in (fl, k, vid))
    return Population(fl, k, t, vid)


def passenger_arrivals(tables: TransitTables, seed: int, replications: torch.Tensor, begin: float,
                       end: float) -> torch.Tensor:
    """Passenger arrival times ``[W, Z, K]`` float64 (+inf padding), Poisson at each stop's rate on
    [begin, end): the k-th arrival at stop z is ``begin + (E_1 + … + E_k) / rate`` with
    ``E_i ~ Exp(1)`` keyed by (replication, z, i) on :attr:`noise.Stream.PASSENGER`."""
    rate = tables.pax_per_h.cpu() / 3600.0
    Z = rate.numel()
    mean = rate * (end - begin)
    K = max(1, int((mean + 10.0 * mean.sqrt() + 20.0).max()))  # a bound no world reaches (as Flow.capacity)
    reps = replications.cpu().to(torch.int64)
    z = torch.arange(Z, dtype=torch.int64).view(Z, 1)
    k = torch.arange(K, dtype=torch.int64).view(1, K)
    # every world at once (elementwise draws keyed by replication: a world's numbers do not depend on the batch)
    e = noise.exponential(seed, reps.view(-1, 1, 1), noise.Stream.PASSENGER, z.unsqueeze(0), 0, k.unsqueeze(0))
    e = e.expand(reps.numel(), Z, K).contiguous() if e.shape[0] != reps.numel() else e
    t = begin + torch.cumsum(e, dim=2) / torch.where(rate > 0, rate, 1.0).view(1, Z, 1)
    t = torch.where((rate > 0).view(1, Z, 1) & (t < end), t, torch.inf)
    if bool(torch.isfinite(t[:, :, -1]).any()):
        raise ConfigError("bus_lines.stops.pax_per_h", tables.pax_per_h.tolist(),
                          "rates whose Poisson draw stays under its bound", "Please report this.")
    return t


def cumulative(arrivals: torch.Tensor) -> torch.Tensor:
    """Prefix sums of arrival times ``[W, Z, K+1]`` (0 first; +inf after the last arrival)."""
    z = torch.zeros(arrivals.shape[:-1] + (1,), dtype=torch.float64, device=arrivals.device)
    return torch.cat([z, torch.cumsum(arrivals, dim=-1)], dim=-1)


# ---------------------------------------------------------------------------------------------
# boarding: a pure tensor function
def board(t: float, world: torch.Tensor, stop: torch.Tensor, load: torch.Tensor, served: torch.Tensor,
          arrivals: torch.Tensor, cum: torch.Tensor, tables: TransitTables) -> dict:
    """Buses docking at time ``t``: who alights, who boards, how long they dwell.

    ``world``, ``stop``, ``load`` [n] per docking bus (in slot order); ``served`` [W, Z] passengers
    who have boarded at each stop so far; ``arrivals`` / ``cum`` from :func:`passenger_arrivals` /
    :func:`cumulative`. Several buses docking at one stop in one step board in slot order (greedy,
    first come first served). Returns per bus ``boardings``, ``alightings``, ``dwell``, ``wait_sum``
    (s, summed over its boarders), ``load``; and ``served`` [W, Z] updated (a new tensor).
    """
    W, Z, K = arrivals.shape
    key = world * Z + stop
    arrived = torch.searchsorted(arrivals[world, stop], torch.full((key.numel(), 1), t, dtype=torch.float64,
                                                                   device=arrivals.device), right=True).squeeze(1)
    s0 = served.reshape(-1)[key]
    waiting = arrived - s0
    alight = torch.floor(load.to(torch.float64) / tables.remaining[stop] + 0.5).to(torch.int64)
    alight = torch.minimum(alight, load)
    room = (tables.capacity[stop] - (load - alight)).clamp(min=0)
    # greedy by slot order within a (world, stop): room taken by the buses before
    order = torch.argsort(key, stable=True)
    ks, rs = key[order], room[order]
    cs = torch.cumsum(rs, 0) - rs
    first = torch.ones_like(ks, dtype=torch.bool)
    first[1:] = ks[1:] != ks[:-1]
    start = torch.cummax(torch.where(first, torch.arange(ks.numel(), device=ks.device), 0), 0).values
    before = torch.empty_like(room)
    before[order] = cs - cs[start]
    prev = torch.minimum(before, waiting)  # boarded by the buses before this one
    n_board = torch.minimum((waiting - before).clamp(min=0), room)
    lo, hi = s0 + prev, s0 + prev + n_board
    row = cum[world, stop]
    wait_sum = n_board.to(torch.float64) * t - (row.gather(1, hi.unsqueeze(1)) - row.gather(1, lo.unsqueeze(1))).squeeze(1)
    wait_sum = torch.where(n_board > 0, wait_sum, 0.0)
    dwell = tables.dwell_base[stop] + tables.board_s[stop] * n_board + tables.alight_s[stop] * alight
    new_served = served.reshape(-1).clone()
    new_served.index_add_(0, key, n_board)
    return {"boardings": n_board, "alightings": alight, "dwell": dwell, "wait_sum": wait_sum,
            "load": load - alight + n_board, "served": new_served.view(W, Z)}


def still_waiting(t_end: float, served: torch.Tensor, arrivals: torch.Tensor, cum: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Passengers waiting at ``t_end`` per world and stop, ``[W, Z]``, and their waits so far summed (s)."""
    W, Z, K = arrivals.shape
    arrived = (arrivals <= t_end).sum(-1)
    n = (arrived - served).clamp(min=0)
    s = n.to(torch.float64) * t_end - (cum.gather(2, arrived.unsqueeze(-1)) - cum.gather(2, served.unsqueeze(-1))
                                       ).squeeze(-1)
    return n, torch.where(n > 0, s, 0.0)
