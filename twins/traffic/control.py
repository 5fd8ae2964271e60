"""Adaptive signal control: max pressure (Varaiya 2013), vectorized over worlds and programs.

Varaiya, P. (2013). "Max pressure control of a network of signalized intersections",
Transportation Research Part C 36, 177–195.

The pressure of a movement (link) is the queue on its incoming lane minus the queue
downstream; the pressure of a green phase is the sum over the links it shows green.
Queues here are the *running vehicles per lane* (moving or halted, on the lane or
inside the junction on its way onto it). The downstream queue of a link is the mean
per lane of its outgoing edge: the twin chooses the lane of the next edge at the
junction (the one with most room), so a link has an outgoing edge, not a fixed lane.

Per world and program the controller keeps the phase shown (``cur``), the time it
has been shown (``elapsed``), the green it goes to after a transition (``target``)
and when the next decision is due (``next_decision``, in seconds of green). A green
phase is shown at least ``min_green_s``; from then on, every ``decision_interval_s``,
the controller switches to the green phase with the highest pressure if it beats the
current one, and at ``max_green_s`` it switches to the best *other* green phase
(ties: the next one in program order). A switch goes through the yellow and all-red
phases that follow the current green in the program (with this world's durations),
then straight to the chosen green. Programs with a single green phase never switch.

Phase states come from the program (``phase_code``), so no link is ever green in
a combination the program does not contain.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import SIG_GREEN, SIG_GREEN_MINOR, SIG_YELLOW

BIG = 1.0e18


@dataclass
class PressureState:
    """The controller's state per world and program, ``[W, P]``."""

    t: float  # s: the time of the last call
    cur: torch.Tensor  # the phase shown
    elapsed: torch.Tensor  # float64 s: how long it has been shown
    target: torch.Tensor  # the green phase after the transition in progress
    next_decision: torch.Tensor  # float64 s of green at which the next decision is due
    switches: torch.Tensor  # switches so far
    started: bool = False  # a call has run (the first gives a green in progress its first decision at min green)


@dataclass
class ProgramTables:
    """Static per-program tables the controller needs (built once per network)."""

    n_phases: torch.Tensor  # [P] int64 phases with a positive duration in the scenario's plan
    is_green: torch.Tensor  # [P, K] bool: a phase with a green link and no yellow one
    nxt: torch.Tensor  # [P, K] int64: the next phase in program order (cyclic)
    next_green: torch.Tensor  # [P, K] int64: the first green phase after k (cyclic), k itself if none
    green_of: torch.Tensor  # [P*K, G] float: 1 where link g is green in phase (p, k)
    link_in_lane: torch.Tensor  # [G] int64 incoming lane of each link, -1: no connection uses it
    link_out_edge: torch.Tensor  # [G] int64 outgoing edge of each link, -1: none


def program_tables(net) -> ProgramTables:
    """Tables of a (compiled) network: green phases, program order, links' lanes."""
    dur = net.phase_durations
    dev = dur.device
    P, K = dur.shape
    G = int(net.link_program.numel())
    code = net.phase_code.to(dev)
    lp, ll = net.link_program.to(dev), net.link_local.to(dev)
    n_phases = (dur > 0).sum(1).clamp(min=1).to(torch.int64)
    # per (p, k, g): the code of link g in phase k of its program (red for other programs' links)
    c = code[lp.unsqueeze(0).expand(K, G), torch.arange(K, device=dev).unsqueeze(1).expand(K, G),
             ll.unsqueeze(0).expand(K, G)]  # [K, G]
    own = lp.unsqueeze(0) == torch.arange(P, device=dev).unsqueeze(1)  # [P, G]
    green = ((c.unsqueeze(0) == SIG_GREEN) | (c.unsqueeze(0) == SIG_GREEN_MINOR)) & own.unsqueeze(1)  # [P, K, G]
    yellow = (c.unsqueeze(0) == SIG_YELLOW) & own.unsqueeze(1)
    k_idx = torch.arange(K, device=dev)
    valid = k_idx.unsqueeze(0) < n_phases.unsqueeze(1)
    is_green = green.any(-1) & ~yellow.any(-1) & valid & (dur > 0)
    nxt = torch.remainder(k_idx.unsqueeze(0) + 1, n_phases.unsqueeze(1))
    next_green = k_idx.unsqueeze(0).expand(P, K).clone()
    for p in range(P):  # static tables, once per network
        n = int(n_phases[p])
        g = [k for k in range(n) if bool(is_green[p, k])]
        for k in range(n):
            after = [j for j in g if j > k] + [j for j in g if j <= k]
            next_green[p, k] = after[0] if after else k
    # links -> (incoming lane, outgoing edge) from the connections the kernels use
    E = len(net.edge_ids)
    link_in = torch.full((G,), -1, dtype=torch.int64, device=dev)
    link_out = torch.full((G,), -1, dtype=torch.int64, device=dev)
    if net.conn_key.numel():
        m = net.conn_link >= 0
        link_in[net.conn_link[m]] = net.conn_key[m] // E
        link_out[net.conn_link[m]] = net.conn_key[m] % E
    return ProgramTables(n_phases, is_green, nxt, next_green,
                         green.reshape(P * K, G).to(torch.float64), link_in, link_out)


