"""Traffic kernels: pure tensor functions, no Mesa, no config objects.

Vehicles of all worlds are flattened into one vector of N slots; ``world``
says which world a slot belongs to. Per-world lane tables have ``W * L``
entries indexed by ``world * L + lane``. Every operation is elementwise or a
gather keyed by world, so a world never sees another's vehicles (batch
independence).

Rules (the per-agent reference in :mod:`twins.traffic.reference` implements
the same, one vehicle at a time):

1. Signals: the phase of each program at time ``t`` is found from
   ``(t + offset) mod cycle`` and per-world phase durations.
2. Leaders: sort ``(world, lane, position)``; a vehicle's leader is the next
   one on its lane. The *last* vehicle of a lane is the upstream-most one.
3. Insertion: a vehicle whose departure time has come picks the allowed
   lane of its first edge with most room, and enters with its rear at the
   lane start if the gap to that lane's last vehicle is at least its min gap.
   One vehicle per lane per round, earliest departure first; losers try the
   next best lane in the next round (``insert_rounds`` per step), then wait.
4. Front vehicles (no leader on their lane) look past the stop line: a red
   signal, or a yellow one they can stop for (v² <= 2·b·d), is a standing
   obstacle at the stop line; so is a halted tail on the lane they will
   enter that leaves no room for them (keep the junction clear). Otherwise
   the leader is the last vehicle of that lane (spillback), or the road is free.
5. IDM acceleration integrated over ``substeps`` with the leader's speed held
   (SUMO's IDM stepping); speed clamped at zero and capped so the gap cannot
   close below zero in one step; position ``x + v'·dt`` (Euler, as SUMO).
6. A vehicle whose front passes the end of its lane enters the chosen lane
   of the next edge at ``overshoot - via_length`` — one per target lane per
   step, the one landing furthest ahead; the others are held at the stop
   line. At the end of its last edge a vehicle arrives.
"""
from __future__ import annotations

import torch

from .compiled import NO_SIGNAL, SIG_GREEN, SIG_RED, SIG_YELLOW

WAITING, RUNNING, ARRIVED = 0, 1, 2
STOP_SPEED = 0.1  # m/s: below this a vehicle counts as halted (SUMO's halting threshold)


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
    tc = torch.remainder(t + offsets, cycle)  # [W, P]
    phase = torch.searchsorted(ends, tc.unsqueeze(-1), right=True).squeeze(-1).clamp(max=K - 1)
    ph_link = phase[:, link_program]  # [W, G]
    return phase_code[link_program.unsqueeze(0).expand_as(ph_link), ph_link, link_local.unsqueeze(0).expand_as(ph_link)]


def lane_order(world, lane, pos, running, n_lanes: int, W: int, span: float, hint=None):
    """Leaders and each lane's last vehicle.

    Returns ``leader`` [N] (slot index or -1), ``last`` [W*L] (slot index or -1) and the
    sort order, which the caller may pass back as ``hint`` next step: vehicles rarely
    change places, and sorting nearly sorted keys is several times faster.
    """
    N = pos.numel()
    seg = torch.where(running, world * n_lanes + lane, W * n_lanes)
    key = seg.to(torch.float64) * span + pos.to(torch.float64)
    if hint is not None and hint.numel() == N:
        # equal keys (only idle slots, which have no leader) may come out in any order
        order = hint[torch.argsort(key[hint], stable=True)]
    else:
        order = torch.argsort(key, stable=True)
    sseg = seg[order]
    same = sseg[1:] == sseg[:-1]
    nxt = torch.where(same, order[1:], -1)
    leader = torch.full((N,), -1, dtype=torch.int64, device=pos.device)
    leader[order[:-1]] = nxt
    first = torch.ones(N, dtype=torch.bool, device=pos.device)
    first[1:] = ~same
    last = torch.full((W * n_lanes + 1,), -1, dtype=torch.int64, device=pos.device)
    last.scatter_(0, torch.where(first, sseg, W * n_lanes), order)
    last[W * n_lanes] = -1
    return leader, last, order


