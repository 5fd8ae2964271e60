"""Traffic kernels: pure tensor functions, no Mesa, no config objects.

Vehicles of all worlds are flattened into one vector of N slots; ``world``
says which world a slot belongs to. Per-world lane tables have ``W * L``
entries indexed by ``world * L + lane``. Every operation is elementwise or a
gather keyed by world, so a world never sees another's vehicles (batch
independence). The kernels take and return the typed records of
:mod:`twins.traffic.state` (the vehicles' state, their drivers, the step's settings).

Rules (the per-agent reference in :mod:`twins.traffic.reference` implements
the same, one vehicle at a time):

1. Signals: the phase of each program at time ``t`` is found from
   ``(t - offset) mod cycle`` and per-world phase durations, as SUMO runs a
   program (a positive offset delays every phase; ``NLJunctionControlBuilder``).
2. Leaders: a vehicle's leader is the next one downstream on its lane; the
   *last* vehicle of a lane is the upstream-most one. Found by sorting
   ``(world, lane, position)`` once, then carried from step to step and updated
   where vehicles leave or enter lanes (the order on a lane changes only where a
   vehicle inside a junction passes one waiting there on another path, rule 10;
   then the lanes are sorted again).
3. Insertion, SUMO's way: per (world, first edge) the vehicles whose
   departure time has come try in departure order. The first picks the
   allowed lane of that edge with most room and enters with its rear at the
   lane start if the gap to that lane's last vehicle is at least its min
   gap, at the highest speed that gap allows (``(gap - min gap) / tau``), at most its desired speed and its
   ``depart_speed`` (SUMO's ``departSpeed``: a given speed, +inf for "max", as for the twin's own scenarios, or
   :data:`DEPART_AVG` for SUMO's "avg", SUMO 1.28's default: the lane's mean speed, its limit when empty (SUMO's
   ``MSLane::getMeanSpeed``), at most the driver's desired speed; on an occupied lane that speed is not lowered
   for the gap, the vehicle waits until it is safe, as SUMO does not patch it there); if it does not fit, the
   lanes it could take (all of them full) are closed to that edge's queue for this step, and a later vehicle that
   may take another lane of the edge still tries (SUMO's ``MSEdge::insertVehicle`` remembers refused lanes per
   step, not edges).
   ``insert_rounds`` rounds let several vehicles enter a multi-lane edge.
4. Front vehicles (no leader on their lane) look past the stop line: a red
   signal, or a yellow one they can still stop for (SUMO's ``canBrake``: the
   Euler brake gap without reaction time is shorter than the distance, or the
   vehicle is slower than one step's braking; :func:`stops_at_yellow`), is a
   standing obstacle at the stop line, or rather 1 m short of it (SUMO's
   ``jmStoplineGap``), less where its brakes need the room, at least 0.1 m
   (:func:`stop_line`; a line that holds a vehicle for any other reason has
   no such gap, in SUMO as here). Followers brake for their line too when
   their link is red or such a yellow (SUMO processes every link within a
   vehicle's look-ahead), and so does a front vehicle its signal holds while it
   follows one still inside the junction; otherwise a platoon ran on through
   the yellow behind its front vehicle (tests/traffic_sumo/test_yellow.py).
   For a front vehicle the stop line is also an obstacle, to keep the junction
   clear, when the room behind the last standing vehicle of the lane it will
   enter is taken: the back of that lane's upstream-most halted vehicle, less
   the lengths plus min gaps of the vehicles behind it, is shorter than this
   vehicle's length plus min gap
   (SUMO's ``getSpaceTillLastStanding``; where nothing stands, its length less
   every vehicle on it while its last vehicle has to wait at its own next link,
   SUMO's ``myHaveToWaitOnNextLink``: held by its signal, or following one on
   the lane slower than its decel: :func:`space_till_standing`; where nothing
   stops on it and while the front can still brake for its line, carried one
   lane further on the route as SUMO carries the space over a link that lets
   it pass: its length less its vehicles plus the room of the lane after it,
   or its own alone behind a red or yellow link, :func:`room_beyond`; only
   where the connection crosses a junction area that another link
   conflicts with and does not waive it, ``net.conn_keep_clear``, SUMO's
   ``MSVehicle::keepClear``).
   Otherwise the leader is the last vehicle of that lane (spillback), or
   the road is free. Without lane changing (rule 11 off) a vehicle may enter
   another lane of the next edge than the vehicle ahead of it on its own
   connection did (as if it changed lanes on the junction), but it crosses
   behind that one while it is inside the junction, as on SUMO's internal
   lane of the connection: the nearer of the two is its leader. (RESCO
   cologne8's single-lane approach -42925825#2 with a permissive left turn:
   without this, consecutive left turners entered alternate lanes, crossed
   2 s apart instead of SUMO's 3 s, and the scenario's IDM delay was 19 %
   below SUMO's; with it, 3 %.)
5. IDM acceleration integrated over ``substeps`` with the leader's speed held
   (SUMO's IDM stepping); speed clamped at zero and capped so the gap cannot
   close below zero in one step; position ``x + v'·dt`` (Euler, as SUMO).
   Toward a standing point rather than a vehicle (a stop line, where a minor
   link waits, a bus stop, room kept for a lane change) IDM keeps no min gap
   (``s0 = 0``, the gap the distance to the point) and never passes the point,
   as SUMO's ``MSCFModel_IDM::stopSpeed`` (``_v`` without ``respectMinGap``);
   from standstill, where IDM would not move, it creeps at the safe stopping
   speed over one step (and nearer than 1 cm it stops), as ``stopSpeed``
   does; with the min gap on both sides an IDM vehicle braked earlier and
   softer for a red light than SUMO's and moved 0.19 m/s faster 3 s before it
   stopped, which SUMO's trajectory now matches to the centimetre
   (tests/traffic_sumo/test_stop_speed.py).
6. A vehicle whose front passes the end of its lane enters the chosen lane
   of the next edge at ``overshoot - via_length`` — one per target lane per
   step, the one landing furthest ahead; the others are held at the stop
   line. At the end of its last edge a vehicle arrives.
7. Bus stops (only with ``stops``; :mod:`twins.traffic.transit`): a bus whose
   next unserved stop lies on its current edge treats it as a stop line (a
   standing obstacle, never rolled over) unless its leader is nearer. Halted
   within ``DOCK_REACH_M`` of it, the bus *docks* (``StepResult.docked``); the model
   then boards passengers and sets ``dwell``. While ``dwell > 0`` the bus is
   held (speed 0) and ``dwell`` counts down by ``dt``; when it runs out the
   stop is served and the next one becomes the target. Without ``stops``
   none of this runs, and cars never have a stop (``next_stop = -1``).
8. Turning speeds (SUMO's internal lanes; ``routes.route_turn_speed``, +inf
   where a network sets none, which leaves every number unchanged): while a
   vehicle's front is inside the junction (position < 0 on the lane it
   entered) its desired speed is at most ``turn speed · speed factor``. On
   approach every vehicle anticipates the crossing ahead as SUMO's
   ``MSCFModel_IDM::freeSpeed`` does: faster than that limit ``u``, it
   brakes as IDM would for a standing obstacle (without ``s0``) at
   ``max(d, g)``, ``d`` the distance to the stop line and ``g`` SUMO's secure
   gap ``brakeGap(u) + u·tau``; closer than ``g`` its speed is at most ``u``.
9. Car-following model (``cf``): ``IDM`` (rule 5) or SUMO's default
   ``Krauss`` (``MSCFModel_Krauss``, semi-implicit Euler): the safe speed
   ``maximumSafeStopSpeedEuler(gap - s0 + brakeGap(v_lead, decel, 0))`` (the
   leader braked with the follower's own decel: one vehicle type's decel
   everywhere in practice; SUMO takes the larger of the two), then
   ``v_max = min(v0, v + accel·dt, v_safe, turning-speed cap)`` with the cap
   from SUMO's generic ``MSCFModel::freeSpeed``, ``v_min = min(max(v -
   decel·dt, 0), v_max)`` and driver imperfection by ``dawdle2``:
   ``max(v_min, v_max - sigma·min(v_max, accel)·u·dt)`` (``min`` standing for
   SUMO's two branches), ``u`` in [0, 1) keyed by (seed, replication,
   vehicle, step) on :attr:`~twins.core.noise.Stream.DAWDLE`. Not modelled:
   SUMO's emergency-deceleration correction of the safe speed (it only
   changes speeds when braking harder than ``decel`` would be needed).
10. Right of way (SUMO's junction ``request`` table, ``net.conn_foes``): a front
   vehicle on a minor link (an unsignalized ``m``/``=``/``s``/``w``/``Z``
   connection, or a signal showing ``g``) that would pass its line this step is
   held at it while a connection it must yield to is in use in an overlapping
   time window (its own ending when its rear has left the junction, at a speed no higher than it could follow
   the vehicle ahead of it past the line with, SUMO's ``adaptToLeader``): :func:`yield_blocked` states the
   simplifications. A vehicle standing inside the junction on such a connection holds it only where it
   stands in its way: its body covers the part of its own path that the
   waiting vehicle's path crosses (``net.conn_zone``, from the paths' shapes;
   SUMO's ``inTheWay``; everywhere on networks without shapes). One moving inside
   holds a vehicle at its line only until its rear has passed the crossing, if
   that vehicle would reach the crossing before (``net.conn_zone_at``,
   :func:`clear_times`; SUMO's ``MSLink::opened`` counts approaching foes only, and
   one inside the junction is a leader followed till it has passed). One that
   would merge ahead of an approaching foe into the same lane waits while the foe
   could not brake to below its leaving speed, braking at its deceleration times
   the waiting vehicle's impatience, its standing time over 180 s
   (:func:`merge_unsafe`; SUMO's ``unsafeMergeSpeeds``). A link into an
   internal junction (a left turn's ``cont="1"``, waiting point ``net.conn_wait``
   m past the line) is open at the line unless red, as SUMO's ``MSLink::opened``:
   the vehicle enters and waits at that point, a minor link there, until its foes
   leave it a gap, out of the way of vehicles taking other paths from its lane or
   into its target lane (:func:`waiting_inside`, :func:`entry_tails`; SUMO: its
   own internal lane). A front vehicle that cannot move on (its way blocked past
   the line) announces no window (SUMO's ``willPass``), but its own link is
   checked as every other's (before, it was not, and followed a major vehicle
   into the junction just ahead of the next one). One waiting at its
   internal junction in the junction before announces its window at the next
   one unless it is still braking for its waiting point from beyond its
   visibility distance (SUMO's ``abortRequestAfterMinor``) or a foe inside the
   junction has yet to cross its path (SUMO: that link leader takes its planned
   speed to 0, so it requests no later link). Inside a
   junction a vehicle does not follow one waiting at its internal junction on
   another connection (:func:`past_waiting`; SUMO: another internal lane, its
   front short of where the paths merge). But a vehicle follows one that left
   its own lane by another connection, on its approach and inside the junction,
   until that one's back has passed the point where their paths part
   (:func:`same_source`, ``net.conn_div`` from the paths' shapes: SUMO's
   same-source foes); a left turner waiting at its internal junction on a
   single-lane approach holds the straight vehicles behind it, as in SUMO
   (tests/traffic_sumo/test_internal_junction.py). Before that, the
   vehicle approaches with caution, as SUMO's ``MSVehicle::processLinkApproaches``
   does for a link without priority: while it could still stop there
   (``v² <= 2·decel·d``) and is farther than the link's visibility distance
   (``net.conn_visibility``, the connection's ``visibility``, SUMO's 4.5 m) from
   the point where it waits for its foes, that point is a standing obstacle, even
   when no foe comes. The point is the stop line, or for a left turn with an
   internal junction (``cont="1"``) that junction ``net.conn_wait`` m past the
   line, where the obstacle stays while the vehicle's front is inside the
   junction short of it. (Measured on RESCO cologne8, a permissive left turn in
   SUMO: 11 m/s 33 m out, 5.6 m/s at the line, 2 m/s before the internal
   junction; without this rule the twin turned at 11 m/s and its delay was 32 %
   below SUMO's.)
11. Lane changing (only with ``lane_change``; ``scenario.lane_changing``): a vehicle crossing a junction enters
   one of the lanes its connection leads to (``net.conn_to_mask``, the route's best lanes among them where it can),
   as in SUMO, instead of any lane that continues its route; after the move, vehicles change lanes along the edge
   (strategic, speed gain by MOBIL, cooperation, falling behind, swaps): :func:`change_lanes` states the rule and
   what it leaves out of SUMO's LC2013. A vehicle asked to let a neighbour in, or falling behind the target lane's
   leader, follows that neighbour next step too (``lc_yield``; alongside it, at gap 0: it stops as hard as its
   car-following model brakes for a standing obstacle, where SUMO brakes at most ``decel``); one whose urgent
   change must cross two lanes or more stops short of its lane's end next step, keeping room for vehicles that
   change the other way (``lc_stop``); a keep-right sum (``lc_keep_right``) moves vehicles to a free right lane, as
   SUMO's; urgency is judged at a look-ahead speed that remembers the recent top speed (``lc_look_ahead_speed``).
   The lanes are then sorted again (rule 2).
12. Teleporting, SUMO's way of ending a gridlock (``--time-to-teleport``, 300 s by default;
   ``MSLane::executeMovements``, ``MSVehicleTransfer``): after the step, a vehicle at the front of its lane that
   has stood (speed below 0.1 m/s) for more than ``time_to_teleport`` s leaves its lane and waits to be inserted
   again (rule 3) on a later edge of its route: the next one at least as long as the vehicle and its min gap (SUMO
   skips on along the route while it cannot insert it); with none left it arrives. :func:`teleport`. Simplified:
   the re-insertion is tried from the next step on (SUMO first lets the time to drive the skipped edge pass), and
   on that edge only (SUMO moves on to the next edge while the first stays full).

Length: the twelve rules of one step, which read and write the same state in a fixed order; the native
(C++) step and the per-agent reference mirror this file rule by rule.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from .state import Drivers, Moved, Movers, StepResult, StepSettings, StopTables, Surroundings, Teleported, VehicleState

# rule 10: a connection's path across its junction in this many equal parts, the resolution of the conflict zones
# (network.conflict_zone, net.conn_zone) and of the parts a standing vehicle covers (body_zone): bits of an int64
ZONE_BINS = 16

# signal codes per link (the network tables, twins.traffic.tables, encode programs in them)
SIG_GREEN, SIG_YELLOW, SIG_RED = 0, 1, 2
SIG_GREEN_MINOR = 3  # SUMO's 'g': green, but yield to the junction's foes (rule 10)
NO_SIGNAL = -1

WAITING, RUNNING, ARRIVED = 0, 1, 2
STATUS_NAMES = ("waiting", "running", "arrived")  # by code
IDM, KRAUSS = 0, 1  # car-following models (rule 9)
CF_MODELS = {"IDM": IDM, "Krauss": KRAUSS}
NUMERICAL_EPS = 1e-6  # m: SUMO's slack in its safe stopping speed
STANDING_EPS = 1e-3  # m/s: SUMO's NUMERICAL_EPS, below which IDM's stopSpeed counts a speed as nil (rule 5)
STOP_GAP_EPS = 0.01  # m: nearer than this to a standing point IDM's stopSpeed stops (rule 5)
STOP_SPEED = 0.1  # m/s: below this a vehicle counts as halted (SUMO's halting threshold)
DEPART_AVG = -1.0  # rule 3: ``depart_speed`` of a vehicle inserted at its lane's mean speed (SUMO's "avg")
DOCK_REACH_M = 1.0  # m: a bus halted this close before its stop has docked (rule 7)
# s: a minor link lets a foe pass first unless the foe arrives this long after it has left (rule 10): SUMO's
# jmTimegapMinor (MSLink::blockedByFoe's look-ahead), 1 s by default. (It was 0 while rule 4 kept every junction
# clear: queues then stood at the line of RESCO cologne3's minor approach -5229966#3 instead of across the
# foe-less junction behind it, and 1 s starved that approach.)
JM_TIMEGAP_MINOR = 1.0
# s: SUMO's --time-to-impatience (180 s by default): a vehicle's impatience is the time it has stood, over this, at
# most 1 (MSVehicle::getImpatience); rule 10's merges read it
TIME_TO_IMPATIENCE_S = 180.0


def signal_codes(t: float, durations: torch.Tensor, offsets: torch.Tensor, phase_code: torch.Tensor,
                 link_program: torch.Tensor, link_local: torch.Tensor) -> torch.Tensor:
    """Signal code of every link in every world, ``[W, G]`` int8.

    ``durations`` [W, P, K] (zero-padded), ``offsets`` [W, P], ``phase_code`` [P, K, Lmax].
    """
    W, P, K = durations.shape
    if link_program.numel() == 0:
        return torch.zeros(W, 0, dtype=torch.int8, device=durations.device)
    ends = torch.cumsum(durations, dim=2)  # [W, P, K]
    cycle = ends[:, :, -1]
    tc = torch.remainder(t - offsets, cycle)  # [W, P]: SUMO's cycle position, (t - offset) mod cycle
    phase = torch.searchsorted(ends, tc.unsqueeze(-1), right=True).squeeze(-1).clamp(max=K - 1)
    Lmax = phase_code.shape[2]
    # into phase_code [P, K, Lmax]: (program * K + phase) * Lmax + link's index in its program, with the one term
    # that varies by world gathered per link ([W, P] scaled first: one operation on [W, G] fewer)
    flat = (phase * Lmax).index_select(1, link_program).add_(link_program * (K * Lmax) + link_local)  # [W, G]
    return _gather(phase_code.reshape(-1), flat.reshape(-1)).view(flat.shape)


def link_codes(sig: torch.Tensor, world, link):
    """The signal code each vehicle's link shows in its world (``sig`` [W, G]; ``link`` -1 or NO_SIGNAL: green)."""
    G = sig.shape[1]
    if not G:
        return torch.full_like(link, SIG_GREEN)
    return torch.where(link >= 0, _gather(sig.reshape(-1), world * G + link.clamp(min=0, max=G - 1)), SIG_GREEN)