def fixed_phase(t: float, durations: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed-time phase [W, P] at ``t`` and the time already spent in it (as :func:`kernels.signal_codes`)."""
    K = durations.shape[2]
    ends = torch.cumsum(durations, dim=2)
    tc = torch.remainder(t - offsets, ends[:, :, -1])
    phase = torch.searchsorted(ends, tc.unsqueeze(-1), right=True).squeeze(-1).clamp(max=K - 1)
    start = ends.gather(2, phase.unsqueeze(-1)).squeeze(-1) - durations.gather(2, phase.unsqueeze(-1)).squeeze(-1)
    return phase, (tc - start).clamp(min=0)


def phase_pressure(queues: torch.Tensor, net, tables: ProgramTables) -> torch.Tensor:
    """Pressure ``[W, P, K]`` of every phase from lane queues ``[W, L]``."""
    W = queues.shape[0]
    q = queues.to(torch.float64)
    E = len(net.edge_ids)
    edge_q = torch.zeros(W, E, dtype=torch.float64, device=q.device)
    edge_q.index_add_(1, net.lane_edge, q)
    out_mean = edge_q / net.edge_n_lanes.to(torch.float64)
    ok = tables.link_in_lane >= 0
    link_p = torch.where(ok, q[:, tables.link_in_lane.clamp(min=0)] - out_mean[:, tables.link_out_edge.clamp(min=0)],
                         torch.zeros((), dtype=torch.float64, device=q.device))  # [W, G]
    P, K = tables.is_green.shape
    return (link_p @ tables.green_of.T).view(W, P, K)


def init_state(t: float, durations: torch.Tensor, offsets: torch.Tensor, tables: ProgramTables) -> PressureState:
    """Start where the fixed-time program is at ``t`` (its phase and the time spent in it)."""
    cur, elapsed = fixed_phase(t, durations, offsets)
    W = cur.shape[0]
    P = cur.shape[1]
    pidx = torch.arange(P, device=cur.device).unsqueeze(0).expand(W, P)
    return PressureState(t=float(t), cur=cur, elapsed=elapsed.to(torch.float64), target=tables.next_green[pidx, cur],
                         next_decision=torch.zeros_like(elapsed, dtype=torch.float64),
                         switches=torch.zeros(W, P, dtype=torch.int64, device=cur.device))


def max_pressure_codes(state: PressureState | None, t: float, queues: torch.Tensor, durations: torch.Tensor,
                       offsets: torch.Tensor, net, tables: ProgramTables, min_green_s: torch.Tensor,
                       max_green_s: torch.Tensor, decision_interval_s: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, PressureState]:
    """One control step at time ``t``: returns ``(codes [W, G] int8, phase [W, P], new state)``.

    ``state``: :class:`PressureState` (``None`` at the first call). ``queues`` [W, L] vehicles per lane now; ``durations`` [W, P, K] and ``offsets``
    [W, P] the world's plan (for the yellow / all-red durations and the starting phase);
    ``min_green_s``, ``max_green_s``, ``decision_interval_s`` [W]. Nothing loops over worlds.
    """
    dev = durations.device
    W, P, K = durations.shape
    if state is None:
        state = init_state(t, durations, offsets, tables)
        dt = 0.0
    else:
        dt = float(t - state.t)
    cur, elapsed = state.cur, state.elapsed + dt
    target, next_dec, switches = state.target, state.next_decision, state.switches
    pidx = torch.arange(P, device=dev).unsqueeze(0).expand(W, P)
    green_now = tables.is_green[pidx, cur]
    mn = min_green_s.to(dev, torch.float64).view(W, 1)
    mx = max_green_s.to(dev, torch.float64).view(W, 1)
    iv = decision_interval_s.to(dev, torch.float64).view(W, 1)
    if not state.started:  # first call: a green in progress gets its first decision at min green
        next_dec = torch.where(green_now, torch.maximum(mn.expand(W, P), elapsed), next_dec)

    # 1. transitions (yellow, all-red) run their planned durations, then the next one or the target green
    for _ in range(K):
        in_tr = ~tables.is_green[pidx, cur]
        dur_cur = durations.gather(2, cur.unsqueeze(-1)).squeeze(-1)
        done = in_tr & (elapsed >= dur_cur - 1e-9)
        if not bool(done.any()):
            break
        nx = tables.nxt[pidx, cur]
        nxt_is_green = tables.is_green[pidx, nx]
        new = torch.where(nxt_is_green, target, nx)
        became_green = done & tables.is_green[pidx, new]
        cur = torch.where(done, new, cur)
        elapsed = torch.where(done, torch.zeros_like(elapsed), elapsed)
        next_dec = torch.where(became_green, mn.expand(W, P), next_dec)

    # 2. decisions on greens: after min green, every decision interval; forced at max green
    green_now = tables.is_green[pidx, cur]
    press = phase_pressure(queues, net, tables)  # [W, P, K]
    press = torch.where(tables.is_green.unsqueeze(0), press, torch.full_like(press, -BIG))
    p_cur = press.gather(2, cur.unsqueeze(-1)).squeeze(-1)
    forced = green_now & (elapsed >= mx - 1e-9)
    due = green_now & (elapsed >= next_dec - 1e-9) & (elapsed >= mn - 1e-9)
    k_idx = torch.arange(K, device=dev).view(1, 1, K)
    order = torch.remainder(k_idx - cur.unsqueeze(-1), tables.n_phases.view(1, P, 1))  # 0 = current phase
    other = press.masked_fill(order == 0, -BIG)
    cand_press = torch.where(forced.unsqueeze(-1), other, press)
    best_val = cand_press.amax(-1)
    tie = (cand_press >= best_val.unsqueeze(-1) - 1e-9) & (cand_press > -BIG / 2)
    # among the best, the first after the current phase in program order
    rank = torch.where(tie & (order > 0), order, torch.full_like(order, 10 ** 6))
    best = rank.argmin(-1)
    has_other = (tie & (order > 0)).any(-1)
    switch = (forced & has_other) | (due & ~forced & has_other & (best_val > p_cur + 1e-9))
    next_dec = torch.where(due & ~switch, next_dec + iv.expand(W, P), next_dec)
    # leave the green through the phases that follow it in the program (yellow, all-red)
    nx = tables.nxt[pidx, cur]
    first = torch.where(tables.is_green[pidx, nx], best, nx)
    target = torch.where(switch, best, target)
    cur = torch.where(switch, first, cur)
    elapsed = torch.where(switch, torch.zeros_like(elapsed), elapsed)
    next_dec = torch.where(switch & tables.is_green[pidx, cur], mn.expand(W, P), next_dec)
    switches = switches + switch.to(torch.int64)

    new_state = PressureState(t=float(t), cur=cur, elapsed=elapsed, target=target, next_decision=next_dec,
                              switches=switches, started=True)
    lp, ll = net.link_program, net.link_local
    ph_link = cur[:, lp]  # [W, G]
    codes = net.phase_code[lp.unsqueeze(0).expand_as(ph_link), ph_link, ll.unsqueeze(0).expand_as(ph_link)]
    return codes, cur, new_state