def choose_lane(world, edge, mask, last, pos, length, edge_first_lane, edge_n_lanes, max_lanes: int,
                n_lanes: int):
    """For each slot, the allowed lane of ``edge`` with most room (lowest index on ties).

    ``edge`` [N] (-1: none), ``mask`` [N] bitmask of allowed lane indices.
    Returns ``lane`` [N] (-1 if none) and ``room`` [N] (rear of that lane's last
    vehicle, +inf if the lane is empty).
    """
    j = torch.arange(max_lanes, device=pos.device)
    e = edge.clamp(min=0)
    cand = edge_first_lane[e].unsqueeze(1) + j  # [N, J]
    ok = (edge.unsqueeze(1) >= 0) & (j < edge_n_lanes[e].unsqueeze(1)) & (((mask.unsqueeze(1) >> j) & 1) == 1)
    cand = torch.where(ok, cand, 0)
    lv = last[world.unsqueeze(1) * n_lanes + cand]
    rear = torch.where(lv >= 0, pos[lv.clamp(min=0)] - length[lv.clamp(min=0)], torch.inf)
    score = torch.where(ok, rear, -torch.inf)
    best = torch.argmax(score, dim=1, keepdim=True)
    lane = torch.where(ok.any(1), cand.gather(1, best).squeeze(1), -1)
    room = score.gather(1, best).squeeze(1)
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
        base = base * base
    return out


def idm_acceleration(v, v0, gap, v_lead, a, two_sqrt_ab, T, s0, delta: torch.Tensor):
    """Intelligent Driver Model (Treiber, Hennecke & Helbing 2000); ``gap`` may be +inf.

    ``two_sqrt_ab`` is ``2·sqrt(a·b)``, computed once per vehicle (correctly rounded);
    ``delta`` is the acceleration exponent (4 in the literature): a Python int shared by
    all vehicles, or an integer tensor.
    """
    s_star = s0 + torch.clamp(v * T + v * (v - v_lead) / two_sqrt_ab, min=0.0)
    ratio = s_star / gap.clamp(min=1e-3)
    interaction = torch.where(torch.isfinite(gap), ratio * ratio, 0.0)
    return a * (1.0 - _pow(v / v0, delta) - interaction)


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