def lane_order(world, lane, pos, running, n_lanes: int, W: int, span: float):
    """Leaders and each lane's last vehicle, by sorting ``(world, lane, position)``.

    Returns ``leader`` [N] (slot index or -1) and ``last`` [W*L+1] (slot index or -1; the last entry
    is a sentinel). :func:`step` sorts only when it is not handed the previous
    step's leaders (which it keeps up to date where vehicles leave and enter lanes).
    """
    N = pos.numel()
    seg = torch.where(running, world * n_lanes + lane, W * n_lanes)
    key = seg.to(torch.float64) * span + pos.to(torch.float64)
    # the same order on integers (a radix sort, ~1.5x faster): IEEE bits order non-negative doubles;
    # flipping the magnitude bits of negative ones orders those too (keys are never -0.0 or NaN)
    bits = key.view(torch.int64)
    order = torch.argsort(bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF), stable=True)
    sseg = _gather(seg, order)
    same = sseg[1:] == sseg[:-1]
    # a vehicle that is not running has no leader (the sentinel segment spans every world)
    nxt = torch.where(same & (sseg[1:] < W * n_lanes), order[1:], -1)
    leader = torch.full((N,), -1, dtype=torch.int64, device=pos.device)
    leader[order[:-1]] = nxt
    first = torch.ones(N, dtype=torch.bool, device=pos.device)
    first[1:] = ~same
    last = torch.full((W * n_lanes + 1,), -1, dtype=torch.int64, device=pos.device)
    last.scatter_(0, torch.where(first, sseg, W * n_lanes), order)
    last[W * n_lanes] = -1
    return leader, last


def choose_lane(world, edge, mask, last, pos, length, edge_first_lane, edge_n_lanes, max_lanes: int,
                n_lanes: int):
    """For each slot, the allowed lane of ``edge`` with most room (lowest index on ties).

    ``edge`` [N] (-1: none), ``mask`` [N] bitmask of allowed lane indices.
    Returns ``lane`` [N] (-1 if none) and ``room`` [N] (rear of that lane's last
    vehicle, +inf if the lane is empty).
    """
    e = edge.clamp(min=0)
    first, n_here = _gather(edge_first_lane, e), _gather(edge_n_lanes, e)
    lane = room = None
    # a loop over the (few) lane indices rather than an [N, max_lanes] argmax: elementwise work only
    for j in range(max_lanes):
        ok = (edge >= 0) & (j < n_here) & (((mask >> j) & 1) == 1)
        cand = torch.where(ok, first + j, 0)
        lv = _gather(last, world * n_lanes + cand)
        lvc = lv.clamp(min=0)
        rear = torch.where(lv >= 0, _gather(pos, lvc) - _gather(length, lvc), torch.inf)
        score = torch.where(ok, rear, -torch.inf)
        if lane is None:
            lane, room = torch.where(ok, cand, -1), score
        else:
            better = score > room  # strictly: the lowest index wins ties
            lane, room = torch.where(better, cand, lane), torch.where(better, score, room)
    return lane, room


def int_pow(x: torch.Tensor, n: torch.Tensor, max_bits: int = 4) -> torch.Tensor:
    """``x ** n`` for integer ``n`` in [0, 2**max_bits) by binary exponentiation.

    Only multiplications: correctly rounded in every SIMD lane and in scalar
    code, so a world's numbers never depend on where its vehicles sit in the
    batch (``torch.pow`` can differ by an ulp between vector and scalar paths).
    """
    out = torch.ones_like(x)
    base = x
    for bit in range(max_bits):
        out = torch.where(((n >> bit) & 1) == 1, out * base, out)
        if bit + 1 < max_bits:  # (the last square is never used; of a creeping vehicle's v/v0 it is subnormal)
            base = base * base
    return out


def idm_acceleration(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta: torch.Tensor):
    """Intelligent Driver Model (Treiber, Hennecke & Helbing 2000); ``gap`` may be +inf.

    ``two_sqrt_ab`` is ``2·sqrt(a·b)``, computed once per vehicle (correctly rounded);
    ``delta`` is the acceleration exponent (4 in the literature): a Python int shared by
    all vehicles, or an integer tensor.
    """
    s_star = s0 + torch.clamp(v * T + v * (v - v_lead) / two_sqrt_ab, min=0.0)
    ratio = s_star / gap.clamp(min=1e-3)  # exactly 0 on a free road (gap = +inf, s_star finite)
    return a * (1.0 - _pow(v / v0, delta) - ratio * ratio)


def _pow(x: torch.Tensor, n) -> torch.Tensor:
    """``x ** n`` by multiplications; ``n`` a Python int (one exponent for all) or an int tensor."""
    if isinstance(n, int):
        out, base = None, x
        while n:
            if n & 1:
                out = base if out is None else out * base
            n >>= 1
            if n:
                base = base * base
        return torch.ones_like(x) if out is None else out
    return int_pow(x, n)


def idm_speed(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta, dt: float, substeps: int):
    """New speed after ``dt``, integrating IDM in ``substeps`` with the leader's speed held
    (SUMO's IDM ``stepping``): the gap shrinks by the closing distance of each sub-step."""
    h = dt / substeps
    for _ in range(substeps):
        acc = idm_acceleration(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta)
        v = torch.clamp(v + acc * h, min=0.0)
        if substeps > 1:
            gap = gap - torch.clamp((v - v_lead) * h, min=0.0)
    return v


def brake_gap(v, decel, tau, dt: float):
    """SUMO's ``MSCFModel::brakeGapEuler``: the distance braking from ``v`` by ``decel·dt`` a step covers, plus
    ``v·tau``: ``n = floor(v / (decel·dt))``, ``(n·v - decel·dt·n·(n + 1) / 2)·dt + v·tau``."""
    r = decel * dt
    n = torch.floor(v / r)
    return (n * v - r * n * (n + 1.0) / 2.0) * dt + v * tau


def stops_at_yellow(v, decel, d, dt: float):
    """SUMO's test at a yellow light (``MSVehicle::planMoveInternal``, ``canBrake``): a vehicle ``d`` m before the
    line stops there if its Euler brake gap without reaction time (:func:`brake_gap`) is shorter, or if it is
    slower than one step's braking; otherwise it drives on through the yellow."""
    return (brake_gap(v, decel, 0.0, dt) < d) | (v < decel * dt)


JM_STOPLINE_GAP_M = 1.0  # m: SUMO's jmStoplineGap default (DIST_TO_STOPLINE_EXPECT_PRIORITY)
POSITION_EPS_M = 0.1  # m: SUMO's POSITION_EPS
TLS_YELLOW_MIN_DECEL = 3.0  # m/s²: SUMO's --tls.yellow.min-decel, the least deceleration it brakes with for a light


def stop_line(v, d, decel, dt: float):
    """Where a vehicle ``d`` m before a red light (or a yellow it stops for) stops, as its distance to the line then
    (SUMO's ``laneStopOffset`` in ``MSVehicle::planMoveInternal``): :data:`JM_STOPLINE_GAP_M` short of it, less
    where braking from ``v`` needs more of the room (the brake gap without reaction time at SUMO's stopping
    deceleration, at least :data:`TLS_YELLOW_MIN_DECEL`), at least :data:`POSITION_EPS_M` short, never past it."""
    bg = brake_gap(v, torch.clamp(decel, min=TLS_YELLOW_MIN_DECEL), 0.0, dt)
    off = torch.where(d >= bg, torch.clamp(d - bg, max=JM_STOPLINE_GAP_M), JM_STOPLINE_GAP_M)
    return torch.clamp(d - torch.clamp(off, min=POSITION_EPS_M), min=0.0)


def safe_stop_speed(gap, decel, tau, dt: float):
    """SUMO's ``MSCFModel::maximumSafeStopSpeedEuler``: the highest speed from which braking by ``decel·dt`` per
    step, after a reaction time ``tau``, stops within ``gap`` (0 for a gap below SUMO's slack; +inf for +inf)."""
    g = gap - NUMERICAL_EPS
    b = decel * dt
    n = torch.floor(0.5 - ((tau + torch.sqrt(dt * dt + 4.0 * (dt * (2.0 * g / b - tau) + tau * tau)) * -0.5) / dt))
    h = 0.5 * n * (n - 1.0) * b * dt + n * b * tau
    x = n * b + (g - h) / (n * dt + tau)
    return torch.where(g < 0, 0.0, torch.where(torch.isfinite(gap), x, torch.inf))


def free_speed(d, u, decel, dt: float):
    """SUMO's ``MSCFModel::freeSpeed`` (Euler; every model but IDM): the highest speed from which braking by
    ``decel·dt`` per step reaches the speed ``u`` at the distance ``d``."""
    vt = u * dt
    b = decel * (dt * dt)
    y = torch.clamp(((torch.sqrt((b + 2.0 * vt) * (b + 2.0 * vt) + 8.0 * b * d) - b) * 0.5 - vt) / b, min=0.0)
    yf = torch.floor(y)
    exact = (yf * yf + yf) * 0.5 * b + yf * vt + torch.where(y > yf, vt, 0.0)
    out = torch.clamp(d - exact, min=0.0) / (yf + 1.0) / dt + yf * (decel * dt) + u
    return torch.where(d < vt, u, out)


def dawdle(v, sigma, accel, u, dt: float):
    """SUMO's ``MSCFModel_Krauss::dawdle2`` (Euler): ``v`` less ``sigma·v·u·dt`` below ``accel`` (m/s against
    m/s², as SUMO compares them), else ``sigma·accel·u·dt``; never below 0."""
    return torch.clamp(v - torch.where(v < accel, sigma * v * u, sigma * accel * u) * dt, min=0.0)


def krauss_speed(v, v0, gap, v_lead, s0, accel, decel, tau, sigma, u, v_cap, dt: float):
    """Rule 9: the Krauss speed after ``dt`` (``gap`` and ``v_lead`` as for IDM: ``gap - s0`` is SUMO's gap to
    the leader, or the distance to a stop line); ``u`` the dawdling draws (None: no dawdling)."""
    v_safe = safe_stop_speed(gap - s0 + brake_gap(v_lead, decel, 0.0, dt), decel, tau, dt)
    v_max = torch.minimum(torch.minimum(v0, v + accel * dt), v_safe)
    if v_cap is not None:
        v_max = torch.minimum(v_max, v_cap)
    if u is None:
        return v_max
    v_min = torch.minimum(torch.clamp(v - decel * dt, min=0.0), v_max)
    return torch.maximum(v_min, dawdle(v_max, sigma, accel, u, dt))


def turn_speed_cap(v, v0, d, u, active, a, two_sqrt_ab, T, decel, delta, dt: float, substeps: int):
    """Rule 8 on approach: the highest speed that anticipates the turning speed ``u`` ahead (``d`` m to the
    stop line), SUMO's ``MSCFModel_IDM::freeSpeed``; +inf where not ``active``. ``g`` is SUMO's secure gap
    ``brakeGap(u, decel, tau)`` (:func:`brake_gap`)."""
    g = brake_gap(u, decel, T, dt)
    zero = torch.zeros_like(v)
    brake = idm_speed(v, v0, torch.maximum(d, g), zero, a, two_sqrt_ab, T, zero, delta, dt, substeps)
    cap = torch.where(v > u, brake, torch.inf)
    cap = torch.where(d < g, torch.minimum(cap, u), cap)
    return torch.where(active, cap, torch.inf)


def arrival_time(d, v, a, vmax):
    """Seconds to cover ``d`` from speed ``v``, accelerating at ``a`` up to ``vmax`` (SUMO's
    ``MSCFModel::estimateArrivalTime``); a vehicle faster than ``vmax`` is taken at ``vmax``."""
    v = torch.minimum(v, vmax)
    d1 = (vmax * vmax - v * v) / (2.0 * a)
    accelerating = (torch.sqrt(v * v + 2.0 * a * d) - v) / a
    cruising = (vmax - v) / a + (d - d1) / vmax
    return torch.where(d <= d1, accelerating, cruising)


def line_speeds(d, via, v, a, vmax):
    """A vehicle's speed at a link ``d`` m ahead (accelerating at ``a`` from ``v``, at most ``vmax``) and at the end
    of the link's path (``via`` m; accelerating on over it: SUMO's ``estimatedLeaveSpeed``)."""
    v_arr = torch.minimum(torch.sqrt(torch.minimum(v, vmax) ** 2 + 2.0 * a * d.clamp(min=0.0)), vmax)
    return v_arr, torch.minimum(torch.sqrt(v_arr * v_arr + 2.0 * a * via), vmax)


def leave_time(t_arr, v_arr, v_out, via, length):
    """Seconds until the rear of a vehicle has left a link's path (``via`` m), SUMO's ``MSLink::getLeaveTime``: its
    arrival ``t_arr`` plus ``via + length`` at the mean of its speeds at the line (``v_arr``) and leaving the path
    (``v_out``; :func:`line_speeds`). Longer than accelerating all the way for a vehicle starting at the line."""
    return t_arr + (via + length) / torch.clamp(0.5 * (v_arr + v_out), min=NUMERICAL_EPS)


def merge_unsafe(v_leave, decel, t_arr, impatience, foe_d, foe_v, foe_decel):
    """Rule 10: whether merging ahead of an approaching foe into the same lane is unsafe for a vehicle leaving the
    junction at ``v_leave`` and arriving in ``t_arr`` s (SUMO's ``MSLink::blockedByFoe`` for a foe arriving after it
    has left, ``unsafeMergeSpeeds``): unsafe when ``v_leave²/decel <= v²/foe_decel``, ``v`` the foe's speed
    at the junction had it braked from this vehicle's arrival at its deceleration times this vehicle's
    ``impatience`` (``MSLink::computeFoeArrivalTimeBraking``; 0 where it could stop before the junction). So a
    vehicle that has just stopped at a minor link lets every approaching foe into its lane pass that could not stop
    for it, and merges ahead of farther ones as it grows impatient (:data:`TIME_TO_IMPATIENCE_S`). With no
    impatience, SUMO takes the foe braking at its full deceleration from now (``arrivalSpeedBraking``), as here.
    Simplified: the foe's speed now, where SUMO takes its mean speed to the junction."""
    m = torch.where(impatience > 0, foe_decel * impatience, foe_decel)
    dist = torch.where(impatience > 0, foe_d - foe_v * t_arr.clamp(min=0.0), foe_d)
    v2 = torch.clamp(foe_v * foe_v - 2.0 * m * dist, min=0.0)
    return v_leave * v_leave / decel <= v2 / foe_decel


def clear_times(seg, pos, length, speed, via, n: int):
    """Per segment (``seg``; segment ``n - 1`` collects the rest) and part of the path (:data:`ZONE_BINS`), in how
    many seconds the last of the moving vehicles inside a junction has cleared it: its rear past the part's end at its
    speed now (-inf: cleared already, or no vehicle)."""
    ends = via.unsqueeze(1) * torch.arange(1, ZONE_BINS + 1, device=pos.device, dtype=pos.dtype) / ZONE_BINS
    back = (via + pos - length).unsqueeze(1)
    t = torch.where(ends > back, (ends - back) / torch.clamp(speed, min=STOP_SPEED).unsqueeze(1), -torch.inf)
    out = torch.full((n, ZONE_BINS), -torch.inf, dtype=pos.dtype, device=pos.device).scatter_reduce(
        0, seg.unsqueeze(1).expand(-1, ZONE_BINS), t, "amax")
    out[n - 1] = -torch.inf
    return out


