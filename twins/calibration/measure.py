"""Run candidate demands as worlds of one batch of the traffic twin and measure, per world, which counts
each unit's vehicles make: the assignment ``E[w, c, u]`` (entries of unit ``u``'s vehicles into count ``c``:
edge and interval, or turn and interval) and the vehicles loaded per unit ``L[w, u]``.

The twin is stepped here (``TrafficTwin.step``) and its state read after each step: a vehicle entered the
edge at route position ``k`` when its ``route_pos`` moved past ``k - 1`` (SUMO's edgeData ``entered``: moving
onto the edge from upstream; departing on an edge is not entering it). Nothing of the twin is changed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from twins.traffic.demand_units import Units, unit_demand


@dataclass
class Measured:
    E: list  # per world: scipy.sparse csr [C, U] entries of each unit's vehicles into each count
    L: np.ndarray  # [W, U] vehicles loaded per unit
    sim: np.ndarray  # [W, C] simulated counts
    wall_s: float

    def assignment(self, worlds=None) -> sp.csr_matrix:
        """``A[c, u]``: entries into count c per loaded vehicle of unit u, pooled over ``worlds`` (all)."""
        idx = range(len(self.E)) if worlds is None else worlds
        E = sum((self.E[w] for w in idx), sp.csr_matrix(self.E[0].shape))
        L = np.sum(self.L[list(idx)], axis=0)
        inv = np.where(L > 0, 1.0 / np.maximum(L, 1e-12), 0.0)
        return sp.csr_matrix(E @ sp.diags(inv))


class CountMap:
    """Maps (route, route position, time) to the row of the counts table it adds to."""

    def __init__(self, counts: pd.DataFrame, units: Units):
        keys: dict[tuple, int] = {}
        kid = np.array([keys.setdefault((k, e, f), len(keys)) for k, e, f in
                        zip(counts["kind"], counts["edge"], counts["from_edge"])], dtype=np.int64)
        self.C = len(counts)
        self.BIG = 1e9
        order = np.lexsort((counts["begin_s"].to_numpy(float), kid))
        self.row = order
        self.key_sorted = kid[order]
        self.begin_sorted = counts["begin_s"].to_numpy(float)[order]
        self.end_sorted = counts["end_s"].to_numpy(float)[order]
        self.comb = self.key_sorted * self.BIG + self.begin_sorted
        # per route position: the edge key and the turn key (-1: not counted)
        self.offset = np.zeros(len(units.routes) + 1, dtype=np.int64)
        ek, tk = [], []
        for r, route in enumerate(units.routes):
            self.offset[r + 1] = self.offset[r] + len(route)
            for k, e in enumerate(route):
                ek.append(keys.get(("edge", e, ""), -1))
                tk.append(keys.get(("turn", e, route[k - 1]), -1) if k > 0 else -1)
        self.edge_key = np.array(ek, dtype=np.int64)
        self.turn_key = np.array(tk, dtype=np.int64)
        hit = set(self.edge_key[self.edge_key >= 0].tolist()) | set(self.turn_key[self.turn_key >= 0].tolist())
        first = np.zeros(len(self.edge_key), dtype=bool)
        first[self.offset[:-1]] = True  # a route's first edge: its vehicles depart there, never enter it
        hit -= set(self.edge_key[first & (self.edge_key >= 0)].tolist()) - set(self.edge_key[~first].tolist())
        #: rows of the counts table that no route of the prior can make (no route enters that edge or turn)
        self.unreachable = np.array([i for i, k in enumerate(kid) if int(k) not in hit], dtype=np.int64)

    def rows(self, key: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Row of the counts table for each (key, time), -1 where none."""
        out = np.full(key.shape, -1, dtype=np.int64)
        ok = key >= 0
        if not ok.any():
            return out
        q = key[ok] * self.BIG + t[ok]
        i = np.searchsorted(self.comb, q, side="right") - 1
        good = (i >= 0)
        i = np.clip(i, 0, None)
        good &= (self.key_sorted[i] == key[ok]) & (t[ok] < self.end_sorted[i] - 1e-9) & \
            (t[ok] >= self.begin_sorted[i] - 1e-9)
        out[np.nonzero(ok)[0][good]] = self.row[i[good]]
        return out