def _nz(mask: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(mask).squeeze(1)


def step(state: dict, veh: dict, net, routes, sig: torch.Tensor, t: float, step_index: int, dt: float,
         W: int, span: float, substeps: int = 1, insert_rounds: int = 1, delta=None) -> dict:
    """Advance every world by ``dt``. ``state``/``veh`` hold flattened [N] slot columns.

    state: world, status, lane, pos, speed, route_pos, insert_step, arrive_step,
           time_loss, stops, halted, depart (float64)
    veh:   route, length, min_gap, accel, decel, two_sqrt_ab, tau, delta, speed_factor, max_speed
    ``substeps``: IDM sub-steps per step; ``insert_rounds``: insertion attempts per step;
    ``delta``: the IDM exponent as a Python int when every vehicle shares it (faster).
    Returns the new state (new tensors; the input is not modified).

    Work that concerns few vehicles runs on index subsets: insertion on the vehicles
    waiting to enter, the look past the stop line on each lane's front vehicle (only a
    front vehicle can reach the end of its lane: a follower is capped behind its leader).
    """
    L = net.n_lanes
    E = len(net.edge_ids)
    world, status = state["world"], state["status"]
    lane, pos, speed, rpos = state["lane"], state["pos"], state["speed"], state["route_pos"]
    route = veh["route"]
    length, min_gap = veh["length"], veh["min_gap"]
    delta = veh["delta"] if delta is None else delta
    running = status == RUNNING
    r = route.clamp(min=0)

    # 2. leaders and lane tails
    leader, last, order = lane_order(world, lane, pos, running, L, W, span, state.get("_order"))

    # 3. insertion, in rounds, on the vehicles whose departure time has come
    cand = _nz((status == WAITING) & (state["depart"] <= t + 1e-9) & (route >= 0))
    insert_step = state["insert_step"]
    if cand.numel():
        status, lane, pos, speed, rpos, insert_step, leader = (
            x.clone() for x in (status, lane, pos, speed, rpos, insert_step, leader))
        wc, rc, lenc, gapc = world[cand], r[cand], length[cand], min_gap[cand]
        first_edge, first_mask = routes.route_edges[rc, 0], routes.route_mask[rc, 0]
        waiting = torch.ones_like(cand, dtype=torch.bool)
        for _ in range(insert_rounds):
            e = torch.where(waiting, first_edge, -1)
            ins_lane, room = choose_lane(wc, e, first_mask, last, pos, length, net.edge_first_lane,
                                         net.edge_n_lanes, net.max_lanes, L)
            fits = waiting & (ins_lane >= 0) & (room - lenc >= gapc)
            il = ins_lane.clamp(min=0)
            seg = torch.where(fits, wc * L + il, W * L)
            claim = torch.full((W * L + 1,), pos.numel(), dtype=torch.int64, device=pos.device)
            claim.scatter_reduce_(0, seg, cand, reduce="amin")  # earliest slot (departure) wins
            ins = fits & (claim[seg] == cand)
            v0_ins = torch.minimum(net.lane_speed[il] * veh["speed_factor"][cand], veh["max_speed"][cand])
            gap_ins = room - lenc
            v_ins = torch.where(torch.isfinite(gap_ins),
                                torch.clamp((gap_ins - gapc) / veh["tau"][cand], min=0.0), torch.inf)
            v_ins = torch.minimum(v_ins, v0_ins)
            old_last = last[wc * L + il]
            status[cand] = torch.where(ins, RUNNING, status[cand])
            lane[cand] = torch.where(ins, il, lane[cand])
            pos[cand] = torch.where(ins, lenc, pos[cand])
            speed[cand] = torch.where(ins, v_ins, speed[cand])
            rpos[cand] = torch.where(ins, 0, rpos[cand])
            insert_step[cand] = torch.where(ins, step_index, insert_step[cand])
            leader[cand] = torch.where(ins, old_last, leader[cand])
            last = last.scatter(0, torch.where(ins, seg, W * L), cand)
            last[W * L] = -1
            waiting = waiting & ~ins
        running = status == RUNNING

    # 4. front vehicles look past the stop line
    on_last_edge = rpos + 1 >= routes.route_len[r]
    has_leader = leader >= 0
    ld = leader.clamp(min=0)
    gap = torch.where(has_leader, pos[ld] - length[ld] - pos, torch.inf)
    v_lead = torch.where(has_leader, speed[ld], 0.0)
    gap_phys = gap
    L_here = net.lane_length[lane]
    front = _nz(running & ~has_leader & ~on_last_edge)
    if front.numel():
        gap, v_lead = gap.clone(), v_lead.clone()
        gap_phys = gap.clone()
        wf, rf, lf, pf, vf = world[front], r[front], lane[front], pos[front], speed[front]
        lenf, mgf = length[front], min_gap[front]
        nk = rpos[front] + 1
        next_edge = routes.route_edges[rf, nk]
        next_lane, next_room = choose_lane(wf, next_edge, routes.route_mask[rf, nk], last, pos, length,
                                           net.edge_first_lane, net.edge_n_lanes, net.max_lanes, L)
        key = lf * E + next_edge
        if net.conn_key.numel():
            ci = torch.searchsorted(net.conn_key, key).clamp(max=net.conn_key.numel() - 1)
            via, link, found = net.conn_via[ci], net.conn_link[ci], net.conn_key[ci] == key
        else:
            via, link, found = torch.zeros_like(pf), torch.full_like(lf, NO_SIGNAL), torch.zeros_like(wf, dtype=torch.bool)
        next_lane = torch.where(found, next_lane, -1)  # no connection: never cross
        G = sig.shape[1]
        if G:
            code = torch.where(link >= 0, sig.reshape(-1)[wf * G + link.clamp(min=0, max=G - 1)], SIG_GREEN)
        else:
            code = torch.full_like(lf, SIG_GREEN)
        d = L_here[front] - pf
        must_stop = (code == SIG_RED) | ((code == SIG_YELLOW) & (vf * vf <= 2.0 * veh["decel"][front] * d.clamp(min=0)))
        must_stop = must_stop | (next_lane < 0) | ~found
        nl = last[wf * L + next_lane.clamp(min=0)]
        v_junction = torch.where(nl >= 0, speed[nl.clamp(min=0)], 0.0)
        # keep the junction clear: a halted tail that leaves no room behind it holds this vehicle at
        # the line (a moving tail does not: in queue discharge the leader is often still crossing)
        must_stop = must_stop | ((nl >= 0) & (v_junction < STOP_SPEED) & (next_room < lenf + mgf))
        gap_junction = torch.where(torch.isfinite(next_room), d + via + next_room, torch.inf)
        # a stop line ahead is an obstacle, but a vehicle still inside the junction may be nearer
        line_first = must_stop & ((d + mgf <= gap_junction) | ~found)
        gap_front = torch.where(line_first, d + mgf, gap_junction)
        gap[front] = gap_front
        v_lead[front] = torch.where(line_first, 0.0, v_junction)
        # never roll over a line it must stop at, whichever obstacle IDM is following
        gap_phys[front] = torch.where(must_stop, torch.minimum(gap_front, d), gap_front)

    # 5. IDM and movement
    v0 = torch.minimum(net.lane_speed[lane] * veh["speed_factor"], veh["max_speed"])
    v_new = idm_speed(speed, v0, gap, v_lead, veh["accel"], veh["two_sqrt_ab"], veh["tau"], min_gap, delta,
                      dt, substeps)
    v_new = torch.minimum(v_new, torch.clamp(gap_phys, min=0.0) / dt)
    v_new = torch.where(running, v_new, speed)
    x_new = torch.where(running, pos + v_new * dt, pos)

    # 6. transitions and arrivals (only front vehicles can pass the end of their lane)
    past = running & (x_new > L_here)  # a vehicle held at the stop line stays on its lane
    arrive = past & on_last_edge
    new_lane = lane
    if front.numel():
        xf = x_new[front]
        cross = (xf > L_here[front]) & (next_lane >= 0)
        # one entry per lane per step: the vehicle landing furthest ahead (then the lowest slot)
        # enters; the others are held at the stop line and see it as their leader next step
        land = xf - L_here[front] - via
        seg = torch.where(cross, wf * L + next_lane.clamp(min=0), W * L)
        best = torch.full((W * L + 1,), -torch.inf, dtype=land.dtype, device=land.device)
        best.scatter_reduce_(0, seg, torch.where(cross, land, -torch.inf), reduce="amax")
        is_best = cross & (land == best[seg])
        first = torch.full((W * L + 1,), pos.numel(), dtype=torch.int64, device=pos.device)
        first.scatter_reduce_(0, torch.where(is_best, seg, W * L), front, reduce="amin")
        held = cross & ~(is_best & (first[seg] == front))
        cross = cross & ~held
        x_new = x_new.clone()
        v_new = v_new.clone()
        x_new[front] = torch.where(held, L_here[front], torch.where(cross, land, xf))
        v_new[front] = torch.where(held, (L_here[front] - pf) / dt, v_new[front])
        new_lane = lane.clone()
        new_lane[front] = torch.where(cross, next_lane, lf)
        rpos = rpos.clone()
        rpos[front] = torch.where(cross, nk, rpos[front])
    status = torch.where(arrive, ARRIVED, status)
    arrive_step = torch.where(arrive, step_index + 1, state["arrive_step"])

    halted = v_new < STOP_SPEED
    stops = state["stops"] + (running & halted & ~state["halted"]).to(state["stops"].dtype)
    loss = torch.where(running, dt * torch.clamp(1.0 - v_new / v0, min=0.0), 0.0)

    return {
        **state,
        "status": status,
        "lane": new_lane,
        "pos": x_new,
        "speed": v_new,
        "route_pos": rpos,
        "insert_step": insert_step,
        "arrive_step": arrive_step,
        "time_loss": state["time_loss"] + loss,
        "stops": stops,
        "halted": torch.where(running, halted, state["halted"]),
        # per-step lane observations (before transitions), for detectors and maps
        "_obs_lane": lane,
        "_obs_running": running,
        "_obs_speed": v_new,
        "_obs_loss": loss,
        "_order": order,
    }