def yield_blocked(m: Movers, at, ci, found, must_stop, code, d, via, net, routes, W: int, M: int,
                  fixed_shape: bool = True, follow=None, moving=None):
    """Rule 10 for the front vehicles ``fi`` (their connection ``ci``, distance ``d`` to the line): which must wait.

    SUMO's approach (``MSLink::opened`` / ``blockedByFoe``), simplified: every front vehicle that will pass its
    line this step (not held by its signal or by keep-clear; one waiting at its own internal junction in the
    junction before only while it stands within its visibility distance of that point, or could not stop there,
    and no foe inside that junction has yet to cross its path: SUMO's ``abortRequestAfterMinor`` and the link
    leader that takes its planned speed to 0 keep it from requesting any later link) announces the
    time it arrives at the junction (accelerating at ``accel`` to its desired speed, :func:`arrival_time`) and the
    time its rear leaves the junction path (SUMO's ``MSLink::getLeaveTime``, :func:`leave_time`; the speed it leaves
    at is at most what its car-following model allows from that speed behind its junction leader, the vehicle
    ahead past the line, as SUMO's ``MSVehicle::adaptToLeader`` caps a link's leave speed: ``follow``), and every
    vehicle moving inside a junction (front short of its lane's start) announces, per part of its path, when its
    rear will have passed it at its current speed (:func:`clear_times`). Per (world, connection) the union of those
    windows is kept. A vehicle at its line waits for one moving inside on a crossing foe connection only if that one's rear
    will not have passed their crossing (``net.conn_zone``) when its own front would get there (``net.conn_zone_at``
    m past its line, :func:`arrival_time`): SUMO's ``MSLink::opened`` counts approaching foes only, and the vehicle
    follows a foe inside the junction as a leader until it has passed (``MSVehicle::checkLinkLeader``). Before, it
    waited until that rear had left the whole junction: at a priority junction it took 5 % of the 6 s gaps SUMO
    takes 72 % of (tests/traffic_sumo/test_gap_acceptance.py). One waiting at its internal junction still waits
    until that rear has left the junction. A vehicle standing inside a junction announces no window (SUMO's
    ``willPass``): it is in the way of a foe only where its body covers the part of its path that the foe's path
    crosses (:func:`body_zone`, ``net.conn_zone``: SUMO's ``inTheWay``, from the junction's geometry,
    network.conflict_zone); before, a queue standing across a junction held every foe of its connection however far
    past their paths it stood. A vehicle
    on a minor link (unsignalized ``m``/``=``/``s``/``w``/``Z``, or a signal showing ``g``) is blocked when any
    connection it yields to (the junction's ``response``) has a window overlapping its own extended by
    :data:`JM_TIMEGAP_MINOR` (SUMO's ``MSLink::blockedByFoe``: the foe must leave before this vehicle arrives, or
    arrive more than ``jmTimegapMinor`` after it has left, SUMO's 1 s); one that would merge ahead of a foe into the
    same lane also waits while the foe could not slow down for it (:func:`merge_unsafe`: SUMO's ``unsafeMergeSpeeds``
    with the foe braking at its deceleration times this vehicle's impatience, its standing time over
    :data:`TIME_TO_IMPATIENCE_S`; ``tests/traffic_sumo/test_merge.py``: without it a side road's vehicles merging onto
    a busy lane lost 0.28-0.62 of SUMO's time). A vehicle
    inside the junction on a foe connection into the same edge as this one's is not a conflict: it merges into (or
    runs beside) this vehicle's target lane, which this vehicle follows as its leader, as SUMO's
    ``MSLink::getLeaderInfo`` treats a foe ahead on a merging internal lane; counting it (as before) let a queue
    standing across a junction starve a merging minor link for minutes (RESCO cologne3 and cologne1). The links of
    a zipper merge (``Z``, ``net.conn_zipper``) yield to each other; there the vehicle that arrives first goes (ties:
    the lower connection index) and the other waits for it, as SUMO's zipper lets vehicles merge in arrival order
    (``MSLink::getZipperSpeed``); by the overlap rule two vehicles standing at the two lines would each wait for
    the other for ever (RESCO ingolstadt21's gridlocks). A link into an internal junction is not checked at the line
    (SUMO's ``MSLink::opened`` for ``cont`` links): its vehicles are checked at that junction instead, timed from
    it, against the same foes (SUMO: the internal junction's foe links and lanes, nearly the same set); there
    they announce nothing until past it, as they have not entered the area they wait for. Returns the front
    vehicles held at their line, the movers held at their internal junction, and each mover's distance to that
    point. Simplifications:
    only the front vehicle of a lane announces (the one behind it announces next step), and vehicles that merge into
    one lane keep no extra time gap (SUMO's look-ahead for a shared target lane); a vehicle let past its line behind
    a foe moving inside does not follow that foe (it only waits until it could pass behind it). Without the cap
    on the leave speed a minor vehicle following another into a gap announced a window 0.6 s shorter than SUMO's,
    and at 900 major vehicles an hour the twin's IDM minor vehicles lost half SUMO's time
    (tests/traffic_sumo/test_gap_acceptance.py: 118 against 227 s; now 227). The vehicles behind one waiting at
    its internal junction on another path from their lane follow it until the paths part (:func:`same_source`)."""
    C = net.conn_yield.numel()
    inf = torch.inf
    wf, rf, lf = at(m.world), at(m.route), at(m.lane)
    vf, af = at(m.speed), at(m.accel)
    sff, lenf = at(m.speed_factor), at(m.length)
    vmax = torch.minimum(_gather(net.lane_speed, lf) * sff, at(m.max_speed))
    if routes.has_turn_speeds:
        vmax = torch.minimum(vmax, _gather(routes.route_turn_speed.reshape(-1), rf * M + at(m.route_pos))
                             * sff)
    t_arr = arrival_time(d, vf, af, vmax)
    # its speed leaving the junction: accelerating over the path, at most what following its junction leader from that
    # speed allows (SUMO's MSVehicle::adaptToLeader, adaptLeaveSpeed); it times the window it announces and needs
    v_arr, v_out = line_speeds(d, via, vf, af, vmax)
    if follow is not None:
        v_out = torch.minimum(v_out, follow(v_out))
    t_leave = leave_time(t_arr, v_arr, v_out, via, lenf)
    cic = ci.clamp(min=0)
    waiting = waiting_inside(m.running, m.pos, m.route_pos, m.conn, net)
    # the vehicles inside a junction: moving ones, by when their rear will have passed each part of their path
    inside = m.running & (m.pos < 0) & (m.route_pos > 0) & (m.conn >= 0)
    # (one short of its internal junction has not entered the conflict area it waits at: it announces once past)
    cn = m.conn.clamp(min=0)
    d_in = _gather(net.conn_wait, cn) - _gather(net.conn_via, cn) - m.pos
    # (one standing there is in the way only of the paths its body covers: its parts of its own path, per
    # (world, connection), net.conn_zone)
    standing = m.speed < STOP_SPEED
    seg_in = torch.where(inside & ~waiting & ~standing, m.world * C + cn, W * C)
    clear = (m.length - m.pos) / torch.clamp(m.speed, min=STOP_SPEED)
    leave_in = torch.full((W * C + 1,), -inf, dtype=t_arr.dtype, device=t_arr.device).scatter_reduce(
        0, seg_in, clear.to(t_arr.dtype), "amax")
    leave_in[W * C] = -inf
    seg_occ = torch.where(inside & ~waiting & standing, m.world * C + cn, W * C)
    occ = zone_occupancy(seg_occ, body_zone(m.pos, m.length, _gather(net.conn_via, cn)), W * C + 1)
    clear = clear_times(seg_in, m.pos, m.length, m.speed, _gather(net.conn_via, cn), W * C + 1)
    # the vehicles waiting at their internal junction: a minor link there (SUMO's state "m", whatever the signal
    # shows), timed from that point (on the few waiting vehicles only, unless the step keeps fixed shapes)
    wi = None if fixed_shape else _nz(waiting)
    some_wait = wi is None or wi.numel() > 0
    aborted = torch.zeros_like(waiting)
    if some_wait:
        on = (lambda x: x) if wi is None else (lambda x: _gather(x, wi))  # noqa: E731
        sf_in, lane_in, route_in, rpos_in = on(m.speed_factor), on(m.lane), on(m.route), on(m.route_pos)
        v_in = torch.minimum(_gather(net.lane_speed, lane_in) * sf_in, on(m.max_speed))
        if routes.has_turn_speeds:
            turn = _gather(routes.route_turn_speed.reshape(-1), (route_in * M + rpos_in - 1).clamp(min=0))
            v_in = torch.minimum(v_in, turn * sf_in)
        v, acc, dw = on(m.speed), on(m.accel), on(d_in)
        t_arr_in = arrival_time(dw.clamp(min=0.0), v, acc, v_in)
        t_leave_in = arrival_time(on(m.length) - on(m.pos), v, acc, v_in)
        # it requests no later link (announces no window at the next junction) while a foe inside this junction has
        # yet to pass their crossing (SUMO: that link leader takes its planned speed to 0, MSVehicle::checkLinkLeader),
        # or while it still slows down for its waiting point from beyond its visibility distance (SUMO's
        # abortRequestAfterMinor); standing there with only approaching foes to wait for, it does (SUMO's
        # willPass), and a minor link past the junction waits for it
        # (a link leader: a foe inside the junction short of their crossing's end, by _foes_block's test of the foes
        # inside as if this one reached the crossing now; no approaching foes)
        leader = _foes_block(on(waiting), on(m.world), on(cn), None, None, None, None, None, occ, net, W, clear,
                             torch.zeros((v.numel(), net.conn_foes.shape[1]), dtype=clear.dtype, device=v.device))
        far = (dw > _gather(net.conn_visibility, on(cn))) & (v * v <= 2.0 * on(m.decel) * dw)
        quiet = on(waiting) & (leader | far)
        aborted = quiet if wi is None else aborted.index_put((wi,), quiet)
    # the windows per (world, connection): front vehicles that will pass, then vehicles inside a junction
    passing = found & ~must_stop & ~at(aborted)
    if moving is not None:  # (SUMO's willPass: a front that cannot move on requests nothing, but is checked)
        passing = passing & moving
    seg = torch.where(passing, wf * C + cic, W * C)
    arr = torch.full((W * C + 1,), inf, dtype=t_arr.dtype, device=t_arr.device).scatter_reduce(
        0, seg, t_arr, "amin")
    leave = torch.full((W * C + 1,), -inf, dtype=t_arr.dtype, device=t_arr.device).scatter_reduce(
        0, seg, t_leave, "amax")
    arr[W * C], leave[W * C] = inf, -inf  # the sentinel collected the others: no window
    # ... and the vehicle announcing it, for the merges below: its distance to the line, speed and deceleration (one
    # front vehicle per lane, so per connection; the first to arrive, should there be more)
    first = torch.where(passing & (t_arr == _gather(arr, seg)), seg, W * C)
    foe_d = torch.full_like(arr, inf).scatter_reduce(0, first, d.to(arr.dtype), "amin")
    foe_v = torch.zeros_like(arr).scatter_reduce(0, first, vf.to(arr.dtype), "amax")
    foe_b = torch.zeros_like(arr).scatter_reduce(0, first, at(m.decel).to(arr.dtype), "amax")
    # SUMO's MSLink::opened: a link into an internal junction (cont="1": a left turn's waiting point inside the
    # junction) is open at the stop line unless red; the vehicle waits for its foes at that point instead
    cont = _gather(net.conn_wait, cic) > 0
    minor = found & ~must_stop & ~cont & (_gather(net.conn_yield, cic) | (code == SIG_GREEN_MINOR))
    # when its front would reach each foe's path (SUMO: a foe already inside is a leader it follows till it passes)
    reach = arrival_time(d.unsqueeze(1) + net.conn_zone_at.index_select(0, cic), vf.unsqueeze(1), af.unsqueeze(1),
                         vmax.unsqueeze(1))
    # merging ahead of a foe into its lane: safe only at a speed it could brake for (SUMO's unsafeMergeSpeeds), which
    # the foe is asked to do the harder the longer this one has stood (its impatience)
    stood = at(m.stood) if m.stood is not None else torch.zeros_like(vf)
    impatience = torch.clamp(stood / TIME_TO_IMPATIENCE_S, max=1.0)
    merge = (v_out, at(m.decel), impatience, foe_d, foe_v, foe_b)
    blocked = _foes_block(minor, wf, cic, t_arr, t_leave, arr, leave, leave_in, occ, net, W, clear, reach, merge)
    if not some_wait:
        return blocked, torch.zeros_like(waiting), d_in
    # at its internal junction it passes when its foes leave it a gap, timed from that point
    held = _foes_block(on(waiting), on(m.world), on(cn), t_arr_in, t_leave_in, arr, leave, leave_in, occ, net, W)
    blocked_in = held if wi is None else torch.zeros_like(waiting).index_put((wi,), held)
    return blocked, blocked_in, d_in


def body_zone(pos, length, via):
    """The parts (:data:`ZONE_BINS`) of its path across the junction (``via`` m) that the
    body of a vehicle inside the junction covers (front ``via + pos`` m past the line), as a bitmask."""
    size = via / ZONE_BINS
    front = via + pos
    back = front - length
    lo = torch.floor(back / size).clamp(0, ZONE_BINS - 1).to(torch.int64)
    hi = torch.floor(front / size).clamp(0, ZONE_BINS - 1).to(torch.int64)
    one = torch.ones_like(lo)
    return (torch.bitwise_left_shift(one, hi + 1) - 1) & ~(torch.bitwise_left_shift(one, lo) - 1)


def zone_occupancy(seg, bits, n: int):
    """Per segment (``seg``; segment ``n - 1`` collects the rest and stays empty) the union (bitwise or) of ``bits``,
    as counts per bit summed in integers: deterministic in any order, on CUDA too."""
    shifts = torch.arange(ZONE_BINS, device=bits.device, dtype=torch.int64)
    per_bit = torch.bitwise_right_shift(bits.unsqueeze(-1), shifts) & 1
    counts = torch.zeros((n, ZONE_BINS), dtype=torch.int64, device=bits.device).index_add_(0, seg, per_bit)
    counts[n - 1] = 0
    return (torch.bitwise_left_shift((counts > 0).to(torch.int64), shifts)).sum(-1)


def _foes_block(minor, world, conn, t_arr, t_leave, arr, leave, leave_in, occ, net, W: int, clear=None,
                reach=None, merge=None):
    """Which of the vehicles ``minor`` (on connection ``conn``, arriving at the conflict area in ``t_arr`` s and
    leaving it in ``t_leave`` s) must wait for a foe, given the foes' windows per (world, connection) (``arr``,
    ``leave``: approaching; ``leave_in``: moving inside the junction; ``occ``: the parts of their paths standing
    vehicles inside the junction cover, :func:`body_zone`) (:func:`yield_blocked`). ``merge``: (leave speed,
    deceleration, impatience; the announcing foe's distance, speed and deceleration per (world, connection)) for
    vehicles at their line, which merge ahead of a foe into the same lane only where :func:`merge_unsafe` allows.
    ``arr`` None: the foes inside the junction only (then with ``reach``)."""
    C = net.conn_yield.numel()
    # a minor link is blocked by any foe connection whose window overlaps its own; a vehicle inside the junction
    # on a foe connection into the same edge (a merge, or a parallel path) is not a conflict but a leader
    to_edge = _gather(net.conn_to_edge, conn)
    to_mask = None if merge is None else _gather(net.conn_to_mask, conn)
    zipper = _gather(net.conn_zipper, conn)
    blocked = torch.zeros_like(minor)
    parts = torch.arange(ZONE_BINS, device=minor.device)
    for j in range(net.conn_foes.shape[1]):
        foe = _gather(net.conn_foes[:, j].contiguous(), conn)
        at = torch.where(minor & (foe >= 0), world * C + foe.clamp(min=0), W * C)
        crossing = _gather(net.conn_to_edge, foe.clamp(min=0)) != to_edge
        if arr is not None:
            foe_arr, foe_leave = _gather(arr, at), _gather(leave, at)
            overlap = (foe_arr <= t_leave + JM_TIMEGAP_MINOR) & (foe_leave >= t_arr)
            # a zipper: only a foe that arrives first (ties: the lower connection) and is still there is waited for
            first = (foe_arr < t_arr) | ((foe_arr == t_arr) & (foe < conn))
            blocked = blocked | torch.where(zipper, first & (foe_leave >= t_arr), overlap)
        zone = _gather(net.conn_zone[:, j].contiguous(), conn)
        in_way = (_gather(occ, at) & zone) != 0
        if reach is None:  # (at an internal junction: until its rear has left the junction)
            moving = _gather(leave_in, at) >= t_arr
        else:  # until its rear has passed the crossing, if this one would reach it before
            bits = torch.bitwise_right_shift(zone.unsqueeze(1), parts) & 1
            cleared = torch.where(bits != 0, clear.index_select(0, at), -torch.inf).amax(1)
            moving = cleared >= reach[:, j]
        blocked = blocked | (crossing & (moving | in_way))
        if merge is not None:  # ahead of an approaching foe into the same lane
            v_leave, decel, impatience, foe_d, foe_v, foe_b = merge
            same = ~crossing & ~zipper & ((_gather(net.conn_to_mask, foe.clamp(min=0)) & to_mask) != 0)
            ahead = torch.isfinite(foe_arr) & (foe_arr > t_leave + JM_TIMEGAP_MINOR)
            blocked = blocked | (same & ahead & merge_unsafe(v_leave, decel, t_arr, impatience, _gather(foe_d, at),
                                                             _gather(foe_v, at), _gather(foe_b, at)))
    return blocked