def simulate(base, units: Units, X: np.ndarray, replications, counts: pd.DataFrame, *, seed: int, horizon: float,
             dt: float = 1.0, dtype=torch.float32, progress: bool = False, desc: str = "twin",
             cmap: CountMap | None = None, compile: bool | None = None) -> Measured:
    """Worlds ``w`` = candidate demand ``X[w]`` (expected vehicles per unit) at replication ``replications[w]``,
    in one world batch of the traffic twin of ``base`` (a :class:`twins.traffic.model.TrafficScenario`
    whose network, begin and car-following model are used)."""
    import time

    from tqdm.auto import tqdm

    from twins.core.worlds import WorldBatch
    from twins.traffic import kernels
    from twins.traffic.model import TrafficTwin

    t0 = time.perf_counter()
    X = np.clip(np.asarray(X, float), 0.0, None)
    W, U = X.shape
    xmax = X.max(axis=0)
    demand = unit_demand(units, xmax)
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = np.where(xmax[None, :] > 0, X / np.where(xmax > 0, xmax, 1.0)[None, :], 1.0)
    worlds = WorldBatch.replications(seed, W)
    worlds.replication = torch.as_tensor(np.asarray(replications, dtype=np.int64))
    worlds.params["flow_retention"] = torch.as_tensor(np.clip(ret, 0.0, 1.0), dtype=torch.float64)
    scen = dataclasses.replace(base, demand=demand)  # the network, begin, car following, ... of the scenario
    twin = TrafficTwin(scen, worlds, horizon=horizon, dt=dt, dtype=dtype, interval_s=max(horizon, dt), compile=compile)
    cmap = cmap or CountMap(counts, units)
    st = twin.state
    flow = twin.pop.flow.cpu().numpy()
    depart = twin.pop.depart
    S = flow.shape[1]
    L = np.zeros((W, U))
    valid = flow >= 0
    np.add.at(L, (np.nonzero(valid)[0], flow[valid]), 1.0)
    prev_pos = st.route_pos.clone()
    prev_status = st.status.clone()
    ev_w, ev_s, ev_k, ev_t = [], [], [], []
    lo = 0
    ARR, WAIT, RUN = kernels.ARRIVED, kernels.WAITING, kernels.RUNNING
    bar = tqdm(total=twin.n_steps, desc=desc, unit="step", disable=not progress, leave=False, mininterval=1.0)
    for i in range(twin.n_steps):
        t = float(twin.begin + i * dt)
        twin.step()
        hi = int(torch.searchsorted(depart, torch.full((W, 1), t + dt + 1e-9, dtype=depart.dtype), right=True).max())
        hi = min(S, hi + 1)
        if hi > lo:
            pos = st.route_pos[:, lo:hi]
            status = st.status[:, lo:hi]
            pst = prev_status[:, lo:hi]
            base_pos = torch.where(pst == RUN, prev_pos[:, lo:hi], 0)
            moved = (status != WAIT) & (pst != ARR) & (pos > base_pos)
            if bool(moved.any()):
                w, s = moved.nonzero(as_tuple=True)
                b0, p1 = base_pos[w, s], pos[w, s]
                n = (p1 - b0)
                rep = torch.repeat_interleave(torch.arange(w.numel()), n)
                first = torch.cumsum(n, 0) - n
                k = b0[rep] + 1 + (torch.arange(rep.numel()) - first[rep])
                ev_w.append(w[rep].numpy())
                ev_s.append((s[rep] + lo).numpy())
                ev_k.append(k.numpy())
                ev_t.append(np.full(rep.numel(), t))
            prev_pos[:, lo:hi] = pos
            prev_status[:, lo:hi] = status
            if i % 60 == 59:  # the first slot some world still has to finish
                alive = (status != ARR).any(0).nonzero()
                lo = lo + (int(alive[0]) if alive.numel() else hi - lo)
        bar.update(1)
    bar.close()
    E = [sp.csr_matrix((cmap.C, U)) for _ in range(W)]
    sim = np.zeros((W, cmap.C))
    if ev_w:
        w = np.concatenate(ev_w)
        s = np.concatenate(ev_s)
        k = np.concatenate(ev_k)
        tt = np.concatenate(ev_t)
        u = flow[w, s]
        r = units.route_of[u]
        gp = cmap.offset[r] + k
        for key in (cmap.edge_key[gp], cmap.turn_key[gp]):
            c = cmap.rows(key, tt)
            m = c >= 0
            if not m.any():
                continue
            for wi in range(W):
                sel = m & (w == wi)
                if sel.any():
                    E[wi] = E[wi] + sp.csr_matrix((np.ones(int(sel.sum())), (c[sel], u[sel])), shape=(cmap.C, U))
    for wi in range(W):
        sim[wi] = np.asarray(E[wi].sum(axis=1)).ravel()
    return Measured(E=E, L=L, sim=sim, wall_s=time.perf_counter() - t0)
