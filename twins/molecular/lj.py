"""The Lennard-Jones fluid (scenario ``lj_fluid``): the molecular kernels checked against published LJ data.

Reduced units (σ = ε = m = k_B = 1). Its kernels (forces over a Verlet list, the BAOAB step) are in
:mod:`.kernels`; validation against Johnson, Zollweg & Gubbins (1993) in ``tests/molecular/test_validation.py``.
The twin holds its state as typed records (:mod:`.state`): ``twin.state`` (:class:`~.state.LJState`: positions,
velocities, forces, energy, virial, drift), ``twin.neighbors`` (:class:`~.state.VerletList`) and ``twin.settings``
(:class:`~.state.LJSettings`), which :func:`.kernels.lj_step` takes.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from twins.core import noise
from twins.core.errors import check
from twins.core.noise import Stream
from twins.core.twin import RunResult, Twin
from twins.core.worlds import WorldBatch

from . import kernels as K
from .state import LJSettings, LJState, NoiseKeys, VerletList

class LJFluidTwin(Twin):
    """Lennard-Jones fluid in reduced units (σ = ε = m = k_B = 1), W worlds.

    Velocity Verlet with a BAOAB Langevin thermostat (``gamma > 0``: NVT;
    ``gamma = 0``: NVE). The potential is truncated at ``cutoff`` (optionally
    shifted); reported potential energy and pressure include the analytic
    tail corrections, so they estimate the *full* LJ fluid (as tabulated by
    Johnson, Zollweg & Gubbins 1993). Per-world parameter: ``temperature``.

    Forces come from a Verlet neighbour list of radius ``cutoff + skin`` per world, rebuilt only
    when needed (HOOMD-blue's ``md.nlist`` ``buffer``/``check_period``, LAMMPS ``neighbor``/
    ``neigh_modify every N check yes``): every ``check_every`` steps (default: the steps a particle
    at 6 × sqrt(3 kT/m), far in the speed distribution's tail at the scenario's ``temperature``,
    needs to cross ``skin / 2``; the scenario's, not a world's, so the schedule does not depend on
    the batch) one host read of each world's
    largest displacement since its list was built. A world whose particles may move more than
    ``skin / 2`` before the next check (the last period's growth extrapolated) gets a new list. A
    world that did move more than ``skin / 2`` within the period (its list may have missed a pair:
    LAMMPS and HOOMD count such "dangerous builds" and warn) is not left wrong: every world goes
    back to the last check, that world's list is rebuilt there and the period is run again (the
    step is deterministic, so the other worlds repeat it bit for bit); ``replays`` counts these.
    Every step thus sees every pair inside the cutoff, and a world's rebuilds depend on its own
    trajectory only, so batch independence and reruns stay bit-identical. A world that outruns
    even the list built at the last check is replayed once more with a check every step (with a
    warning: raise ``skin``). Between checks the step reads nothing back to the host.
    """

    metrics = ("potential_energy", "pressure", "temperature", "total_energy_drift")

    def __init__(self, worlds: WorldBatch, *, dt: float, horizon: float, device="cpu", dtype=torch.float64,
                 n_particles: int = 500, density: float = 0.7, temperature: float = 2.0, cutoff: float = 3.0,
                 gamma: float = 1.0, shift: bool = False, lattice: str = "fcc", equilibration: float = 0.25,
                 record_every: int = 10, min_distance: float = 0.7, skin: float | None = None,
                 check_every: int | None = None, compile: bool | None = None):
        super().__init__(worlds, dt=dt, horizon=horizon, device=device, dtype=dtype)
        check(n_particles >= 2, "scenario.n_particles", n_particles, "an integer >= 2")
        check(density > 0, "scenario.density", density, "a positive reduced density")
        check(gamma >= 0, "scenario.gamma", gamma, "a non-negative friction (0 = NVE)")
        check(lattice in ("fcc", "random"), "scenario.lattice", lattice, "'fcc' or 'random'")
        check(0 <= equilibration < 1, "scenario.equilibration", equilibration, "a fraction in [0, 1)")
        W, N, dev = self.W, int(n_particles), self.device
        self.N, self.rho, self.rc, self.gamma, self.shift = N, float(density), float(cutoff), float(gamma), bool(shift)
        self.box = (N / self.rho) ** (1.0 / 3.0)
        need = int(math.ceil(self.rho * (2.0 * self.rc) ** 3))
        check(N >= need, "scenario.n_particles", N,
              f"at least {need} at density {self.rho:g} with cutoff {self.rc:g}",
              f"The periodic box (edge {self.box:.3g}) must be at least 2 x cutoff for the minimum-image convention: "
              "add particles, lower scenario.density or shorten scenario.cutoff.")
        K.check_geometry(self.box, self.rc)
        if skin is None:  # 0.3 σ, the usual LJ choice, or what a small box's minimum image allows
            skin = min(0.3, 0.5 * self.box - self.rc)
        check(skin > 0 and self.rc + skin <= 0.5 * self.box, "scenario.skin", skin,
              f"a neighbour-list buffer in (0, {0.5 * self.box - self.rc:.4g}] (box/2 - cutoff; box {self.box:.4g})",
              "Leave it unset for the default (0.3, or less in a small box).")
        if check_every is None:  # steps a particle at 6 x sqrt(3 kT/m) needs to cross skin/2
            check_every = max(1, int(0.5 * skin / (dt * 6.0 * math.sqrt(3.0 * float(temperature)))))
        check(int(check_every) == check_every and check_every >= 1, "scenario.neighbor_check_every", check_every,
              "a whole number of steps >= 1")
        self.skin, self.check_every = float(skin), int(check_every)
        # the whole step (noise, integrator, pair forces) as a few fused kernels (inductor): null = on CUDA only
        # (eager, a step is ~105 small kernels; on a CPU the compile takes ~4 s); shapes are fixed between rebuilds
        self.compiled = bool(compile if compile is not None else self.device.type == "cuda")
        self._step_fn = torch.compile(K.lj_step, dynamic=False, fullgraph=True) if self.compiled else K.lj_step
        self.settings = LJSettings(dt=self.dt, gamma=self.gamma, box=self.box, cutoff=self.rc, shift=self.shift)
        self.T = self._param("temperature", temperature)
        self.equilibration, self.record_every = float(equilibration), max(1, int(record_every))
        self.pid = torch.arange(N, device=dev)
        self._keys = NoiseKeys(
            prefix=K.key_prefix(worlds.seed, self.worlds.replication[:, None], Stream.BROWNIAN, self.pid[None, :]),
            step=torch.zeros((), dtype=torch.int64, device=dev), links=K.draw_links(6, dev))
        rep = self.worlds.replication.view(-1, 1, 1)
        d3 = torch.arange(3, device=dev)[None, None, :]
        if lattice == "fcc":
            m = int(math.ceil((N / 4) ** (1 / 3)))
            g = torch.stack(torch.meshgrid(*(torch.arange(m, dtype=dtype),) * 3, indexing="ij"), -1).reshape(-1, 3)
            basis = torch.tensor([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]], dtype=dtype)
            sites = (g[:, None, :] + basis[None]).reshape(-1, 3)[:N] * (self.box / m)
            pos = sites.to(dev).expand(W, N, 3).clone()
        else:
            pos = noise.uniform(worlds.seed, rep, Stream.PLACEMENT, self.pid[None, :, None], 0, d3 + 3,
                                dtype=dtype, device=dev) * self.box
        self.alive = torch.ones(W, N, dtype=torch.bool, device=dev)
        K.check_no_overlap(pos, self.alive, self.box, min_distance, field="scenario.lattice")
        pos = K.wrap(pos, self.box)
        v = noise.normal(worlds.seed, rep, Stream.PLACEMENT, self.pid[None, :, None], 0, d3, dtype=dtype, device=dev)
        v = v - v.mean(1, keepdim=True)
        t_now = (v * v).sum((1, 2)) / (3 * (N - 1))
        zero = torch.zeros(W, dtype=dtype, device=dev)
        # forces, energy and virial follow once the lists are built
        self.state = LJState(pos=pos, vel=v * torch.sqrt(self.T / t_now)[:, None, None], force=torch.zeros_like(pos),
                             epot=zero, virial=zero, npairs=zero, drift=zero.clone())
        self.capacity = K.verlet_capacity(self.rho, self.rc + self.skin)
        self.neighbors = VerletList(nbr=torch.full((W, N, self.capacity), -1, dtype=torch.long, device=dev),
                               built_at=pos.clone())
        self._drift_checked = torch.zeros(W, dtype=dtype, device=dev)  # state.drift at the last check
        self.rebuilds = torch.zeros(W, dtype=torch.long, device=dev)
        self.replays = 0
        self._built_step = [0] * W
        self._rebuild(list(range(W)))
        force, epot, virial, npairs = self._forces(pos)
        self.state = replace(self.state, force=force, epot=epot, virial=virial, npairs=npairs)
        self.u_tail, self.p_tail = K.lj_tail_corrections(self.rho, self.rc)
        self._rec: list[tuple] = []
        self._record()
        self._snapshot = self._save()

    def _param(self, name, default):
        v = self.worlds.params.get(name)
        if v is None:
            v = torch.full((self.W,), float(default), dtype=self.dtype, device=self.device)
        v = torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1)
        check(bool((v > 0).all()), f"scenario.{name}", v.tolist(), "a positive reduced temperature")
        return v

    def _forces(self, pos):
        return K.lj_forces(pos, self.neighbors.nbr, self.box, self.rc, shift=self.shift)

    def _rebuild(self, worlds: list[int]):
        """New Verlet lists for ``worlds`` at their current positions."""
        if not worlds:
            return
        N, idx, lists = self.N, torch.tensor(worlds, device=self.device), self.neighbors
        nbr, needed = K.verlet_list(self.state.pos[idx], self.alive[idx], self.box, self.rc + self.skin,
                                    self.capacity)
        if needed > self.capacity:
            grown = -(-needed // 16) * 16
            warnings.warn(f"LJ neighbour list: a particle has {needed} neighbours within cutoff + skin, more than "
                          f"the {self.capacity} slots planned from the density; widened to {grown} (a denser "
                          f"region than a fluid's: a world's rounding now depends on the batch it ran in)",
                          stacklevel=3)
            lists.nbr = torch.cat((lists.nbr, lists.nbr.new_full((self.W, N, grown - self.capacity), -1)), 2)
            self.capacity = grown
        if nbr.shape[2] < self.capacity:
            nbr = torch.cat((nbr, nbr.new_full((len(worlds), N, self.capacity - nbr.shape[2]), -1)), 2)
        # the list numbers particles within the sub-batch: w_sub * N + j -> w * N + j
        shift = ((idx - torch.arange(len(worlds), device=self.device)) * N)[:, None, None]
        lists.nbr[idx] = torch.where(nbr >= 0, nbr + shift, nbr)
        lists.built_at[idx] = self.state.pos[idx]
        self.state.drift[idx] = 0
        self._drift_checked[idx] = 0
        self.rebuilds[idx] += 1
        for w in worlds:
            self._built_step[w] = self.step_index

    def _save(self):
        return self.step_index, len(self._rec), self.state.map(torch.clone)

    def _restore(self, snap):
        self.step_index, n_rec = snap[0], snap[1]
        self._keys.step.fill_(self.step_index)
        del self._rec[n_rec:]
        self.state = snap[2].map(torch.clone)

    def step(self):
        self._advance()
        if self.step_index % self.check_every == 0 or self.step_index >= self.n_steps:
            self._check_lists()

    def _check_lists(self):
        """Replay the period since the last check for worlds whose list went stale, then rebuild
        the lists that would go stale before the next check (see the class docstring)."""
        half, start = 0.5 * self.skin, self._snapshot[0]
        while True:
            drift = self.state.drift.tolist()  # the host read of this period
            stale = [w for w, d in enumerate(drift) if d > half]
            if not stale:
                break
            end, built = self.step_index, list(self._built_step)
            self._restore(self._snapshot)
            self.replays += 1
            # a list built at the last check that still went stale: its world is rebuilt step by step
            outran = [w for w in stale if built[w] == start]
            self._rebuild([w for w in stale if built[w] != start])
            if outran:
                warnings.warn(f"LJ neighbour list: particles of world(s) {outran} moved more than skin/2 = {half:g} "
                              f"within {end - start} steps of a rebuild; their lists are checked every step of this "
                              f"period (correct, but slower: raise scenario.skin or lower "
                              f"scenario.neighbor_check_every)", stacklevel=2)
            while self.step_index < end:
                before = self._save() if outran else None
                self._advance()
                if outran:
                    d = self.state.drift.tolist()
                    late = [w for w in outran if d[w] > half]
                    if late:
                        check(all(self._built_step[w] != before[0] for w in late), "scenario.skin", self.skin,
                              f"a buffer larger than twice a particle's displacement in one step (dt={self.dt:g})",
                              "Raise scenario.skin or lower dt.")
                        self._restore(before)
                        self._rebuild(late)
                        self._advance()
        last = self._drift_checked.tolist()
        self._rebuild([w for w in range(self.W) if drift[w] + max(drift[w] - last[w], 0.0) > half])
        self._drift_checked = self.state.drift.clone()
        self._snapshot = self._save()

    def _advance(self):
        self.state = self._step_fn(self.state, self.neighbors, self.T, self._keys, self.settings)
        self.step_index += 1
        self._keys.step += 1  # the step counter lives on the device: no transfer per step
        if self.step_index % self.record_every == 0 or self.step_index == self.n_steps:
            self._record()

    def observables(self):
        """Instantaneous per-world ``(U/N incl. tail, P incl. tail, T_kin, H/N of the dynamics)``."""
        N, V, st = self.N, self.box ** 3, self.state
        ke = 0.5 * (st.vel * st.vel).sum((1, 2))
        t_kin = 2 * ke / (3 * (N - 1))
        u_unshift = st.epot / N
        if self.shift:  # report the truncated, unshifted energy: add back V(rc) per pair inside rc
            sc6 = self.rc ** -6
            u_unshift = u_unshift + st.npairs * 4.0 * (sc6 * sc6 - sc6) / N
        pressure = (2 * ke + st.virial) / (3 * V) + self.p_tail
        return u_unshift, pressure, t_kin, (ke + st.epot) / N

    def _record(self):
        self.check_finite("position", self.state.pos, self.alive,
                          "Lower dt (velocity Verlet needs dt well below the collision time, ~0.005 in LJ units) "
                          "or check the initial configuration for overlaps.")
        u, p, t, h = self.observables()
        self._rec.append((self.time_s, u, p, t, h))

    def results(self) -> RunResult:
        T = torch.tensor([r[0] for r in self._rec], dtype=torch.float64)
        P = torch.stack([r[2] for r in self._rec]).double().cpu()
        Tk = torch.stack([r[3] for r in self._rec]).double().cpu()
        H = torch.stack([r[4] for r in self._rec]).double().cpu()
        keep = T >= self.equilibration * self.horizon - 1e-12
        W = self.W
        cols = {"world": np.arange(W), "replication": self.worlds.replication.cpu().numpy(),
                "arm": self.worlds.arm.cpu().numpy()}
        U = torch.stack([r[1] for r in self._rec]).double().cpu()
        cols["potential_energy"] = (U[keep].mean(0) + self.u_tail).numpy()
        cols["pressure"] = P[keep].mean(0).numpy()
        cols["temperature"] = Tk[keep].mean(0).numpy()
        cols["neighbor_rebuilds"] = self.rebuilds.cpu().numpy()
        cols["total_energy_drift"] = ((H[-1] - H[0]) / max(self.horizon, 1e-300)).numpy()
        # one world at a time: a batched std rounds differently with the batch's width
        cols["total_energy_fluctuation"] = (np.array([float(h.std()) for h in H.T.contiguous()]) if len(H) > 1
                                            else np.zeros(W))
        ts = {"world": np.repeat(np.arange(W)[None], len(T), 0).ravel(),
              "time": np.repeat(T.numpy()[:, None], W, 1).ravel(),
              "pressure": P.numpy().ravel(), "temperature": Tk.numpy().ravel(),
              "total_energy": H.numpy().ravel()}
        ts["potential_energy"] = (U + self.u_tail).numpy().ravel()
        return RunResult(worlds=pd.DataFrame(cols), metrics=list(self.metrics),
                         tables={"timeseries": pd.DataFrame(ts)}, complete=self.step_index >= self.n_steps)