MOVE_SLACK_M = 0.1  # m: a front vehicle with less room than this beyond its min gap cannot move on (no window)
WAIT_SLACK_M = 1e-3  # m: a vehicle this little past its internal junction stands at it (the hold's rounding)


def next_connection(lane, next_edge, net):
    """The connection out of each ``lane`` into ``next_edge`` (-1: none; the few connections out of a lane)."""
    ci = torch.full_like(lane, -1)
    J = net.lane_conn.shape[1]
    for j in range(J):
        lj = lane * J + j
        ci = torch.where(_gather(net.lane_conn_edge.reshape(-1), lj) == next_edge, _gather(net.lane_conn.reshape(-1), lj),
                         ci)
    return ci


def held_by_signal(world, route, rpos, lane, pos, speed, decel, active, sig, net, routes, dt: float):
    """Whether the next link on each vehicle's route (``active`` ones; not on their last edge) shows red, or yellow
    it stops for (:func:`stops_at_yellow`): SUMO's closed link, one it brakes for and has to wait at."""
    M = routes.route_edges.shape[1]
    nx = _gather(routes.route_edges.reshape(-1), route * M + (rpos + 1).clamp(max=M - 1))
    ci = torch.where(active, next_connection(lane, nx, net), -1)
    code = link_codes(sig, world, torch.where(ci >= 0, _gather(net.conn_link, ci.clamp(min=0)), NO_SIGNAL))
    d = _gather(net.lane_length, lane) - pos
    return (ci >= 0) & ((code == SIG_RED) | ((code == SIG_YELLOW) & stops_at_yellow(speed, decel, d, dt)))


def past_waiting(ldr, conn, inside, leader, waiting, conns, hops: int = 2):
    """The leader a vehicle inside a junction (``inside``; on connection ``conn``) follows: up to ``hops`` vehicles
    waiting at their internal junction on another connection skipped (:func:`waiting_inside`; SUMO: another internal
    lane, its front short of where the two paths merge). ``leader``, ``waiting``, ``conns``: the full columns."""
    for _ in range(hops):
        lc = ldr.clamp(min=0)
        skip = inside & (ldr >= 0) & _gather(waiting, lc) & (_gather(conns, lc) != conn)
        ldr = torch.where(skip, _gather(leader, lc), ldr)
    return ldr


def waiting_inside(running, pos, rpos, conn, net):
    """The vehicles inside a junction short of (or standing at) their connection's internal junction (a left
    turn's waiting point, ``net.conn_wait`` past the line); None on networks without connections."""
    if not net.conn_key.numel():
        return None
    c = conn.clamp(min=0)
    wait = _gather(net.conn_wait, c)
    return (running & (pos < 0) & (rpos > 0) & (conn >= 0) & (wait > 0)
            & (wait - _gather(net.conn_via, c) - pos > -WAIT_SLACK_M))


def same_source(world, slot, ce, se, min_gap, active, around: Surroundings, net, hops: int = 2):
    """Rule 10, SUMO's same-source foes (``MSLink::getLeaderInfo`` with ``sameSource``): the gap (+inf: none) and
    speed of the nearest vehicle ahead of each vehicle (``slot``; ``active`` ones only) that left the vehicle's lane
    by another connection and whose back has not yet passed the point where the two paths part
    (:func:`~twins.traffic.network.divergence`, ``net.conn_div``). ``ce``: the vehicle's connection (clamped),
    ``se``: how far along its path it is past the stop line (negative before it). The two follow each other as on
    one lane through the divergence point: gap = (``d_e`` - ``se``) - min gap - (``d_f`` - the other's back).
    Only a vehicle whose front is ahead of this one's counts (SUMO skips one whose front is behind this one's
    back; where two bodies overlap, as they could before this rule, the looser test would hold both for ever).
    The others are found as the tails of the lanes the sibling connection leads into, up to ``hops`` vehicles of
    other connections skipped (SUMO looks at every vehicle on the sibling's internal lane). Where another lane of
    the edge leads into the same next edge, SUMO's follower mostly changes lanes (on the edge, or on the junction's
    internal edge) to pass one held by the traffic ahead, which the twin without lane changing cannot: there
    ``net.conn_sib`` lists only the siblings with an internal junction, whose vehicles may stand at it for their
    foes (a left turner on a lane shared with straight traffic), and which SUMO's followers mostly wait behind (RESCO
    cologne3: 5 of about 60 changed lanes inside the junction). Letting every such follower pass, as before, made
    cologne3's straight traffic overtake its waiting left turners (delay 0.90 of SUMO's); following every sibling
    held a congested grid's straight traffic behind turners stopped by the queue ahead (throughput 0.90 of SUMO's;
    benchmarks/README.md, "A vehicle waiting at its internal junction holds the followers ...")."""
    inf = torch.full_like(se, torch.inf)
    gap, v = inf, torch.zeros_like(se)
    L, J = net.n_lanes, net.conn_sib.shape[1]
    for j in range(J):
        flat = ce * J + j
        cf = _gather(net.conn_sib.reshape(-1), flat)
        de, df = _gather(net.conn_div.reshape(-1), flat), _gather(net.conn_div_foe.reshape(-1), flat)
        ok = active & (cf >= 0) & (se < de)
        cfc = cf.clamp(min=0)
        e = _gather(net.conn_to_edge, cfc)
        first, n_here, via_f = _gather(net.edge_first_lane, e), _gather(net.edge_n_lanes, e), _gather(net.conn_via, cfc)
        for k in range(net.max_lanes):
            okk = ok & (k < n_here)
            t = _gather(around.lane_tails, world * L + torch.where(okk, first + k, 0))
            for _ in range(hops):
                tc = t.clamp(min=0)
                t = torch.where((t >= 0) & (_gather(around.conn, tc) != cf), _gather(around.leader, tc), t)
            tc = t.clamp(min=0)
            lt = _gather(around.length, tc)
            back = via_f + _gather(around.pos, tc) - lt
            g = (de - se) - min_gap - (df - back)
            hit = (okk & (t >= 0) & (t != slot) & (_gather(around.conn, tc) == cf) & (back < df)
                   & (back + lt > se) & (g < gap))
            gap = torch.where(hit, g, gap)
            v = torch.where(hit, _gather(around.speed, tc), v)
    return gap, v


def entry_tails(last, leader, waiting, hops: int = 2):
    """Each lane's tail as a vehicle crossing into the lane sees it: up to ``hops`` tails waiting at an internal
    junction (:func:`waiting_inside`: on their own path through the junction, SUMO's internal lane) skipped for
    the vehicle ahead of them."""
    for _ in range(hops):
        lc = last.clamp(min=0)
        last = torch.where((last >= 0) & _gather(waiting, lc), _gather(leader, lc), last)
    return last


TIME_TO_TELEPORT_S = 300.0  # s: SUMO's --time-to-teleport default (rule 12)


def teleport(state: VehicleState, drivers: Drivers, lane_tails, wait, routes, edge_length, exempt,
             wait_steps: int) -> Teleported | None:
    """Rule 12 on one window of every world, ``[W, n]`` slot columns (``state.leader``: the window slot of the
    vehicle ahead, -1: none; ``lane_tails`` [W, L]: each lane's tail slot, -1: none; ``wait``: steps each has stood,
    halted and running, up to and including this one; ``exempt``: slots never teleported, e.g. buses, whose stops
    the skip would lose). ``wait_steps``: steps a front vehicle may stand before it is teleported; ``edge_length``
    [E]. Returns None when nobody is teleported."""
    status, speed, rpos, leader, last = state.status, state.speed, state.route_pos, state.leader, lane_tails
    route, length, min_gap = drivers.route, drivers.length, drivers.min_gap
    running = status == RUNNING
    cand = running & (leader < 0) & (wait > wait_steps) & ~exempt
    if not bool(cand.any()):
        return None
    wi, si = cand.nonzero(as_tuple=True)
    r = route[wi, si].clamp(min=0)
    M = routes.route_edges.shape[1]
    k = torch.arange(M, device=speed.device)
    e = routes.route_edges[r]  # [K, M]
    need = (length[wi, si] + min_gap[wi, si]).to(edge_length.dtype)
    ok = ((k > rpos[wi, si].unsqueeze(1)) & (k < routes.route_len[r].unsqueeze(1))
          & (edge_length[e.clamp(min=0)] >= need.unsqueeze(1)))
    has = ok.any(1)
    target = torch.where(has, ok.to(torch.int8).argmax(1), rpos[wi, si])
    gone = torch.zeros_like(running)
    gone[wi, si] = True
    arrived = torch.zeros_like(running)
    arrived[wi, si] = ~has
    status, rpos, speed = status.clone(), rpos.clone(), speed.clone()
    status[wi, si] = torch.where(has, WAITING, ARRIVED)
    rpos[wi, si] = target
    speed[wi, si] = 0.0
    # followers lose their leader; a lane whose tail left is empty (the teleported vehicle was its front)
    leader = torch.where((leader >= 0) & gone.gather(1, leader.clamp(min=0)), -1, leader)
    last = torch.where((last >= 0) & gone.gather(1, last.clamp(min=0)), -1, last)
    return Teleported(status=status, route_pos=rpos, speed=speed, leader=leader, lane_tails=last, gone=gone,
                      arrived=arrived)


LC_SPEED_GAIN = 1.0  # m/s: a change for speed must gain this much (MOBIL's threshold, in next-step speed)
LC_POLITENESS = 0.5  # MOBIL's politeness: the weight of the speed the new follower would lose
LC_LOOK_FORWARD_S = 10.0  # s: SUMO LC2013's LOOK_FORWARD, the look-ahead time of an urgent strategic change
LC_URGENCY = 2.0  # SUMO LC2013's URGENCY: a blocked strategic change plans to be done in 1/URGENCY of the time left
LC_LOOKAHEAD_LEFT = 2.0  # SUMO LC2013's lcLookaheadLeft: a change to the left looks this many times further ahead
LC_LOOK_AHEAD_MEMORY = 0.9  # SUMO LC2013's LOOK_AHEAD_SPEED_MEMORY: the look-ahead speed keeps this much a second
# m: room an urgent strategic change across more than one lane keeps ahead, to the left and to the right (SUMO LC2013:
# myLeadingBlockerLength for unseen blockers that must change the other way), and the margin it stops short of that
LC_RESERVE_LEFT_M, LC_RESERVE_RIGHT_M, LC_RESERVE_SLACK_M = 40.0, 20.0, 1.0
# SUMO LC2013's keep-right: the acceptance time per m/s of speed (s; the legacy KEEP_RIGHT_ACCEPTANCE 7), the time the
# sum takes to reach its threshold on a free right lane (KEEP_RIGHT_TIME), that threshold (0.2 / lcSpeedGainRight
# 0.1) and the speed by which the own lane must be faster to stop it (5 km/h)
LC_KEEP_RIGHT_ACCEPT_S, LC_KEEP_RIGHT_TIME_S, LC_KEEP_RIGHT_THRESHOLD, LC_KEEP_RIGHT_SLACK = 7.0, 5.0, 2.0, 5.0 / 3.6
LC_KEEP_RIGHT_SCORE = 1e9  # a keep-right change outranks any change for speed, not a strategic one
# SUMO LC2013's currentDistDisallows(neighLeftPlace, |bestLaneOffset| + 2, laDist): a change for speed away from the
# best lanes divides the place left on the target lane by the lanes it would then have to cross, plus one
LC_AWAY_LANES = 2.0
LC_FAR_M = 1e9  # m: a continuation longer than this is as good as endless (the route's last edge: +inf)


def anticipated_speed(v, v0, gap, v_lead, accel, decel, tau, dt: float):
    """The speed a driver could reach next step behind a leader ``gap`` m ahead (net of its min gap; +inf: none),
    by SUMO's Krauss safe speed, for any car-following model: rule 11 compares lanes with it."""
    v_safe = safe_stop_speed(gap + brake_gap(v_lead, decel, 0.0, dt), decel, tau, dt)
    return torch.minimum(torch.minimum(v0, v + accel * dt), v_safe)


def secure_gap(v, v_lead, decel, tau, dt: float):
    """The gap (net of min gap) a vehicle at ``v`` needs behind a leader at ``v_lead`` that brakes at ``decel`` too:
    ``brakeGap(v, decel, tau) - brakeGap(v_lead, decel, 0)``, at least 0 (SUMO's ``MSCFModel::getSecureGap``)."""
    return torch.clamp(brake_gap(v, decel, tau, dt) - brake_gap(v_lead, decel, 0.0, dt), min=0.0)


def change_lanes(state: VehicleState, running, drivers: Drivers, net, routes, settings: StepSettings, hold=None):
    """Rule 11, after the move: each vehicle whose front is on a lane of a multi-lane edge (``pos >= 0``: out of
    the junction, its back maybe not yet, as SUMO changes lanes by the front's lane) may change to a neighbouring
    lane of the same edge. Returns the new ``lane`` [N], ``pos`` (changed by swaps), ``lc_yield`` [N] (the slot a
    vehicle also follows next step: one it is asked to let in, or the target lane's leader it falls behind; -1:
    none), ``changed`` [N], ``lc_stop`` [N] (where on its lane a vehicle stops next step; +inf: anywhere), the
    keep-right sums [N] and the look-ahead speeds [N].

    * **Strategic** (SUMO's ``LCA_STRATEGIC``): a vehicle off the route's best lanes of its edge
      (``routes.route_best_mask``: the lanes that continue the route over the following edges too, as far as SUMO
      looks ahead from this edge, :func:`~twins.traffic.network.best_lanes_lookahead`; SUMO's ``bestLanes``)
      changes towards the nearest one (lower index on ties) when that is urgent (below) or the target lane is not
      slower; on a lane with no connection to its next edge it stops
      at the end of the lane and waits there, blocking the vehicles behind it, as in SUMO. (Before the look-ahead
      was bounded, a vehicle took the lane of a turn 10 junctions ahead at once: RESCO ingolstadt7 carried 32
      vehicles an hour on the right lane of ``201963537#1`` against SUMO's 185, and its entry edge backed up.)
    * **Speed gain** (MOBIL, Kesting, Treiber & Helbing 2007, in next-step speeds): a vehicle on a best lane
      changes when the speed it could reach behind the new leader (:func:`anticipated_speed`) exceeds the one behind
      its own by more than :data:`LC_SPEED_GAIN` plus :data:`LC_POLITENESS` times the speed its new follower would
      lose; right before left on ties. The target may be off the best lanes where the way back would not be urgent
      (SUMO LC2013's ``currentDistDisallows(neighLeftPlace, |bestLaneOffset| + 2, laDist)``): the target lane's
      continuation on the route (``routes.route_lane_cont``, SUMO's ``LaneQ.length``) less the position and the own
      lane's occupation (the queue it leaves), over :data:`LC_AWAY_LANES`, at least the look-ahead of the change back
      (the urgency test below, in the direction back). (RESCO ingolstadt7: on the 40 m entry ``124812856#0`` SUMO's
      drivers leave the left-turn queue on lane 2 for lane 1, 66 an hour, and come back two edges later; the twin's
      queued behind the left turners, 133 vehicles an hour never inserted.)
    * **Safety** (SUMO's ``MSCFModel::getSecureGap``): the gap to the new leader, net of the vehicle's min gap, is
      at least ``brakeGap(v, decel, tau) - brakeGap(v_leader, decel, 0)``, and the same for the new follower
      behind it.
    * **Cooperation** (SUMO's LC2013 informs the follower on the target lane): a strategic change that is not safe
      asks the target lane's follower, if it is at least its min gap behind the vehicle's rear, to follow the vehicle
      as a leader next step (:func:`advance`), so that a gap opens; one request per follower, the nearest requester.
    * **Falling behind** (SUMO's ``MSLCM_LC2013::informLeader``): an urgent strategic change (the room left along
      the lane's continuation on the route, SUMO's ``LaneQ.length``, less the position and the best lane's
      occupation, per lane to cross, is shorter than ``v·LC_LOOK_FORWARD_S`` (twice that to the left) plus two
      lengths with min gap, SUMO's ``currentDistDisallows``; ``v`` is the look-ahead speed, below) that the target
      lane's leader
      blocks, and that cannot overtake that leader before the lane ends (not faster than it; or the room left less
      its brake gap, or its speed difference times ``1/LC_URGENCY`` of the time left, is shorter than the distance
      to pass it: to its back, its length with min gap, the vehicle's length and a secure gap), follows that leader
      next step, unless asked to let someone in: it slows down to change in behind it instead of driving on to the
      lane end, where it would stand until a gap passed. (RESCO cologne1: vehicles from a minor road and a straight lane
      that must reach the left lane of the 41 m ``27115123#3`` drove to its end and waited there 70–107 s for a
      quarter of them, blocking the lane; IDM delay 1.12 → 1.02 of SUMO's with lane changing.)
    * **Look-ahead speed** (SUMO LC2013's ``myLookAheadSpeed``): urgency and the time left are judged at a speed
      that jumps up to the current speed and otherwise decays towards it, keeping :data:`LC_LOOK_AHEAD_MEMORY` of
      the difference a second (``lc_look_ahead_speed``); SUMO updates it in each of its two decisions a step (right,
      then left, where that lane exists) and judges each direction after its own update; any change starts it at 0
      again (``changed()``). A vehicle braking into a queue so still looks as far ahead as its recent speed asks:
      with the current speed instead, one that had stopped looked only two car lengths ahead and changed at the
      lane's end (RESCO ingolstadt7 with lane changing, eight seeds: IDM delay 1.18 → 1.12 of SUMO's, Krauss
      1.20 → 1.12).
    * **Room kept across lanes** (SUMO's ``myLeadingBlockerLength``, LC2013's ``_patchSpeed``): an urgent strategic
      change that must cross more than one lane keeps :data:`LC_RESERVE_LEFT_M` (to the right
      :data:`LC_RESERVE_RIGHT_M`) free ahead of it for vehicles that must change the other way: it stops that far,
      :data:`LC_RESERVE_SLACK_M` and its min gap short of its lane's end, where it has not passed that point yet
      (returned as ``lc_stop``, the position it stops at next step, +inf: none; :func:`advance` treats it as a
      standing obstacle), and plans its overtaking (falling behind, above) with the room left before it. (RESCO
      ingolstadt7: left turners entering the 144 m ``201963537#1`` on its right lane waited at its end, where SUMO's
      stop 40 m short: of their vehicle-seconds on that lane 40 % were past 100 m, now 2 %, SUMO's 0.1 %.)
    * **Keep right** (SUMO LC2013's ``myKeepRightProbability``): a vehicle with no strategic change to make whose
      right neighbour is a best lane keeps a sum (``lc_keep_right``, <= 0) that falls each step by
      ``dt·2·(seconds/acceptance)/5``, ``acceptance = 7·(v0/limit)·max(1, v)`` s and ``seconds`` how long it could
      drive at its desired speed ``v0`` on the right lane (the rest of the edge and the look-ahead,
      ``routes.route_ahead_m``, less its brake gap, over ``v0``; behind a slower right-lane leader, until it closes on
      it to a secure gap), except while its own lane is more than 5 km/h faster than the right one; below -2 it
      changes right, before any change for speed; any change starts the sum again (:data:`LC_KEEP_RIGHT_ACCEPT_S`,
      :data:`LC_KEEP_RIGHT_TIME_S`, :data:`LC_KEEP_RIGHT_THRESHOLD`, :data:`LC_KEEP_RIGHT_SLACK`). (A main road of
      three lanes before a merge, 700 vehicles an hour: the lanes' shares 43/30/28 % without it, 68/25/7 % with it,
      SUMO's 69/28/4 %.) SUMO's check of overtaking on the right (only above 60 km/h) is left out.
    * **Swaps**: two vehicles each of which blocks the other's strategic change (the target lane's leader if it
      blocks, else its follower) exchange lanes and positions, where each fits the place it takes (not longer than
      the vehicle it replaces, or its rear clear of the front of the vehicle behind that place); a change whose new
      leader swaps is given up where the (longer) vehicle taking the leader's place would overlap it. With equal
      lengths both conditions always hold. Not SUMO's rule (there such a pair waits, often
      until one is teleported after ``time-to-teleport``, 300 s): without it, the pair would block two lanes of
      an edge for good (cologne3 with Krauss lost 6 % of its throughput that way).
    * **Simultaneous decisions**: every vehicle decides on the same post-move state; of those that would enter the
      same gap (same new leader, or both the lane's front) only the one furthest ahead (then the lowest slot) does.

    A strategic change that is not urgent waits until the target lane is not slower (its speed gain, politeness
    included, is at least 0: SUMO LC2013's "change towards the correct lane, speedwise it does not hurt"). With the
    two rules above, judged on the continuation, the lane-changing fidelity table went from 2 failing marks to none
    (ingolstadt7's delay IDM 1.11 → 1.06, Krauss 1.16 → 0.93; benchmarks/README.md); judged on the lane's end only
    (an earlier try), waiting made ingolstadt7's IDM delay 1.16–1.29 of SUMO's.

    Simplifications against SUMO's LC2013: speed gain decides in one step (MOBIL), where SUMO accumulates a
    speed-gain probability over steps; the occupation subtracted on leaving the best lanes is the own lane's on this
    edge (SUMO: the larger of both lanes' along their continuations); the best lanes are those needing the fewest
    changes, not SUMO's longest continuation; no urgency that relaxes the safe gaps near the lane end; and changes
    are instantaneous (no sublane, no lane-change duration)."""
    world, lane, pos, speed = state.world, state.lane, state.pos, state.speed
    route, rpos = drivers.route, state.route_pos
    W, span, dt = settings.W, settings.span, settings.dt
    L, N = net.n_lanes, pos.numel()
    dev = pos.device
    length, min_gap, decel, tau, accel = drivers.length, drivers.min_gap, drivers.decel, drivers.tau, drivers.accel
    sf, vmax = drivers.speed_factor, drivers.max_speed
    seg = torch.where(running, world * L + lane, W * L)
    key = seg.to(torch.float64) * span + pos.to(torch.float64)
    bits = key.view(torch.int64)
    order = torch.argsort(bits ^ ((bits >> 63) & 0x7FFFFFFFFFFFFFFF), stable=True)
    skey, sseg, spos = _gather(key, order), _gather(seg, order), _gather(pos, order)
    ln = lane.clamp(min=0)
    e = _gather(net.lane_edge, ln)
    k = _gather(net.lane_index, ln)
    first, n_here = _gather(net.edge_first_lane, e), _gather(net.edge_n_lanes, e)
    M = routes.route_edges.shape[1]
    mask = _gather(routes.route_best_mask.reshape(-1), route.clamp(min=0) * M + rpos.clamp(min=0, max=M - 1))
    # the front on the lane (out of the junction), its back maybe not yet: SUMO changes lanes by the front's lane,
    # right after the junction (RESCO's lane-change outputs: half of the changes within 6-13 m of the lane's start)
    eligible = running & (pos >= 0) & (n_here > 1)
    if hold is not None:
        eligible = eligible & ~hold
    cur_ok = ((mask >> k) & 1) == 1
    # strategic: the direction of the nearest lane that continues the route
    best_j = torch.full_like(k, -1)
    best_dist = torch.full_like(k, 1 << 30)
    for j in range(net.max_lanes):
        dist = (k - j).abs()
        better = (j < n_here) & (((mask >> j) & 1) == 1) & (dist < best_dist)
        best_j, best_dist = torch.where(better, j, best_j), torch.where(better, dist, best_dist)
    strat = torch.where(~cur_ok & (best_j >= 0), torch.sign(best_j - k), 0)
    # the speed behind the own leader
    inv = torch.empty_like(order)
    inv[order] = torch.arange(N, device=dev)
    nxt = (inv + 1).clamp(max=N - 1)
    own = torch.where((inv + 1 < N) & (_gather(sseg, nxt) == seg), _gather(order, nxt), -1)
    oc = own.clamp(min=0)
    g_own = torch.where(own >= 0, _gather(pos, oc) - _gather(length, oc) - pos - min_gap, torch.inf)
    v0 = torch.minimum(_gather(net.lane_speed, ln) * sf, vmax)
    v_cur = anticipated_speed(speed, v0, g_own, torch.where(own >= 0, _gather(speed, oc), 0.0), accel, decel, tau, dt)

    target = torch.full_like(lane, -1)
    new_lead = torch.full_like(lane, -1)
    score = torch.full_like(pos, -torch.inf)
    req_foll = torch.full_like(lane, -1)
    swap_with = torch.full_like(lane, -1)
    fall_behind = torch.full_like(lane, -1)
    # urgency of a strategic change (SUMO's currentDistDisallows): the room left on the lane, less the best lane's
    # occupation (lengths plus min gaps), per lane to cross, is shorter than the look-ahead distance. (SUMO's
    # usableDist subtracts LaneQ::occupation too, which its updateBestLanes leaves at 0; but it counts the room
    # along the lane's whole continuation, the twin only to the lane's end. Without the occupation ingolstadt7's
    # IDM delay with lane changing was 1.21 of SUMO's instead of 1.06.)
    d_end = _gather(net.lane_length, ln) - pos
    occ = torch.zeros(W * L + 1, dtype=pos.dtype, device=dev).index_add_(0, seg, length + min_gap)
    n_cross = torch.clamp(best_dist, min=1)
    # (the room left: along the lane's continuation on the route, SUMO's LaneQ.length, not just to its end)
    ML = routes.route_lane_cont.shape[2]
    cont_at = (route.clamp(min=0) * M + rpos.clamp(min=0, max=M - 1)) * ML
    cont = routes.route_lane_cont.reshape(-1)
    ahead_cur = torch.clamp(_gather(cont, cont_at + k.clamp(max=ML - 1)) - pos, max=LC_FAR_M)
    usable = (ahead_cur - _gather(occ, world * L + first + best_j.clamp(min=0))) / n_cross
    # the look-ahead speed (SUMO's myLookAheadSpeed), updated once per neighbour lane: right, then left
    memory = 1.0 - (1.0 - LC_LOOK_AHEAD_MEMORY) * dt
    la_speed = state.lc_look_ahead_speed if state.lc_look_ahead_speed is not None else torch.zeros_like(pos)

    def remember(x):
        return torch.where(speed > x, speed, torch.clamp(memory * x + (1.0 - memory) * speed, min=0.0))
    la_right = torch.where(eligible & (k > 0), remember(la_speed), la_speed)
    la_left = torch.where(eligible & (k + 1 < n_here), remember(la_right), la_right)
    la_dir = torch.where(strat > 0, la_left, la_right)  # each direction judged after its own update
    remaining = torch.clamp(d_end / torch.clamp(la_dir, min=1e-6) / n_cross / LC_URGENCY, min=dt)
    # an urgent change across more than one lane keeps room ahead for vehicles that must change the other way, which
    # it may not see yet: it stops that far and its min gap short of the lane's end, where it still can (SUMO's
    # myLeadingBlockerLength and _patchSpeed; RESCO ingolstadt7: left turners that entered on the right lane stood at
    # the end of the middle lanes, blocking the through traffic, where SUMO's stop 40 m short)
    def lc_look_ahead(la, side):  # SUMO's laDist: the look-ahead of a change (side: LC_LOOKAHEAD_LEFT to the left)
        return la * LC_LOOK_FORWARD_S * side + 2.0 * (length + min_gap)
    look_ahead = lc_look_ahead(la_dir, torch.where(strat > 0, LC_LOOKAHEAD_LEFT, 1.0))
    urgent = eligible & (strat != 0) & (usable < look_ahead)
    reserve = torch.where(urgent & (best_dist > 1),
                          torch.where(strat > 0, LC_RESERVE_LEFT_M, LC_RESERVE_RIGHT_M), 0.0)
    room = d_end - reserve - LC_RESERVE_SLACK_M - min_gap
    lc_stop = torch.where((reserve > 0) & (room > 0), pos + room, torch.inf)
    # keep right (SUMO LC2013): how long the vehicle could drive at its desired speed on the right lane, which goes on
    # for the rest of this edge and the look-ahead (SUMO's neighDist), against an acceptance time that grows with speed
    kr = state.lc_keep_right if state.lc_keep_right is not None else torch.zeros_like(pos)
    limit = _gather(net.lane_speed, ln)
    accept = LC_KEEP_RIGHT_ACCEPT_S * (v0 / limit) * torch.clamp(speed, min=1.0)
    ahead = _gather(routes.route_ahead_m.reshape(-1), route.clamp(min=0) * M + rpos.clamp(min=0, max=M - 1))
    fsg0 = torch.clamp(d_end + ahead - brake_gap(v0, decel, tau, dt), min=0.0)
    fsds0 = torch.minimum(accept, fsg0 / v0)
    kr_new = kr
    for d in (-1, 1):  # right, then left
        tk = k + d
        valid = eligible & (tk >= 0) & (tk < n_here)
        tl = torch.where(valid, first + tk, ln)
        tseg = world * L + tl
        idx = torch.searchsorted(skey, tseg.to(torch.float64) * span + pos.to(torch.float64))
        # the keys round positions within an ulp of the lane offset together: settle the boundary on the
        # positions themselves (on a lane they differ by a vehicle length), as the compiled step and the reference
        i1 = idx.clamp(max=N - 1)
        idx = idx + ((idx < N) & (_gather(sseg, i1) == tseg) & (_gather(spos, i1) < pos)).long()
        i0 = (idx - 1).clamp(min=0)
        idx = idx - ((idx > 0) & (_gather(sseg, i0) == tseg) & (_gather(spos, i0) >= pos)).long()
        i1, i0 = idx.clamp(max=N - 1), (idx - 1).clamp(min=0)
        lead = torch.where((idx < N) & (_gather(sseg, i1) == tseg), _gather(order, i1), -1)
        foll = torch.where((idx > 0) & (_gather(sseg, i0) == tseg), _gather(order, i0), -1)
        lc, fc = lead.clamp(min=0), foll.clamp(min=0)
        g_l = torch.where(lead >= 0, _gather(pos, lc) - _gather(length, lc) - pos - min_gap, torch.inf)
        v_l = torch.where(lead >= 0, _gather(speed, lc), 0.0)
        v_f, dec_f, tau_f = _gather(speed, fc), _gather(decel, fc), _gather(tau, fc)
        g_f = torch.where(foll >= 0, pos - length - _gather(pos, fc) - _gather(min_gap, fc), torch.inf)
        need_l = secure_gap(speed, v_l, decel, tau, dt)
        need_f = secure_gap(v_f, speed, dec_f, tau_f, dt)
        safe = (g_l >= need_l) & (g_f >= need_f)
        # speed gain (MOBIL) between lanes that both continue the route
        v_tgt = anticipated_speed(speed, torch.minimum(_gather(net.lane_speed, tl) * sf, vmax), g_l, v_l, accel,
                                  decel, tau, dt)
        v0_f = torch.minimum(_gather(net.lane_speed, tl) * _gather(sf, fc), _gather(vmax, fc))
        acc_f = _gather(accel, fc)
        g_fl = torch.where(lead >= 0, _gather(pos, lc) - _gather(length, lc) - _gather(pos, fc) - _gather(min_gap, fc),
                           torch.inf)
        loss = torch.clamp(anticipated_speed(v_f, v0_f, g_fl, v_l, acc_f, dec_f, tau_f, dt)
                           - anticipated_speed(v_f, v0_f, g_f, speed, acc_f, dec_f, tau_f, dt), min=0.0)
        gain = v_tgt - v_cur - LC_POLITENESS * torch.where(foll >= 0, loss, 0.0)
        tgt_ok = ((mask >> tk.clamp(min=0)) & 1) == 1
        # a strategic change that is not urgent waits until the target lane is not slower (SUMO LC2013: "change
        # towards the correct lane, speedwise it does not hurt")
        wants_strat = valid & (strat == d) & (urgent | (gain >= 0))
        # speed gain may leave the best lanes where the way back would not be urgent: the target lane's
        # continuation, less the vehicle's own lane's occupation (the queue it leaves), per lane to cross back plus one
        back = lc_look_ahead(la_right if d < 0 else la_left, LC_LOOKAHEAD_LEFT if d < 0 else 1.0)
        calm = (_gather(cont, cont_at + tk.clamp(min=0, max=ML - 1)) - pos - _gather(occ, seg)) / LC_AWAY_LANES >= back
        wants_gain = valid & (strat == 0) & cur_ok & (tgt_ok | calm) & (gain > LC_SPEED_GAIN)
        wants_kr = torch.zeros_like(wants_gain)
        if d < 0:  # keep right: the sum falls while the right lane is not much slower; below the threshold, change
            slower = (lead >= 0) & (v_l < v0)
            fsg = torch.clamp(torch.minimum(fsg0, g_l - secure_gap(v0, v_l, decel, tau, dt)), min=0.0)
            fsds = torch.where(slower, torch.minimum(fsds0, fsg / torch.clamp(v0 - v_l, min=NUMERICAL_EPS)), fsds0)
            kr_on = valid & (strat == 0) & cur_ok & tgt_ok
            falls = kr_on & ~(v_cur - LC_KEEP_RIGHT_SLACK > v_tgt)
            kr_new = torch.where(falls, kr - dt * (LC_KEEP_RIGHT_THRESHOLD * (fsds / accept) / LC_KEEP_RIGHT_TIME_S), kr)
            wants_kr = kr_on & (kr_new < -LC_KEEP_RIGHT_THRESHOLD)
        s = torch.where(wants_strat, torch.inf, torch.where(wants_kr, LC_KEEP_RIGHT_SCORE, gain))
        better = (wants_strat | wants_gain | wants_kr) & safe & (s > score)
        target = torch.where(better, tl, target)
        new_lead = torch.where(better, lead, new_lead)
        score = torch.where(better, s, score)
        # cooperation: a blocked strategic change asks the follower (behind the vehicle's rear) to let it in
        ask = wants_strat & ~safe & (foll >= 0) & (g_f > 0)
        req_foll = torch.where(ask, foll, req_foll)
        # falling behind: an urgent strategic change blocked by the target lane's leader, which it cannot overtake
        # before its lane ends, follows that leader next step (SUMO's MSLCM_LC2013::informLeader)
        dv = speed - v_l
        dec_l = _gather(decel, lc)
        # (to pass it: its rear past the leader's front, a secure gap ahead of it)
        overtake = torch.clamp(g_l + _gather(length, lc) + _gather(min_gap, lc) + length
                               + secure_gap(v_l, speed, dec_l, _gather(tau, lc), dt), min=0.0)
        cannot = ((dv <= 0) | (d_end - reserve - brake_gap(speed, decel, tau, dt) < overtake)
                  | (remaining * dv < overtake))
        fall = wants_strat & (lead >= 0) & (g_l < need_l) & urgent & cannot
        fall_behind = torch.where(fall, lead, fall_behind)
        # the vehicle that blocks a strategic change (the leader if it does, else the follower), for swaps
        blocker = torch.where(g_l < need_l, lead, torch.where(g_f < need_f, foll, -1))
        swap_with = torch.where(wants_strat & ~safe, blocker, swap_with)
    # one vehicle per gap: the furthest ahead, then the lowest slot
    slots = torch.arange(N, device=dev)
    change = target >= 0
    sentinel = N + W * L
    grp = torch.where(change, torch.where(new_lead >= 0, new_lead, N + world * L + target.clamp(min=0)), sentinel)
    best = torch.full((sentinel + 1,), -torch.inf, dtype=pos.dtype, device=dev).scatter_reduce(
        0, grp, torch.where(change, pos, -torch.inf), "amax")
    top = change & (pos == _gather(best, grp))
    low = torch.full((sentinel + 1,), N, dtype=torch.int64, device=dev).scatter_reduce(
        0, torch.where(top, grp, sentinel), slots, "amin")
    change = top & (_gather(low, grp) == slots)
    # two vehicles that block each other's strategic change swap lanes and places, where each one's body fits the
    # place it takes: not longer than the one it replaces, or its rear still clear of the vehicle behind that
    # place (a longer vehicle would otherwise overlap it); a change into the gap behind a swapping vehicle is
    # given up where the longer body taking that place would reach back over the changing vehicle's front
    sw = swap_with.clamp(min=0)
    partner = _gather(swap_with, sw)
    prv = (inv - 1).clamp(min=0)
    behind = torch.where((inv > 0) & (_gather(sseg, prv) == seg), _gather(order, prv), -1)
    bh = _gather(behind, sw)
    fits = ((length <= _gather(length, sw)) | (bh < 0)
            | (_gather(pos, sw) - length >= _gather(pos, bh.clamp(min=0))))
    swap = (swap_with >= 0) & (partner == slots) & fits & _gather(fits, sw)
    sl = new_lead.clamp(min=0)
    change = change & ~((new_lead >= 0) & _gather(swap, sl)
                        & (_gather(pos, sl) - _gather(length, _gather(sw, sl)) < pos))
    lane = torch.where(swap, _gather(lane, sw), lane)
    pos = torch.where(swap, _gather(pos, sw), pos)
    # one request per follower: the nearest requester (lowest position, then lowest slot)
    asking = req_foll >= 0
    fgrp = torch.where(asking, req_foll, N)
    near = torch.full((N + 1,), torch.inf, dtype=pos.dtype, device=dev).scatter_reduce(
        0, fgrp, torch.where(asking, pos, torch.inf), "amin")
    top_r = asking & (pos == _gather(near, fgrp))
    lc_yield = torch.full((N + 1,), N, dtype=torch.int64, device=dev).scatter_reduce(
        0, torch.where(top_r, fgrp, N), slots, "amin")[:N]
    lc_yield = torch.where(lc_yield < N, lc_yield, -1)
    # one not asked to let anyone in follows the target lane's leader it falls behind (unless it swapped)
    lc_yield = torch.where((lc_yield < 0) & ~swap, fall_behind, lc_yield)
    # the keep-right sum starts again after any change (SUMO's changed())
    kr_new = torch.where(change | swap, 0.0, kr_new)
    la_left = torch.where(change | swap, 0.0, la_left)  # and the look-ahead speed
    return torch.where(change, target, lane), pos, lc_yield, change | swap, lc_stop, kr_new, la_left


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a 1-D ``x`` and an index tensor: ``index_select`` is 3-4x faster on CPU."""
    return x.index_select(0, index)


def _nz(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask).squeeze(1)


def space_till_standing(world, lane, running, pos, length, min_gap, speed, decel, leader, held, lane_length,
                        n_lanes: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (world, lane), float64 ``[W*L + 1]``, the room that keeping a junction clear allows (SUMO's
    ``MSVehicle::checkRewindLinkLanes``): the back of the upstream-most halted vehicle on it, less the length + min
    gap of the running vehicles behind it (summed in slot order; SUMO's ``MSLane::getSpaceTillLastStanding``);
    where none is halted but its last vehicle on it (front past the lane's start) has to wait at its next link
    (SUMO's ``myHaveToWaitOnNextLink`` of the step before, read here from the state now): ``held`` there (its link
    shows red, or yellow it stops for: :func:`held_by_signal`), or it follows a vehicle on the lane (``leader`` >=
    0) and is slower than its ``decel`` read as m/s (SUMO's heuristic "probably not crossing the next junction": its
    passing speed is its leader's to follow, no more than its speed to stop at the line), the lane's length less the
    length + min gap of every vehicle on it (SUMO then counts the lane as stopped); else +inf. A lane's front vehicle
    that its link lets pass counts as moving at any speed (SUMO: its passing speed exceeds its stopping speed). The
    last entry collects the vehicles that are not running. Also returns each lane's length less the length + min
    gap of every vehicle on it (``free``, where :func:`room_beyond` carries the room on to the lane after it)."""
    n = W * n_lanes + 1
    seg = torch.where(running, world * n_lanes + lane, W * n_lanes)
    pos64 = pos.to(torch.float64)
    back = pos64 - length.to(torch.float64)
    lwg = (length + min_gap).to(torch.float64)
    halted = running & (speed < STOP_SPEED)
    standing = torch.full((n,), torch.inf, dtype=torch.float64, device=pos.device).scatter_reduce(
        0, torch.where(halted, seg, W * n_lanes), back, "amin")
    behind = running & (pos64 <= _gather(standing, seg))
    # index_add_ (not bincount, the same sums in the same order): a known size, so no host read on CUDA
    zeros = torch.zeros(n, dtype=torch.float64, device=pos.device)
    room = standing - zeros.index_add_(0, torch.where(behind, seg, W * n_lanes), lwg)
    on = running & (pos > 0)
    seg_on = torch.where(on, seg, W * n_lanes)
    tail = torch.full((n,), torch.inf, dtype=torch.float64, device=pos.device).scatter_reduce(0, seg_on, pos64, "amin")
    waits = ((leader >= 0) & (speed < decel)) | held
    waits = (on & (pos64 == _gather(tail, seg_on)) & waits).to(torch.int64)
    stopped = torch.zeros(n, dtype=torch.int64, device=pos.device).scatter_reduce(0, seg_on, waits, "amax") > 0
    occupied = torch.zeros(n, dtype=torch.float64, device=pos.device).index_add_(0, seg_on, lwg)
    length_of = torch.cat([lane_length.to(torch.float64).repeat(W), zeros[:1]])
    free = length_of - occupied
    room = torch.where(torch.isfinite(standing) | ~stopped, room, free)
    room[W * n_lanes] = torch.inf
    return room, free


def room_beyond(world, route, rpos, next_lane, room, free, sig, net, routes, L: int):
    """The room keeping a junction clear allows past a next lane where nothing stops (``room`` +inf there), looked
    for one lane further on the route (by a front that can still brake for its line: :func:`advance`), as SUMO's
    ``MSVehicle::checkRewindLinkLanes`` carries the space over a link that lets it pass: that lane's length less
    its vehicles (``free``), plus the room of the lane after it (the most of the lanes its connection leads to)
    where that is limited; that lane's ``free`` alone where the link between them shows red or yellow (a closed
    link ahead: SUMO counts a stop). +inf otherwise (the lane after it free too, no further edge on the route, no
    connection)."""
    M = routes.route_edges.shape[1]
    nl = next_lane.clamp(min=0)
    further = (next_lane >= 0) & (rpos + 2 < _gather(routes.route_len, route))
    e2 = _gather(routes.route_edges.reshape(-1), route * M + (rpos + 2).clamp(max=M - 1))
    c2 = torch.where(further, next_connection(nl, e2, net), -1)
    c2c = c2.clamp(min=0)
    code = link_codes(sig, world, torch.where(c2 >= 0, _gather(net.conn_link, c2c), NO_SIGNAL))
    mask = _gather(net.conn_to_mask, c2c)
    first, n = _gather(net.edge_first_lane, e2.clamp(min=0)), _gather(net.edge_n_lanes, e2.clamp(min=0))
    after = torch.full(nl.shape, -torch.inf, dtype=room.dtype, device=room.device)
    for k in range(net.max_lanes):
        ok = (k < n) & (((mask >> k) & 1) != 0)
        r_k = _gather(room, world * L + (first + k).clamp(max=L - 1))
        after = torch.where(ok, torch.maximum(after, r_k), after)
    own = _gather(free, world * L + nl)
    closed = (code == SIG_RED) | (code == SIG_YELLOW)
    out = torch.where(closed, own, torch.where(torch.isfinite(after), own + after, torch.inf))
    return torch.where(c2 >= 0, out, torch.inf)


SPEED_SUM_SCALE = 2.0 ** 32  # rule 3: speeds summed as integers of 2^-32 m/s (exact in any order: CUDA atomics too)


def speed_units(v: torch.Tensor) -> torch.Tensor:
    """Speeds as int64 counts of 2^-32 m/s, rounded down (:data:`SPEED_SUM_SCALE`)."""
    return torch.floor(v.to(torch.float64) * SPEED_SUM_SCALE).to(torch.int64)


def lane_speed_sums(world, lane, running, speed, n_lanes: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (world, lane), int64 ``[W*L + 1]``: the sum of the running vehicles' speeds (:func:`speed_units`) and
    their number, for a lane's mean speed (SUMO's ``MSLane::getMeanSpeed``): integers, so the same sums in any order
    and on any device. The last entry collects the others."""
    seg = torch.where(running, world * n_lanes + lane, W * n_lanes)
    zeros = torch.zeros(W * n_lanes + 1, dtype=torch.int64, device=speed.device)
    return zeros.index_add(0, seg, speed_units(speed)), zeros.index_add(0, seg, running.to(torch.int64))


def advance(m: Movers, around: Surroundings, sig, net, routes, settings: StepSettings, stops: StopTables | None = None,
            dawdle_u=None) -> Moved:
    """Rules 4–8 for a set of vehicles: look past the stop line, bus stops, IDM, movement, transitions.

    ``m`` holds one entry per vehicle considered (``running`` masks the ones that move); ``around`` the window's
    full columns where leaders and lane tails are looked up (:class:`~twins.traffic.state.Surroundings`).
    The look past the stop line and the lane transitions run on the front vehicles only (the subset
    ``fi``); ``settings.fused`` moves the vehicles with :func:`fused_idm_move` (``torch.compile``, same numbers);
    ``settings.cf`` the car-following model (rule 9) and ``dawdle_u`` its per-vehicle draws (Krauss; None: none).
    ``stops``: the bus stops (rule 7; then ``m`` holds ``next_stop`` and ``dwell``).
    """
    L = net.n_lanes
    slot, pos, length, speed = around.slot, around.pos, around.length, around.speed
    last, space = around.lane_tails, around.space
    # the tails a vehicle crossing into a lane sees (those waiting inside the junction on another path skipped)
    entry = last if around.entry_tails is None else around.entry_tails
    dt, W, substeps, fused, cf = settings.dt, settings.W, settings.substeps, settings.fused, settings.cf
    lane_change, delta = settings.lane_change, m.delta
    wr, rr, lr, pr, vr, rpr = m.world, m.route, m.lane, m.pos, m.speed, m.route_pos
    lenr, mgr = m.length, m.min_gap
    ldr = m.leader
    if around.waiting is not None:  # 10. inside a junction, one waiting on another path is not in the way
        ldr = past_waiting(ldr, m.conn, (pr < 0) & (rpr > 0), around.leader, around.waiting, around.conn)
    gap_src = None
    if net.has_siblings:  # 10. inside a junction: those that left its lane before it on other paths, until they part
        cn = m.conn.clamp(min=0)
        gap_src, v_src = same_source(wr, around.slot, cn, _gather(net.conn_via, cn) + pr, mgr,
                                     m.running & (pr < 0) & (rpr > 0) & (m.conn >= 0), around, net)

    # 4. followers see their leader; front vehicles look past the stop line
    on_last_edge = rpr + 1 >= _gather(routes.route_len, rr)
    has_leader = ldr >= 0
    ld = ldr.clamp(min=0)
    gap = torch.where(has_leader, _gather(pos, ld) - _gather(length, ld) - pr, torch.inf)
    v_lead = torch.where(has_leader, _gather(speed, ld), 0.0)
    if gap_src is not None:
        nearer = gap_src < gap
        gap, v_lead = torch.where(nearer, gap_src, gap), torch.where(nearer, v_src, v_lead)
    L_here = _gather(net.lane_length, lr)
    front = ~has_leader & ~on_last_edge & m.running
    if settings.fixed_shape:  # every mover, masked to the front ones: no data-dependent shape
        at = lambda x: x  # noqa: E731
        put = lambda full, part: torch.where(front, part, full)  # noqa: E731
    else:
        fi = _nz(front)
        at = lambda x: _gather(x, fi)  # noqa: E731
        put = lambda full, part: full.index_put((fi,), part)  # noqa: E731
    wf, rf, lf, pf, vf, lenf, mgf = (at(x) for x in (wr, rr, lr, pr, vr, lenr, mgr))
    nk = at(rpr) + 1
    M = routes.route_edges.shape[1]
    at_next = rf * M + nk.clamp(max=M - 1)  # (route, next position), flat; clamped for arrays' sake only
    next_edge = _gather(routes.route_edges.reshape(-1), at_next)
    if net.conn_key.numel():
        ci = next_connection(lf, next_edge, net)
        found = (ci >= 0) & (next_edge >= 0)
        if settings.fixed_shape:
            found = found & front  # the rows of other movers never look past the line (nor register at a junction)
        cic = ci.clamp(min=0)
        via, link = _gather(net.conn_via, cic), _gather(net.conn_link, cic)
    else:
        ci = torch.full_like(lf, -1)
        via = torch.zeros_like(pf)
        link = torch.full_like(lf, NO_SIGNAL)
        found = torch.zeros_like(wf, dtype=torch.bool)
    # the lanes it may enter: with lane changing (rule 11) those its connection leads to (SUMO); without, those
    # that continue its route (as if it changed lanes on the junction)
    # (of those, the route's best lanes where the connection leads to one)
    if lane_change and net.conn_key.numel():
        to_mask = _gather(net.conn_to_mask, ci.clamp(min=0))
        best_next = to_mask & _gather(routes.route_best_mask.reshape(-1), at_next)
        to_mask = torch.where(best_next != 0, best_next, to_mask)
    else:
        to_mask = _gather(routes.route_mask.reshape(-1), at_next)
    next_lane, next_room = choose_lane(wf, next_edge, to_mask, entry, pos, length,
                                       net.edge_first_lane, net.edge_n_lanes, net.max_lanes, L)
    next_lane = torch.where(found, next_lane, -1)  # no connection: never cross
    # ... but a vehicle waiting inside on its own connection is on its path: it crosses behind that one
    nlc = wf * L + next_lane.clamp(min=0)
    raw = _gather(last, nlc)
    own_wait = (raw >= 0) & (raw != _gather(entry, nlc)) & (_gather(around.conn, raw.clamp(min=0)) == ci)
    next_room = torch.where(own_wait, _gather(pos, raw.clamp(min=0)) - _gather(length, raw.clamp(min=0)), next_room)
    code = link_codes(sig, wf, link)
    L_f = at(L_here)
    d = L_f - pf
    signal_stop = (code == SIG_RED) | ((code == SIG_YELLOW) & stops_at_yellow(vf, at(m.decel), d, dt))
    must_stop = signal_stop | (next_lane < 0) | ~found
    # the nearest vehicle past the line on its way: the tail of the lane it enters, or one still inside the junction
    nl = torch.where(own_wait, raw, _gather(entry, nlc))
    v_junction = torch.where(nl >= 0, _gather(speed, nl.clamp(min=0)), 0.0)
    gap_junction = torch.where(torch.isfinite(next_room), d + via + next_room, torch.inf)
    if gap_src is not None:  # ... and on its way past the line
        for g, v in ((at(gap_src), at(v_src)),
                     same_source(wf, at(around.slot), ci.clamp(min=0), -d, mgf, found, around, net)):
            nearer = g < gap_junction
            gap_junction, v_junction = torch.where(nearer, g, gap_junction), torch.where(nearer, v, v_junction)
    if not lane_change and net.conn_key.numel():
        # without lane changing a vehicle may enter another lane of the next edge than the one ahead of it on its
        # connection did, but it crosses behind that one (SUMO: both on the connection's internal lane): the
        # upstream-most vehicle still inside the junction on its connection, a tail of one of the edge's lanes
        e = next_edge.clamp(min=0)
        first, n_here = _gather(net.edge_first_lane, e), _gather(net.edge_n_lanes, e)
        for j in range(net.max_lanes):
            ok = found & (j < n_here)
            t = _gather(last, wf * L + torch.where(ok, first + j, 0))
            tc = t.clamp(min=0)
            p = _gather(pos, tc)
            g = d + via + (p - _gather(length, tc))
            ahead = ok & (t >= 0) & (p < 0) & (_gather(around.conn, tc) == ci) & (g < gap_junction)
            gap_junction = torch.where(ahead, g, gap_junction)
            v_junction = torch.where(ahead, _gather(speed, tc), v_junction)
    # keep the junction clear: no room behind the next lane's last standing vehicle holds this one at the
    # line; moving vehicles hold it only while the lane's last one has to wait at its own next link (SUMO's
    # myHaveToWaitOnNextLink): held by its signal, or following one on that lane slower than its decel
    # (:func:`space_till_standing`)
    # (only where the connection must keep the junction clear, net.conn_keep_clear: it crosses a junction area
    # that another link of the junction conflicts with, and does not waive it with keepClear="0", as SUMO's
    # MSVehicle::keepClear; elsewhere a queue may stand across the junction)
    room_standing = _gather(space, wf * L + next_lane.clamp(min=0))
    keep_clear = _gather(net.conn_keep_clear, cic) if net.conn_key.numel() else torch.zeros_like(found)
    if net.conn_key.numel() and around.free is not None:  # nothing stops on it: the room one lane further on,
        # while it can still brake for its line (SUMO withdraws a request only at a link at least its brake gap
        # ahead; applied to the next lane's own room too, that broke ingolstadt7 under Krauss)
        can_brake = d >= brake_gap(vf, at(m.decel), 0.0, dt) + POSITION_EPS_M
        room_standing = torch.where(torch.isfinite(room_standing) | ~can_brake, room_standing,
                                    room_beyond(wf, rf, at(rpr), next_lane, space, around.free, sig, net, routes, L))
    must_stop = must_stop | ((room_standing < (lenf + mgf).to(torch.float64)) & keep_clear)
    # 10. right of way: a link that must yield enters only when its foes' approaching traffic leaves it a gap
    if net.has_foes:
        # (SUMO's willPass: a front that cannot move on, its way blocked past the line, announces no window)
        moving = (gap_junction > mgf + MOVE_SLACK_M) | (vf >= STOP_SPEED)
        # (the car-following speed from v behind the junction leader: caps the speed it leaves the junction at)
        v0f = torch.minimum(_gather(net.lane_speed, lf) * at(m.speed_factor), at(m.max_speed))
        if cf == KRAUSS:
            def follow(v):
                return torch.where(torch.isfinite(gap_junction), krauss_speed(
                    v, v0f, gap_junction, v_junction, mgf, at(m.accel), at(m.decel), at(m.tau), None, None, None, dt),
                    torch.inf)
        else:
            def follow(v):
                return torch.where(torch.isfinite(gap_junction), idm_speed(
                    v, v0f, gap_junction, v_junction, at(m.accel), at(m.two_sqrt_ab), at(m.tau), mgf,
                    delta if isinstance(delta, int) else at(delta), dt, substeps), torch.inf)
        blocked, blocked_in, d_wait_in = yield_blocked(m, at, ci, found, must_stop, code, d, via, net, routes,
                                                  W, M, settings.fixed_shape, follow, moving)
        must_stop = must_stop | blocked
    else:
        blocked_in = None
    # 10. SUMO's cautious approach: a minor link it could still stop for is approached as a standing obstacle at
    # the point where it waits for its foes, until it is within its visibility distance of that point
    if net.conn_key.numel():
        minor = found & ~must_stop & (_gather(net.conn_yield, cic) | (code == SIG_GREEN_MINOR))
        d_wait = d + _gather(net.conn_wait, cic)
        cautious = minor & (d_wait > _gather(net.conn_visibility, cic)) & (vf * vf <= 2.0 * at(m.decel) * d_wait)
    else:
        d_wait, cautious = d, torch.zeros_like(must_stop)
    # a stop line ahead is an obstacle, but a vehicle still inside the junction may be nearer; at a red or yellow
    # light the vehicle stops JM_STOPLINE_GAP_M short of it where its brakes allow (SUMO's jmStoplineGap)
    d_line = torch.where(signal_stop & found, stop_line(vf, d, at(m.decel), dt), d)
    line_first = must_stop & ((d_line + mgf <= gap_junction) | ~found)
    # (held by its signal, it brakes for the line even while it follows a vehicle still inside the junction)
    line_behind = put(torch.zeros_like(has_leader), signal_stop & ~line_first)
    gap_front = torch.where(line_first, d_line + mgf, gap_junction)
    wary = cautious & (d_wait + mgf < gap_front)
    gap_front = torch.where(wary, d_wait + mgf, gap_front)
    # never roll over a line it must stop at, whichever obstacle IDM is following
    gap_phys = put(gap, torch.where(must_stop, torch.minimum(gap_front, d), gap_front))
    gap = put(gap, gap_front)
    v_lead = put(v_lead, torch.where(line_first | wary, 0.0, v_junction))
    stopping = put(torch.zeros_like(has_leader), line_first | wary)
    # ... and inside the junction, short of its waiting point (a left turn's internal junction)
    if net.conn_key.numel():
        cn = m.conn.clamp(min=0)
        wait = _gather(net.conn_wait, cn)
        inside = m.running & (pr < 0) & (rpr > 0) & (m.conn >= 0) & (wait > 0)
        code_in = link_codes(sig, wr, _gather(net.conn_link, cn))
        d_in = wait - _gather(net.conn_via, cn) - pr
        wary_in = (inside & (_gather(net.conn_yield, cn) | (code_in == SIG_GREEN_MINOR))
                   & (d_in > _gather(net.conn_visibility, cn)) & (vr * vr <= 2.0 * m.decel * d_in)
                   & (d_in + mgr < gap))
        gap = torch.where(wary_in, d_in + mgr, gap)
        v_lead = torch.where(wary_in, 0.0, v_lead)
        stopping = stopping | wary_in
    if blocked_in is not None:  # held at its internal junction while its foes come (yield_blocked)
        d_hold = d_wait_in.clamp(min=0.0)
        hold_in = blocked_in & (d_hold + mgr < gap)
        gap = torch.where(hold_in, d_hold + mgr, gap)
        v_lead = torch.where(hold_in, 0.0, v_lead)
        stopping = stopping | hold_in
        gap_phys = torch.where(blocked_in, torch.minimum(gap_phys, d_hold), gap_phys)
    # 11. cooperation and falling behind: a vehicle follows the neighbour it yields to (one it lets in, or the
    # target lane's leader it falls behind) as well as its own leader, where that one is nearer; alongside it
    # (a negative gap) it takes gap 0 and stops as its model brakes for a standing obstacle (SUMO: at most decel)
    if lane_change:
        y = m.lc_yield
        yc = y.clamp(min=0)
        g_y = torch.where(y >= 0, _gather(pos, yc) - _gather(length, yc) - pr, torch.inf)
        use_y = g_y < gap
        gap = torch.where(use_y, g_y.clamp(min=0.0), gap)
        v_lead = torch.where(use_y, _gather(speed, yc), v_lead)
        stopping = stopping & ~use_y
        if m.lc_stop is not None:  # ... and stops where an urgent change across lanes keeps room ahead (SUMO: LC2013)
            d_s = m.lc_stop - pr
            short = (d_s > 0) & (d_s + mgr < gap)
            gap = torch.where(short, d_s + mgr, gap)
            v_lead = torch.where(short, 0.0, v_lead)
            stopping = stopping | short

    # 7. a bus's next stop on this edge is a stop line (unless its leader is nearer)
    if stops is not None:
        ns, dw = m.next_stop, m.dwell
        z = ns.clamp(min=0)
        at_edge = (ns >= 0) & (rpr == _gather(stops.route_pos, z))
        stop_pos = _gather(stops.pos, z)
        d_stop = stop_pos - pr
        dwelling = at_edge & (dw > 0)
        nearer = at_edge & (d_stop + mgr < gap)
        gap = torch.where(nearer, d_stop + mgr, gap)
        v_lead = torch.where(nearer, 0.0, v_lead)
        stopping = stopping | nearer
        gap_phys = torch.where(at_edge, torch.minimum(gap_phys, d_stop), gap_phys)

    # 8. turning speeds: the limit of the junction being crossed (front inside it), then the one ahead
    sfr, vmax = m.speed_factor, m.max_speed
    v0 = torch.minimum(_gather(net.lane_speed, lr) * sfr, vmax)
    v_cap = None  # no cap (the same numbers, less work) on networks without turning speeds
    if routes.has_turn_speeds:  # a Python flag: no work (and the same numbers) on networks without them
        turn = routes.route_turn_speed.reshape(-1)
        here = rr * M + rpr
        in_junction = (pr < 0) & (rpr > 0)
        v0 = torch.where(in_junction, torch.minimum(v0, _gather(turn, (here - 1).clamp(min=0)) * sfr), v0)
        u = _gather(turn, here)
        ut = torch.minimum(u * sfr, vmax)
        if cf == KRAUSS:  # SUMO's generic freeSpeed
            v_cap = torch.where(torch.isfinite(u), free_speed(L_here - pr, ut, m.decel, dt), torch.inf)
        else:
            v_cap = turn_speed_cap(vr, v0, L_here - pr, ut, torch.isfinite(u), m.accel, m.two_sqrt_ab,
                                   m.tau, m.decel, delta, dt, substeps)

    # 4. followers see their signal too (SUMO: every vehicle processes the links within its look-ahead): one whose
    # link is red, or yellow while it can still stop (stops_at_yellow), brakes for the line as well as for its
    # leader, which may cross before the light changes; so does a front vehicle its signal holds that follows one
    # still inside the junction (line_behind)
    if net.conn_key.numel() and sig.shape[1]:
        follower = has_leader & ~on_last_edge & m.running
        line_stop = line_behind | held_by_signal(wr, rr, rpr, lr, pr, vr, m.decel, follower, sig, net, routes, dt)
        d_line = stop_line(vr, L_here - pr, m.decel, dt)  # (short of the line, as for the front above)
        if cf == KRAUSS:
            v_line = safe_stop_speed(d_line, m.decel, m.tau, dt)
        else:
            v_line = idm_speed(vr, v0, d_line, torch.zeros_like(vr), m.accel, m.two_sqrt_ab, m.tau,
                               torch.zeros_like(mgr), delta, dt, substeps)  # (a standing point: no min gap, below)
        v_line = torch.where(line_stop, v_line, torch.inf)
        v_cap = v_line if v_cap is None else torch.minimum(v_cap, v_line)
    # 5. / 9. car following and movement (a bus dwelling at its stop is held there)
    hold = None if stops is None else dwelling
    if cf == KRAUSS:
        v_new, x_new = krauss_move(vr, v0, gap, v_lead, mgr, m.accel, m.decel, m.tau,
                                   m.sigma, dawdle_u, v_cap, dt, gap_phys, pr, hold)
    else:
        # toward a standing point (a line, where it waits, a stop) IDM keeps no min gap and never passes it (SUMO's
        # MSCFModel_IDM::stopSpeed, _v without respectMinGap; followSpeed adds the min gap to both sides)
        # (from standstill, where IDM would not move, it creeps at the safe stopping speed over the action step)
        to_point = gap - mgr
        s0 = torch.where(stopping, 0.0, mgr)
        gap_phys = torch.where(stopping, torch.where(to_point < STOP_GAP_EPS, 0.0, torch.minimum(gap_phys, to_point)),
                               gap_phys)
        creep = torch.where(stopping & (vr < STANDING_EPS) & (to_point >= STOP_GAP_EPS),
                            safe_stop_speed(to_point, m.decel, dt, dt), 0.0)
        v_new, x_new = (fused_idm_move if fused else idm_move)(
            vr, v0, torch.where(stopping, to_point, gap), v_lead, m.accel, m.two_sqrt_ab, m.tau, s0, delta, dt, substeps,
            gap_phys, pr, v_cap, hold, creep)
    if stops is not None:
        missed = at_edge & ~dwelling & (d_stop < -DOCK_REACH_M)  # cannot happen for validated stops
        dock = at_edge & ~dwelling & ~missed & (stop_pos - x_new <= DOCK_REACH_M) & (v_new < STOP_SPEED)
        dw_new = torch.where(dwelling, dw - dt, dw)
        served = dwelling & (dw_new <= 1e-9)
        ns_new = torch.where(served | missed, _gather(stops.next, z), ns)
        dw_new = torch.where(served, 0.0, dw_new)

    # 6. transitions and arrivals (only front vehicles can pass the end of their lane)
    arrive = (x_new > L_here) & on_last_edge  # a vehicle held at the stop line stays on its lane
    xf, sf = at(x_new), at(slot)
    cross = (xf > L_f) & (next_lane >= 0)
    # one entry per lane per step: the vehicle landing furthest ahead (then the lowest slot)
    # enters; the others are held at the stop line and see it as their leader next step
    # never beyond the end of the lane entered (a lane shorter than one step's travel): a vehicle
    # crosses one junction per step, and one past its lane's end would overtake those behind it
    land = torch.minimum(xf - L_f - via, _gather(net.lane_length, next_lane.clamp(min=0)))
    seg = torch.where(cross, wf * L + next_lane.clamp(min=0), W * L)
    best = torch.full((W * L + 1,), -torch.inf, dtype=land.dtype, device=land.device)
    best = best.scatter_reduce(0, seg, torch.where(cross, land, -torch.inf), reduce="amax")
    is_best = cross & (land == _gather(best, seg))
    first = torch.full((W * L + 1,), pos.numel(), dtype=torch.int64, device=pos.device)
    first = first.scatter_reduce(0, torch.where(is_best, seg, W * L), sf, reduce="amin")
    held = cross & ~(is_best & (_gather(first, seg) == sf))
    cross = cross & ~held
    x_new = put(x_new, torch.where(held, L_f, torch.where(cross, land, xf)))
    v_new = put(v_new, torch.where(held, (L_f - pf) / dt, at(v_new)))
    new_lane = put(lr, torch.where(cross, next_lane, lf))
    rpos_new = put(rpr, torch.where(cross, nk, nk - 1))
    # the connection a vehicle crossed by, read while it is inside that junction (rules 4' and 10)
    conn_new = put(m.conn, torch.where(cross, ci, at(m.conn)))

    halted = v_new < STOP_SPEED
    loss = dt * torch.clamp(1.0 - v_new / v0, min=0.0)
    moved = Moved(pos=x_new, speed=v_new, lane=new_lane, route_pos=rpos_new, arrived=arrive, halted=halted,
                  time_loss=loss, conn=conn_new)
    if stops is not None:
        moved.next_stop, moved.dwell, moved.docked = ns_new, dw_new, dock
    return moved


def idm_move(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta, dt: float, substeps: int, gap_phys, x, v_cap,
             hold=None, creep=None):
    """Rule 5: new speed by IDM (:func:`idm_speed`), at most ``v_cap`` (rule 8; None: no cap), capped so that
    the physical gap ``gap_phys`` cannot close below zero in one step (zero where ``hold``); new position
    ``x + v'·dt``. ``creep``: where positive, the speed instead of an IDM result below :data:`STANDING_EPS`."""
    v = idm_speed(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta, dt, substeps)
    if creep is not None:
        v = torch.where((creep > 0) & (v < STANDING_EPS), creep, v)
    if v_cap is not None:
        v = torch.minimum(v, v_cap)
    return _move(v, gap_phys, x, hold, dt)


def _move(v, gap_phys, x, hold, dt: float):
    """The end of every model's step: the speed capped so that the physical gap cannot close below zero in one
    step, zero where ``hold``; the new position ``x + v'·dt``."""
    v = torch.minimum(v, torch.clamp(gap_phys, min=0.0) / dt)
    if hold is not None:
        v = torch.where(hold, 0.0, v)
    return v, x + v * dt


def krauss_move(v, v0, gap, v_lead, s0, accel, decel, tau, sigma, u, v_cap, dt: float, gap_phys, x, hold=None):
    """Rule 9 then as :func:`idm_move`: the Krauss speed (:func:`krauss_speed`), capped by the physical gap,
    zero where ``hold``; new position ``x + v'·dt``."""
    return _move(krauss_speed(v, v0, gap, v_lead, s0, accel, decel, tau, sigma, u, v_cap, dt), gap_phys, x, hold, dt)


_idm_move_compiled = None


def fused_idm_move(*args):
    """:func:`idm_move` fused into one loop by ``torch.compile`` (compiled on first use; 3-7x faster on
    CPU). On CPU bit-identical to eager (only IEEE-exact operations; inductor's C++ keeps
    ``-ffp-contract=off``); on CUDA, Triton may contract ``a*b + c`` into FMAs: the same for every
    world (batch independence holds) but not bit-identical to eager (tests/gpu allows 4 ulps)."""
    global _idm_move_compiled
    if _idm_move_compiled is None:
        _idm_move_compiled = torch.compile(idm_move, dynamic=True)
    return _idm_move_compiled(*args)


def insert(due, state: VehicleState, drivers: Drivers, r, leader, last, net, routes, step_index, settings: StepSettings,
           rows: torch.Tensor | None = None):
    """Rule 3 (see :func:`step`) for the ``due`` vehicles: over the whole window with masks (``rows`` None: no
    ``nonzero``, no data-dependent shape; ``settings.fixed_shape``), or on the index subset ``rows`` of the due
    vehicles, every rule the same and the same numbers. Every round runs (one without a head changes nothing).
    Returns the new ``status``, ``lane``, ``pos``, ``speed``, ``insert_step``, ``leader`` and the lane tails."""
    L, E, W = net.n_lanes, len(net.edge_ids), settings.W
    status, lane, pos, speed, insert_step = state.status, state.lane, state.pos, state.speed, state.insert_step
    slots = torch.arange(pos.numel(), device=pos.device)
    if rows is None:
        take = lambda x: x  # noqa: E731
        put = lambda full, part, where: torch.where(where, part, full)  # noqa: E731
    else:
        take = lambda x: _gather(x, rows)  # noqa: E731
        put = lambda full, part, where: full.index_put((rows,), torch.where(where, part, take(full)))  # noqa: E731
    world, length, min_gap, slot = take(state.world), take(drivers.length), take(drivers.min_gap), take(slots)
    tau, sf, vmax = take(drivers.tau), take(drivers.speed_factor), take(drivers.max_speed)
    v_dep = take(drivers.depart_speed)
    M = routes.route_edges.shape[1]
    at = take(r) * M + take(state.route_pos).clamp(max=M - 1)  # route_pos: 0, or the edge a teleport (rule 12) chose
    first_edge = _gather(routes.route_edges.reshape(-1), at)
    grp = torch.where(take(due), world * E + first_edge.clamp(min=0), W * E)
    ins_mask = _gather((routes.route_best_mask if settings.lane_change else routes.route_mask).reshape(-1), at)
    closed = torch.zeros(W * E + 1, dtype=torch.int64, device=pos.device)  # per (world, edge): lanes refused (bits)
    remaining = take(due)
    avg = v_dep < 0  # DEPART_AVG: the lane's mean speed, from the running vehicles' and those inserted before
    v_sum = v_n = None
    if settings.depart_avg:
        v_sum, v_n = lane_speed_sums(state.world, state.lane, state.status == RUNNING, state.speed, L, W)
    for _ in range(settings.insert_rounds):
        free = ins_mask & ~_gather(closed, grp)
        g = torch.where(remaining & (free != 0), grp, W * E)
        head_slot = torch.full((W * E + 1,), pos.numel(), dtype=torch.int64, device=pos.device)
        head_slot.scatter_reduce_(0, g, slot, reduce="amin")
        head = (g < W * E) & (_gather(head_slot, grp) == slot)
        ins_lane, room = choose_lane(world, torch.where(head, first_edge, -1), free, last, pos, drivers.length,
                                     net.edge_first_lane, net.edge_n_lanes, net.max_lanes, L)
        fits = head & (ins_lane >= 0) & (room - length >= min_gap)
        il = ins_lane.clamp(min=0)
        v0_ins = torch.minimum(_gather(net.lane_speed, il) * sf, vmax)
        gap_ins = room - length
        v_ins = torch.where(torch.isfinite(gap_ins), torch.clamp((gap_ins - min_gap) / tau, min=0.0), torch.inf)
        seg = world * L + il
        if v_sum is not None:
            n_on = _gather(v_n, seg)
            mean = torch.where(n_on > 0, (_gather(v_sum, seg).to(torch.float64) / SPEED_SUM_SCALE
                                          / n_on.clamp(min=1).to(torch.float64)).to(pos.dtype),
                               _gather(net.lane_speed, il))
            v_avg = torch.minimum(v0_ins, mean)
            fits = fits & ~(avg & (n_on > 0) & (v_ins < v_avg))  # not patched on an occupied lane: it waits
        v_ins = torch.minimum(torch.minimum(v_ins, v0_ins), v_dep if v_sum is None else torch.where(avg, v_avg, v_dep))
        seg = torch.where(fits, seg, W * L)
        if v_sum is not None:
            v_sum = v_sum.index_add(0, seg, speed_units(torch.where(fits, v_ins, 0.0)))
            v_n = v_n.index_add(0, seg, fits.to(torch.int64))
        status = put(status, RUNNING, fits)
        lane = put(lane, il, fits)
        pos = put(pos, length, fits)
        speed = put(speed, v_ins, fits)
        insert_step = put(insert_step, step_index, fits & (take(insert_step) < 0))
        leader = put(leader, _gather(last, seg), fits)
        last = last.scatter(0, seg, slot)
        last[W * L] = -1
        closed = closed.scatter(0, torch.where(head & ~fits, grp, W * E), _gather(closed, grp) | free)
        closed[W * E] = 0
        remaining = remaining & ~head
    return status, lane, pos, speed, insert_step, leader, last


def step(state: VehicleState, drivers: Drivers, net, routes, sig: torch.Tensor, t, step_index,
         settings: StepSettings, lane_tails: torch.Tensor | None = None, stops: StopTables | None = None,
         dawdle_u: torch.Tensor | None = None, stood: torch.Tensor | None = None) -> StepResult:
    """Advance every world by ``settings.dt``. ``state``/``drivers`` hold flattened [N] slot columns of a window
    (``leader``, ``lc_yield`` as window-flat indices); ``lane_tails`` [W*L+1] each lane's tail from the previous
    step's result; without it leaders and tails are sorted out (rule 2). ``stops``: the bus stops (rule 7; then
    ``state`` holds ``next_stop`` and ``dwell``). ``dawdle_u``: [N] the Krauss drivers' dawdling draws this step
    (None: no dawdling). ``stood``: [N] seconds each vehicle has stood (rule 12's counter; rule 10's impatience;
    None: none). ``t`` (s) and ``step_index``: Python numbers, or 0-dim device tensors (float64, int64) so
    that a compiled or captured step is not specialized on the clock. Returns the new state (new tensors; the input is not modified), the lane tails and this
    step's observations (:class:`~twins.traffic.state.StepResult`).

    Work that concerns few vehicles runs on index subsets: insertion on the vehicles
    waiting to enter, the look past the stop line on each lane's front vehicle (only a
    front vehicle can reach the end of its lane: a follower is capped behind its leader).
    With ``settings.fixed_shape`` (CUDA) the same rules run over the whole window with masks: the same numbers,
    no ``nonzero``, no data-dependent shape and no host read (the lanes are sorted every step, and the sorted order
    used where the carried one fails its check).
    """
    L = net.n_lanes
    W, span, lane_change = settings.W, settings.span, settings.lane_change
    world, status = state.world, state.status
    lane, pos, speed, rpos = state.lane, state.pos, state.speed, state.route_pos
    route = drivers.route
    length, min_gap = drivers.length, drivers.min_gap
    delta = drivers.delta if settings.delta is None else settings.delta
    running = status == RUNNING
    r = route.clamp(min=0)

    # 2. leaders and lane tails: carried over from the last step, or sorted out
    if lane_tails is not None:
        leader, last = state.leader, lane_tails
    else:
        leader, last = lane_order(world, lane, pos, running, L, W, span)

    # 3. insertion, SUMO's way: per (world, first edge) the waiting vehicles try in departure
    # order; one that does not fit closes the lanes it could take for this step, not the edge.
    # Rounds let several vehicles enter a multi-lane edge in one step.
    due = (status == WAITING) & (state.depart <= t + 1e-9) & (route >= 0)
    insert_step = state.insert_step
    if settings.fixed_shape:
        status, lane, pos, speed, insert_step, leader, last = insert(
            due, state, drivers, r, leader, last, net, routes, step_index, settings)
    else:
        cand = _nz(due)
        if cand.numel():
            status, lane, pos, speed, insert_step, leader, last = insert(
                due, state, drivers, r, leader, last, net, routes, step_index, settings, rows=cand)
    running = status == RUNNING

    # 4.–7. on the running vehicles only (the window also holds waiting and arrived slots)
    ri = None if settings.fixed_shape else _nz(running)
    new_status, arrive_step = status, state.arrive_step
    x_all, v_all, lane_all, rpos_all = pos, speed, lane, rpos
    conn_all = state.conn
    loss_all = torch.zeros_like(pos)
    ns_all, dw_all, docked = state.next_stop, state.dwell, None
    if stops is not None:
        docked = torch.zeros_like(running)  # rule 7's output
    halted_all, stops_all = state.halted, state.stops
    # when most of the window is running, masking beats gathering (same values either way)
    dense = settings.fixed_shape or ri.numel() * 4 >= 3 * pos.numel()
    take = (lambda x: x) if dense else (lambda x: _gather(x, ri))  # noqa: E731
    if settings.fixed_shape or ri.numel():
        slot = torch.arange(pos.numel(), device=pos.device) if dense else ri
        movers = Movers(
            world=take(world), route=take(r), lane=take(lane), pos=take(pos), speed=take(speed),
            route_pos=take(rpos), leader=take(leader), running=take(running), conn=take(state.conn),
            length=take(length), min_gap=take(min_gap), decel=take(drivers.decel),
            speed_factor=take(drivers.speed_factor), max_speed=take(drivers.max_speed), accel=take(drivers.accel),
            two_sqrt_ab=take(drivers.two_sqrt_ab), tau=take(drivers.tau),
            delta=delta if isinstance(delta, int) else take(delta),
            sigma=take(drivers.sigma) if settings.cf == KRAUSS else None,
            lc_yield=take(state.lc_yield) if lane_change else None,
            lc_stop=take(state.lc_stop) if lane_change and state.lc_stop is not None else None,
            next_stop=None if stops is None else take(state.next_stop),
            dwell=None if stops is None else take(state.dwell),
            stood=None if stood is None else take(stood))
        # vehicles waiting at an internal junction are on their own path through the junction (SUMO: an internal
        # lane), not in the way of those entering their lane by another path, nor in its space till standing
        waiting = waiting_inside(running, pos, rpos, state.conn, net)
        counted = running if waiting is None else running & ~waiting
        # (the tails that have to wait at their next link: SUMO's myHaveToWaitOnNextLink)
        if net.conn_key.numel() and sig.shape[1]:
            before_last = counted & (pos > 0) & (rpos + 1 < _gather(routes.route_len, r))
            held = held_by_signal(world, r, rpos, lane, pos, speed, drivers.decel, before_last, sig, net, routes,
                                  settings.dt)
        else:
            held = torch.zeros_like(counted)
        space, free = space_till_standing(world, lane, counted, pos, length, min_gap, speed, drivers.decel, leader,
                                          held, net.lane_length, L, W)
        entry = None if waiting is None else entry_tails(last, leader, waiting)
        moved = advance(movers, Surroundings(slot=slot, pos=pos, length=length, speed=speed, conn=state.conn,
                                             lane_tails=last, space=space, entry_tails=entry, leader=leader,
                                             waiting=waiting, free=free),
                        sig, net, routes, settings, stops, dawdle_u=None if dawdle_u is None else take(dawdle_u))
        x_new, v_new, new_lane, rpos_new = moved.pos, moved.speed, moved.lane, moved.route_pos
        arrive, halted, loss, conn_new = moved.arrived, moved.halted, moved.time_loss, moved.conn
        if dense:
            x_all = torch.where(running, x_new, pos)
            v_all = torch.where(running, v_new, speed)
            lane_all = torch.where(running, new_lane, lane)
            rpos_all = torch.where(running, rpos_new, rpos)
            conn_all = torch.where(running, conn_new, state.conn)
            new_status = torch.where(running, torch.where(arrive, ARRIVED, RUNNING), status)
            arrive_step = torch.where(running & arrive, step_index + 1, arrive_step)
            stops_all = torch.where(running, stops_all + (halted & ~halted_all).to(stops_all.dtype), stops_all)
            halted_all = torch.where(running, halted, halted_all)
            loss_all = torch.where(running, loss, 0.0)
        else:
            x_all, v_all, lane_all, rpos_all = pos.clone(), speed.clone(), lane.clone(), rpos.clone()
            x_all[ri], v_all[ri], lane_all[ri], rpos_all[ri] = x_new, v_new, new_lane, rpos_new
            conn_all = state.conn.clone()
            conn_all[ri] = conn_new
            new_status = status.clone()
            new_status[ri] = torch.where(arrive, ARRIVED, RUNNING)
            arrive_step = arrive_step.clone()
            arrive_step[ri] = torch.where(arrive, step_index + 1, arrive_step[ri])
            stops_all = stops_all.clone()
            stops_all[ri] = stops_all[ri] + (halted & ~halted_all[ri]).to(stops_all.dtype)
            halted_all = halted_all.clone()
            halted_all[ri] = halted
            loss_all[ri] = loss
        if stops is not None:
            if dense:
                ns_all = torch.where(running, moved.next_stop, state.next_stop)
                dw_all = torch.where(running, moved.dwell, state.dwell)
                docked = running & moved.docked
            else:
                ns_all, dw_all = state.next_stop.clone(), state.dwell.clone()
                ns_all[ri], dw_all[ri] = moved.next_stop, moved.dwell
                docked[ri] = moved.docked

    on = new_status == RUNNING
    lc_yield, lc_stop, lc_kr, lc_las = state.lc_yield, state.lc_stop, state.lc_keep_right, state.lc_look_ahead_speed
    if lane_change:
        # 11. lane changes on the state after the move; then the lanes are sorted again (rule 2)
        hold = dw_all > 0 if stops is not None else None
        after = replace(state, lane=lane_all, pos=x_all, speed=v_all, route_pos=rpos_all)
        lane_all, x_all, lc_yield, _, lc_stop, lc_kr, lc_las = change_lanes(after, on, drivers, net, routes, settings,
                                                                            hold)
        leader, last = lane_order(world, lane_all, x_all, on, L, W, span)
    else:
        # 2'. leaders and lane tails for the next step. No vehicle overtakes on a lane, inserted ones and
        # those entering a lane land behind its tail (they follow it), and only a lane's front vehicle
        # leaves it: so the order changes only where vehicles leave (their followers lose their leader,
        # a lane whose tail left is empty) or enter (each lane takes at most one per step, as its new tail)
        crossed = running & (rpos_all != rpos)  # the route position moves exactly when a vehicle crosses
        leaving = crossed | (running & (new_status == ARRIVED))
        leader = torch.where((leader >= 0) & _gather(leaving, leader.clamp(min=0)), -1, leader)
        last = torch.where((last >= 0) & _gather(leaving, last.clamp(min=0)), -1, last)
        if settings.fixed_shape:  # each lane takes at most one vehicle a step: the scatter has no duplicates
            enter = crossed & on
            seg_in = torch.where(enter, world * L + lane_all, W * L)
            leader = torch.where(enter, _gather(last, seg_in), leader)
            last = last.scatter(0, seg_in, torch.arange(pos.numel(), device=pos.device))
            last[W * L] = -1
        else:
            entering = _nz(crossed & on)
            if entering.numel():
                seg_in = world[entering] * L + lane_all[entering]
                leader = leader.index_put((entering,), last[seg_in])
                last = last.index_put((seg_in,), entering)
        # the carried order must be the sorted one: every vehicle strictly behind its leader; otherwise (a vehicle
        # passed one waiting inside a junction on another path, kernels.past_waiting, or on lanes shorter than a
        # vehicle) sort again
        unsorted = (on & (leader >= 0) & (_gather(x_all, leader.clamp(min=0)) <= x_all)).any()
        if settings.fixed_shape:  # sort anyway and keep it where needed: no host read (a sort costs little on CUDA)
            sorted_leader, sorted_last = lane_order(world, lane_all, x_all, on, L, W, span)
            leader, last = torch.where(unsorted, sorted_leader, leader), torch.where(unsorted, sorted_last, last)
        elif bool(unsorted):
            leader, last = lane_order(world, lane_all, x_all, on, L, W, span)

    new = replace(state, leader=leader, status=new_status, lane=lane_all, pos=x_all, speed=v_all,
                  route_pos=rpos_all, conn=conn_all, insert_step=insert_step, arrive_step=arrive_step,
                  time_loss=state.time_loss + loss_all, stops=stops_all, halted=halted_all, lc_yield=lc_yield,
                  lc_stop=lc_stop, lc_keep_right=lc_kr, lc_look_ahead_speed=lc_las, next_stop=ns_all, dwell=dw_all)
    # per-step lane observations (before transitions), for detectors and maps
    return StepResult(state=new, lane_tails=last, observed_lane=lane, observed_running=running, time_loss=loss_all,
                      docked=docked)
