"""The molecular twin: a drug (ligand) meeting its target and an off-target in a
periodic cell volume (the Lennard-Jones fluid that validates the physics is :mod:`.lj`).

Units (molecular scenario): length nm, time µs, energy kT; diffusion
coefficients in nm²/µs (= µm²/s), first-order rates in 1/µs. Concentrations
are reported in µM (1 molecule in 1 nm³ = 1.6605e6 µM).

Per-world parameters (``WorldBatch.params[name]``, shape ``[W]``; when absent
the scenario's value is used for every world) — what interventions write:

================== =========================================================
``k_on_target``     Doi microscopic binding rate λ of ligand + target inside
                    the reaction radius (1/µs). The macroscopic rate is
                    :func:`kernels.doi_rate`; ``K_d`` is
                    :func:`kernels.doi_dissociation_constant`.
``k_off_target``    unbinding rate of the target complex (1/µs)
``k_on_offtarget``  as above, for the off-target protein
``k_off_offtarget`` as above, for the off-target complex
``dose``            ligand molecules added per dose (rounded; at most the
                    scenario's ``max_dose``)
``dosing_interval`` time between doses (µs)
``n_doses``         number of doses (rounded; 0 = as many as fit in the horizon)
``k_el``            first-order clearance (elimination) rate of *free* ligand (1/µs)
``first_dose``      time of the first dose (µs)
================== =========================================================

State is a fixed-capacity particle table: slots ``[0, n_target)`` hold the
target receptors (grouped into cells = subgroups), then the off-target
proteins, then ``n_dose_slots × max_dose`` ligand slots (``max_dose``: the
largest dose of the batch unless the scenario fixes it). Noise is keyed by a
particle *id* that does not depend on that layout: receptors and off-targets
are numbered by slot, ligand ``k`` of dose ``d`` has id ``n_target +
n_offtarget + d * LIGAND_ID_STRIDE + k`` in every world, batch and policy, so
its placement, Brownian kicks and reaction draws never shift when a policy
(or another world of the batch) changes the dose, the interval, the number of
doses or the rates (DESIGN.md §3). A bound complex keeps both slots: the
receptor slot becomes the complex, the ligand slot is parked as
``BOUND_LIGAND`` and reappears, uniformly inside the reaction ball, on unbinding.

The twin holds these as typed records (:mod:`.state`): ``twin.state`` (:class:`~.state.ParticleState`: positions,
species, partners, forces), ``twin.slots`` (:class:`~.state.SlotTable`: each slot's group, noise id, dose and
spawn position) and ``twin.kinetics`` (:class:`~.state.Kinetics`: each world's rates).

Mesa: the agents (compartments, species populations, per-world particle agent sets, the dosing schedule)
are in :mod:`.agents`; ``twin.datacollector`` is Mesa's ``DataCollector``, per world (each model reporter
gives one value per world at every record), and the ``timeseries`` table is its table.

Length: the twin, its parameters read per world, the step and its outcomes.
"""
from __future__ import annotations

import math

import mesa
import numpy as np
import pandas as pd
import torch

from twins.core import noise
from twins.core.errors import check
from twins.core.noise import Stream
from twins.core.twin import RunResult, Twin, per_world_table
from twins.core.worlds import WorldBatch

from . import kernels as K
from .agents import Compartment, DosingSchedule, Particle, ParticleView, Species, SpeciesPopulation, species_mask
from .state import Kinetics, ParticleState, SlotTable


def micromolar(n, volume_nm3):
    """Molecule count in a volume (nm³) → concentration in µM."""
    # c [mol/L] = n / (N_A * V[L]), V[L] = V[nm³] * 1e-24
    return n / (6.02214076e23 * volume_nm3 * 1e-24) * 1e6


#: the per-world series of the DataCollector (columns of the timeseries table after ``world`` and ``time``)
SERIES = ("target_occupancy", "offtarget_occupancy", "target_complexes", "offtarget_complexes", "free_ligand",
          "free_ligand_uM")
_BIND_DRAW = 16  # reaction draws: 0 clearance, 1 unbinding, 16 + partner id: binding
LIGAND_ID_STRIDE = 1 << 20  # noise ids of consecutive doses' ligands are this far apart (max molecules per dose)


# ============================================================================ molecular twin
def doses_that_fit(first: float, interval: float, t_last: float) -> int:
    """Doses at ``first, first + interval, ...`` that fall at or before ``t_last`` (the last step's time)."""
    return max(int(math.floor((t_last - first + 1e-9) / interval)) + 1, 0)


class MolecularTwin(Twin):
    """Brownian dynamics + Doi reactions of ligand, target and off-target in W worlds.

    ``collect``: the DataCollector also collects each compartment's per-world occupancy (an agent reporter);
    its model reporters (the timeseries table) are collected either way."""

    metrics = (
        "target_occupancy_mean", "time_in_window", "offtarget_occupancy_mean",
        "offtarget_occupancy_max", "target_complexes_mean", "offtarget_complexes_mean",
        "free_ligand_uM_mean", "doses_given", "selectivity_ratio",
    )

    def __init__(self, worlds: WorldBatch, *, dt: float, horizon: float, device="cpu",
                 dtype=torch.float32, box: float = 60.0, reaction_radius: float = 2.0,
                 cell_size: float | None = None, cells=(("high", 60, 0.0, 0.5), ("low", 20, 0.5, 1.0)),
                 n_offtarget: int = 40, D_target: float = 0.5, D_offtarget: float = 5.0,
                 D_ligand: float = 50.0, k_on_target: float = 20.0, k_off_target: float = 0.2,
                 k_on_offtarget: float = 5.0, k_off_offtarget: float = 2.0, dose: float = 150,
                 max_dose: int | None = None, first_dose: float = 0.0, dosing_interval: float = 10.0,
                 n_doses: float = 0, k_el: float = 0.1, repulsion_k: float = 0.0,
                 repulsion_radius: float = 4.0, therapeutic_window=(0.5, 0.9), record_every: int = 10,
                 collect: bool = True):
        init_kwargs = {k: v for k, v in locals().items() if k not in ("self", "worlds", "__class__")}
        super().__init__(worlds, dt=dt, horizon=horizon, device=device, dtype=dtype)
        # the scenario's values: every world's baseline (where worlds.params sets none), read by read_params()
        self.scenario_values = init_kwargs
        # ---- static checks (field, value, what is valid)
        for name, v in (("box", box), ("reaction_radius", reaction_radius), ("dt", dt), ("horizon", horizon)):
            check(v > 0, f"scenario.{name}", v, "a positive number")
        for name, v in (("D_target", D_target), ("D_offtarget", D_offtarget), ("D_ligand", D_ligand),
                        ("repulsion_k", repulsion_k)):
            check(v >= 0, f"scenario.{name}", v, "a non-negative number")
        self.box, self.R = float(box), float(reaction_radius)
        self.rep_k, self.rep_r = float(repulsion_k), float(repulsion_radius)
        self.range = max(self.R, self.rep_r if self.rep_k > 0 else 0.0)
        if cell_size is not None:
            check(cell_size >= self.R, "scenario.reaction_radius", self.R,
                  f"a reaction radius no larger than the cell size ({cell_size:g})",
                  "Raise scenario.cell_size or leave it unset (automatic).")
        self.cell_size = K.check_geometry(self.box, self.range, cell_size)
        lo, hi = (float(x) for x in therapeutic_window)
        check(0 <= lo < hi <= 1, "scenario.therapeutic_window", [lo, hi], "[low, high] with 0 <= low < high <= 1")
        self.window = (lo, hi)
        self.record_every = max(1, int(record_every))
        # maximal Brownian step vs reaction radius: Doi needs sqrt(2 D dt) << R
        step_len = math.sqrt(2 * max(D_ligand, D_target, D_offtarget) * dt)
        check(step_len <= 0.5 * self.R, "scenario.dt", dt,
              f"a time step with Brownian step sqrt(2 D dt) <= R/2 (now {step_len:.3g} nm vs R = {self.R:g} nm)",
              f"Try dt <= {(0.5 * self.R) ** 2 / (2 * max(D_ligand, D_target, D_offtarget)):.3g}.")
        cells = [tuple(c) for c in cells]
        self.group_names = [str(c[0]) for c in cells]
        for c in cells:
            check(int(c[1]) >= 0, f"scenario.cells[{c[0]}].receptors", c[1], "a non-negative integer")
            check(0 <= float(c[2]) < float(c[3]) <= 1, f"scenario.cells[{c[0]}].x_range", [c[2], c[3]],
                  "fractions of the box edge with 0 <= from < to <= 1")
        check(n_offtarget >= 0, "scenario.n_offtarget", n_offtarget, "a non-negative integer")
        self._cells = cells

        # ---- Mesa agents
        self.extracellular = Compartment(self, "extracellular", "extracellular")
        self.cells = [Compartment(self, c[0], "cell", (c[2], c[3]), c[1], g) for g, c in enumerate(cells)]
        self.populations = {
            "target": SpeciesPopulation(self, "target", (Species.TARGET,)),
            "offtarget": SpeciesPopulation(self, "offtarget", (Species.OFFTARGET,)),
            "ligand": SpeciesPopulation(self, "ligand", (Species.LIGAND,)),
            "target_complex": SpeciesPopulation(self, "target_complex", (Species.TARGET_COMPLEX,)),
            "offtarget_complex": SpeciesPopulation(self, "offtarget_complex", (Species.OFFTARGET_COMPLEX,)),
        }
        self._collect = collect
        self._particle_agents: dict[int, Particle] = {}  # the per-particle agents asked for, by flat slot
        self.schedule = None
        self.read_params()

    def read_params(self) -> None:
        """Build what the worlds' parameters decide (``worlds.params``, else the scenario's values): rates, the
        dosing schedule, the slot layout (it depends on the largest dose and number of doses), the particles'
        state at time 0 and the first record. The twin calls it once when it is built; an intervention that
        writes such parameters calls it again (before the first step). Noise is keyed by particle id, so each
        world is exactly what it would have been had it been built with these parameters."""
        if self.step_index != 0:
            raise RuntimeError("per-world parameters must be written before the twin's first step")
        kw, W, dev = self.scenario_values, self.W, self.device
        k_on_target, k_off_target, k_on_offtarget, k_off_offtarget, k_el = (
            kw[k] for k in ("k_on_target", "k_off_target", "k_on_offtarget", "k_off_offtarget", "k_el"))
        dose, dosing_interval, first_dose, n_doses, max_dose = (
            kw[k] for k in ("dose", "dosing_interval", "first_dose", "n_doses", "max_dose"))
        n_offtarget, D_target, D_offtarget, D_ligand, repulsion_k = (
            kw[k] for k in ("n_offtarget", "D_target", "D_offtarget", "D_ligand", "repulsion_k"))
        # ---- per-world parameters
        self.kinetics = kin = Kinetics(
            k_on_target=self._param("k_on_target", k_on_target),
            k_off_target=self._param("k_off_target", k_off_target),
            k_on_offtarget=self._param("k_on_offtarget", k_on_offtarget),
            k_off_offtarget=self._param("k_off_offtarget", k_off_offtarget),
            k_el=self._param("k_el", k_el))
        dose_w = self._param("dose", dose)
        interval = self._param("dosing_interval", dosing_interval, positive=True)
        first = self._param("first_dose", first_dose)
        dose_n = torch.round(dose_w)
        max_dose = int(dose_n.max().item()) if max_dose is None else int(max_dose)
        check(0 <= max_dose < LIGAND_ID_STRIDE, "scenario.max_dose", max_dose,
              f"a non-negative integer below {LIGAND_ID_STRIDE}")
        check(bool((dose_n <= max_dose).all()), "dose", dose_n.max().item(),
              f"at most scenario.max_dose = {max_dose} molecules per dose",
              "Raise scenario.max_dose (the per-dose slot capacity).")
        n_doses_w = torch.round(self._param("n_doses", n_doses)).long()  # 0: as many as fit
        fit = doses_that_fit(float(first.min()), float(interval.min()), (self.n_steps - 1) * self.dt)
        n_max = torch.where(n_doses_w > 0, n_doses_w.clamp_max(fit), torch.full_like(n_doses_w, fit))
        n_dose_slots = int(n_max.max().item()) if W else fit
        self.max_dose, self.n_dose_slots = max_dose, n_dose_slots

        # ---- slots
        cells, counts = self._cells, [int(c[1]) for c in self._cells]
        self.n_t, self.n_o = sum(counts), int(n_offtarget)
        self.n_lig = n_dose_slots * max_dose
        N = self.N = self.n_t + self.n_o + self.n_lig
        self.lig0 = self.n_t + self.n_o
        self.group_counts = torch.tensor(counts, dtype=self.dtype, device=dev)
        grp = torch.repeat_interleave(torch.arange(len(cells), device=dev), torch.tensor(counts, device=dev))
        self.group_onehot = torch.nn.functional.one_hot(grp, len(cells)).to(self.dtype) if self.n_t else \
            torch.zeros(0, len(cells), dtype=self.dtype, device=dev)
        group = torch.full((N,), -1, dtype=torch.long, device=dev)
        group[: self.n_t] = grp
        self.pid = torch.arange(N, device=dev)
        lig = torch.arange(self.n_lig, device=dev)
        lig_dose, lig_k = lig // max(max_dose, 1), lig % max(max_dose, 1)
        # noise id of each slot: independent of max_dose and n_dose_slots (module docstring)
        nid = torch.cat((self.pid[: self.lig0], self.lig0 + lig_dose * LIGAND_ID_STRIDE + lig_k))
        self.rep = self.worlds.replication

        # ---- initial state: receptors uniformly in their cell's slab, off-targets anywhere
        u = self._uniform(Stream.PLACEMENT, nid[None, :, None], 0, torch.arange(3, device=dev)[None, None, :])
        xlo = torch.zeros(N, dtype=self.dtype, device=dev)
        xhi = torch.ones(N, dtype=self.dtype, device=dev)
        for g, c in enumerate(cells):
            m = group == g
            xlo[m], xhi[m] = float(c[2]), float(c[3])
        frac = u.clone()
        frac[..., 0] = xlo + (xhi - xlo) * u[..., 0]
        pos = K.wrap(frac * self.box, self.box)
        self.slots = SlotTable(group=group, noise_id=nid, ligand_dose=lig_dose, ligand_index=lig_k,
                               spawn_pos=pos[:, self.lig0:].clone())
        sp = torch.zeros((W, N), dtype=torch.int8, device=dev)
        sp[:, : self.n_t] = Species.TARGET
        sp[:, self.n_t: self.lig0] = Species.OFFTARGET
        self.state = ParticleState(pos=pos, species=sp, partner=torch.full((W, N), -1, dtype=torch.long, device=dev))
        self.D_table = torch.tensor([0, D_target, D_offtarget, D_ligand, D_target, D_offtarget, 0, 0],
                                    dtype=self.dtype, device=dev)
        self.dose_count = dose_n.long()
        # per-step constants: Brownian step scale sqrt(2 D dt) and D dt (force term) by species,
        # unbinding probabilities, and the noise-key prefixes (hashed once; kernels.key_prefix)
        self._bscale = torch.sqrt(2.0 * self.D_table * self.dt)
        self._dtD = self.D_table * self.dt
        self._p_off_t = -torch.expm1(-kin.k_off_target * self.dt)
        self._p_off_o = -torch.expm1(-kin.k_off_offtarget * self.dt)
        self._clears = bool((kin.k_el > 0).any())
        # the Brownian step starts at the first species block that can move (targets, off-targets, ligands)
        self._mobile_from = 0 if D_target > 0 else (self.n_t if D_offtarget > 0 else self.lig0)
        if repulsion_k > 0:
            self._mobile_from = 0  # forces act on every macromolecule
        # immobile receptors (no diffusion, no forces): bin them once, each ligand then finds its
        # binding partners with one cell lookup per step (kernels.reach_pairs; the same pairs as cell_pairs)
        self._reach = None
        # (unless the table would be too large: then the per-step cell list, same pairs)
        if (self._mobile_from >= self.lig0 and self.n_lig and self.lig0
                and K.reach_table_bound(W * self.lig0, self.box, self.R, W) <= K.REACH_TABLE_MAX_ENTRIES):
            rec = torch.zeros((W, N), dtype=torch.bool, device=dev)
            rec[:, : self.lig0] = True
            self._reach = K.reach_table(pos, rec, self.box, self.R)
        self._pref_b = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.BROWNIAN, nid[None, :])
        self._pref_r = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.REACTION, nid[None, :])
        self._pref_p = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.PLACEMENT, nid[None, :])
        self._unbind_draws = torch.arange(3, 6, device=dev)[None, :]
        self.n_cleared = torch.zeros(W, dtype=torch.long, device=dev)
        self.n_bind_events = torch.zeros(W, dtype=torch.long, device=dev)
        self.n_unbind_events = torch.zeros(W, dtype=torch.long, device=dev)
        self.doses_given = torch.zeros(W, dtype=torch.long, device=dev)
        self._rec: list[tuple] = []

        if self.schedule is not None:  # the one of an earlier read
            self.schedule.remove()
        self.schedule = DosingSchedule(self, first, interval, dose_n, n_max)
        self._particle_agents.clear()  # the slot layout may have changed
        # Mesa's DataCollector, per world: each model reporter gives one value per world at every record, and
        # the timeseries table is its table (every model reporter a column); with collect, the compartments'
        # per-world occupancy too
        self.datacollector = mesa.DataCollector(
            model_reporters={"time": lambda m: m.time_s, **{k: (lambda m, k=k: m.observed[k]) for k in SERIES}},
            agenttype_reporters={Compartment: {"occupancy": lambda a: a.occupancy.cpu().numpy()}}
            if self._collect else None,
        )
        self._record()


    # ------------------------------------------------------------------ helpers
    def _param(self, name, default, positive=False):
        v = self.worlds.params.get(name)
        field = f"worlds.params[{name!r}]" if v is not None else f"scenario.{name}"
        if v is None:
            v = torch.full((self.W,), float(default), dtype=self.dtype, device=self.device)
        else:
            v = torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1)
            check(v.numel() == self.W, field, tuple(v.shape), f"one value per world (shape [{self.W}])")
        bad = (v <= 0) if positive else (v < 0)
        check(not bool(bad.any()) and bool(torch.isfinite(v).all()), field, v[bad].tolist() or v.tolist(),
              "a positive finite number" if positive else "a non-negative finite rate / amount",
              "Rates, doses and intervals cannot be negative.")
        return v

    def _uniform(self, stream, entity, step, draw):
        return noise.uniform(self.worlds.seed, self.rep.view(-1, *([1] * (entity.dim() - 1))), stream,
                             entity, step, draw, dtype=self.dtype, device=self.device)

    def particle(self, world: int, slot: int) -> ParticleView:
        st = self.state
        p = int(st.partner[world, slot])
        g = int(self.slots.group[slot])
        return ParticleView(world, slot, Species(int(st.species[world, slot])).name,
                            tuple(st.pos[world, slot].tolist()), None if p < 0 else p % self.N,
                            self.group_names[g] if g >= 0 else None)

    def particles(self, world: int, codes=None) -> mesa.agent.AgentSet:
        """World ``world``'s particles of the species ``codes`` (default: every dosed, not cleared one), as
        :class:`~.agents.Particle` agents over that world's tensor columns, in slot order."""
        if codes is None:
            codes = [c for c in Species if c not in (Species.EMPTY, Species.CLEARED)]
        slots = torch.nonzero(species_mask(self.state.species[world], codes)).flatten().tolist()
        agents = []
        for s in slots:
            key = int(world) * self.N + s
            if key not in self._particle_agents:
                self._particle_agents[key] = Particle(self, world, s)
            agents.append(self._particle_agents[key])
        return mesa.agent.AgentSet(agents, random=self.random)

    def bound_per_group(self) -> torch.Tensor:
        b = (self.state.species[:, : self.n_t] == Species.TARGET_COMPLEX).to(self.dtype)
        return b @ self.group_onehot  # [W, G]

    def target_occupancy(self) -> torch.Tensor:
        return self.bound_per_group().sum(1) / max(self.n_t, 1)

    def offtarget_occupancy(self) -> torch.Tensor:
        b = (self.state.species[:, self.n_t: self.lig0] == Species.OFFTARGET_COMPLEX).sum(1)
        return b.to(self.dtype) / max(self.n_o, 1)

    # ------------------------------------------------------------------ dosing
    def administer(self, n_due: torch.Tensor, dose_count: torch.Tensor):
        if self.n_lig == 0:
            return
        st, slots = self.state, self.slots
        sl = st.species[:, self.lig0:]
        new = (sl == Species.EMPTY) & (slots.ligand_dose[None, :] < n_due[:, None]) & \
              (slots.ligand_index[None, :] < self.dose_count[:, None])
        st.species[:, self.lig0:] = torch.where(new, torch.full_like(sl, Species.LIGAND), sl)
        st.pos[:, self.lig0:] = torch.where(new[..., None], slots.spawn_pos, st.pos[:, self.lig0:])
        self.doses_given = torch.maximum(self.doses_given, torch.where(self.dose_count > 0, n_due, 0))

    # ------------------------------------------------------------------ step
    def step(self):
        W, N, dev = self.W, self.N, self.device
        s = self.step_index
        take = torch.Tensor.index_select  # gathers: several times faster on CPU than ``x[idx]``
        self.agents_by_type[DosingSchedule].do("step")  # the Mesa agents that act: today the dosing schedule
        st = self.state
        sp = st.species
        # --- Brownian move (complexes move with their receptor; parked ligands have D = 0).
        # Noise: three normals per particle from one keyed hashing pass (kernels.keyed_normals3),
        # only for the slots from the first species block that can move (immobile receptors would
        # get dx = 0 · ξ = 0 exactly: skipping them changes no bit).
        a = self._mobile_from
        spm = sp[:, a:]
        scale = take(self._bscale, 0, spm.reshape(-1).long()).view(W, N - a, 1)
        dx = scale * K.keyed_normals3(self._pref_b[:, a:], s, self.dtype)
        if st.force is not None:
            dx = dx + take(self._dtD, 0, spm.reshape(-1).long()).view(W, N - a, 1) * st.force[:, a:]
        st.pos[:, a:] = K.wrap(st.pos[:, a:] + dx, self.box)
        # --- reactions, all decided on the pre-reaction state (on the moved positions)
        flat_sp = sp.view(-1)
        free_lig = sp == Species.LIGAND
        free_rec = (sp >= Species.TARGET) & (sp <= Species.OFFTARGET)
        # the pair search queries from the smaller set (fewer cell lookups); the pair set is the same
        if self._reach is not None:
            gi, gj, _, _ = K.reach_pairs(st.pos, free_lig, free_rec, self._reach, self.box, self.R, self.lig0)
        elif int(free_rec.sum()) < int(free_lig.sum()):
            gj, gi, _, _ = K.cell_pairs(st.pos, free_rec, free_lig, self.box, self.R, self.cell_size)
        else:
            gi, gj, _, _ = K.cell_pairs(st.pos, free_lig, free_rec, self.box, self.R, self.cell_size)
        pref_r = self._pref_r.view(-1)
        if gi.numel():
            w = torch.div(gi, N, rounding_mode="floor")
            is_t = take(flat_sp, 0, gj) == Species.TARGET
            rate = torch.where(is_t, take(self.kinetics.k_on_target, 0, w), take(self.kinetics.k_on_offtarget, 0, w))
            h = K.advance(take(pref_r, 0, gi), s)  # REACTION-stream key of the ligand at this step
            u = K.bits_uniform(K.advance(h, _BIND_DRAW + torch.remainder(gj, N)))
            bi, bj = K.doi_select(gi, gj, rate, self.dt, u, W * N)
        else:
            bi = bj = gi
        # unbinding of complexes present before this step (draw 1), drawn for the complexes only
        nr = self.lig0
        rs = sp[:, :nr]
        cplx = torch.nonzero(((rs >= Species.TARGET_COMPLEX) & (rs <= Species.OFFTARGET_COMPLEX)).reshape(-1)
                             ).flatten()
        rr = cplx
        if cplx.numel():
            cw = torch.div(cplx, nr, rounding_mode="floor")
            rr = cw * N + torch.remainder(cplx, nr)  # flattened slot index
            ur = K.bits_uniform(K.advance(K.advance(take(pref_r, 0, rr), s), 1), self.dtype)
            is_tc = take(flat_sp, 0, rr) == Species.TARGET_COMPLEX
            p_off = torch.where(is_tc, take(self._p_off_t, 0, cw), take(self._p_off_o, 0, cw))
            rr = rr[ur < p_off]
        # --- apply
        new_sp = sp.clone().view(-1)
        partner = st.partner.view(-1)
        pos = st.pos.view(-1, 3)
        if self.n_lig and self._clears:  # clearance of free ligand (draw 0), not the ones binding now
            h_l = K.advance(self._pref_r[:, nr:], s)
            ul = K.bits_uniform(K.advance(h_l, 0), self.dtype)
            clear_flat = torch.zeros(W, N, dtype=torch.bool, device=dev)
            clear_flat[:, nr:] = free_lig[:, nr:] & K.bernoulli(self.kinetics.k_el[:, None], self.dt, ul)
            clear_flat = clear_flat.view(-1)
            clear_flat[bi] = False
            new_sp[clear_flat] = Species.CLEARED
            self.n_cleared += clear_flat.view(W, N).sum(1)
        if bi.numel():
            new_sp[bj] = take(flat_sp, 0, bj) + 3  # TARGET→TARGET_COMPLEX, OFFTARGET→OFFTARGET_COMPLEX
            new_sp[bi] = Species.BOUND_LIGAND
            partner[bj] = bi
            partner[bi] = bj
            self.n_bind_events += torch.bincount(torch.div(bi, N, rounding_mode="floor"), minlength=W)
        if rr.numel():
            uw = torch.div(rr, N, rounding_mode="floor")
            ll = take(partner, 0, rr)
            new_sp[rr] = take(flat_sp, 0, rr) - 3
            new_sp[ll] = Species.LIGAND
            # PLACEMENT draws 3..5 of the ligand at this step (= noise.uniform, from the hashed prefix)
            h = K.advance(take(self._pref_p.view(-1), 0, ll), s)[:, None]
            uu = K.bits_uniform(K.advance(h, self._unbind_draws), self.dtype)
            pos[ll] = K.wrap(take(pos, 0, rr) + K.ball_point(uu, self.R), self.box)
            partner[rr] = -1
            partner[ll] = -1
            self.n_unbind_events += torch.bincount(uw, minlength=W)
        st.species = new_sp.view(W, N)
        # --- forces for the next step (soft repulsion among macromolecules)
        if self.rep_k > 0:
            macro = (st.species >= 1) & (st.species != Species.LIGAND) & (st.species <= 5)
            st.force = K.soft_repulsion_pair_forces(st.pos, macro, self.box, self.rep_r, self.rep_k)
        self.step_index += 1
        if self.step_index % self.record_every == 0 or self.step_index == self.n_steps:
            self._record()

    # ------------------------------------------------------------------ observation
    def _record(self):
        self.check_finite("position", self.state.pos, self.state.species != Species.EMPTY,
                          "Check the diffusion coefficients, dt and forces of that world (repulsion_k, radius): "
                          "a step that large can throw particles to infinity.")
        bg = self.bound_per_group()
        sp = self.state.species
        n_oc = (sp[:, self.n_t: self.lig0] == Species.OFFTARGET_COMPLEX).sum(1)
        n_lig = (sp == Species.LIGAND).sum(1)
        self._rec.append((self.time_s, bg, n_oc, n_lig))
        # this record's per-world values (float64 [W]), which the DataCollector's model reporters read
        tc, oc, fl = bg.double().sum(1).cpu(), n_oc.double().cpu(), n_lig.double().cpu()
        self.observed = {
            "target_occupancy": (tc / max(self.n_t, 1)).numpy(),
            "offtarget_occupancy": (oc / max(self.n_o, 1)).numpy(),
            "target_complexes": tc.numpy(),
            "offtarget_complexes": oc.numpy(),
            "free_ligand": fl.numpy(),
            "free_ligand_uM": micromolar(fl.numpy(), self.box ** 3),
        }
        self.datacollector.collect(self)

    def timeseries(self):
        """``(t [T], bound_per_group [T,W,G], offtarget_complexes [T,W], free_ligand [T,W])``."""
        t = torch.tensor([r[0] for r in self._rec], dtype=torch.float64)
        bg = torch.stack([r[1] for r in self._rec]).double().cpu()
        oc = torch.stack([r[2] for r in self._rec]).double().cpu()
        fl = torch.stack([r[3] for r in self._rec]).double().cpu()
        return t, bg, oc, fl

    def outcome_targets(self) -> tuple[list[str], dict[str, list[str]]]:
        return list(self.metrics), {"expression": ["n_receptors", "target_occupancy_mean", "time_in_window"]}

    def results(self) -> RunResult:
        t, bg, oc, fl = self.timeseries()
        W, G = self.W, len(self.group_names)
        V = self.box ** 3
        occ = bg.sum(2) / max(self.n_t, 1)  # [T, W]
        occ_g = bg / self.group_counts.double().cpu().clamp_min(1)  # [T, W, G]
        ooc = oc / max(self.n_o, 1)
        lo, hi = self.window
        # time averages by the trapezoid rule on the record grid (records are evenly spaced
        # except possibly the last)
        wts = torch.zeros_like(t)
        if len(t) > 1:
            dtt = t[1:] - t[:-1]
            wts[1:] += dtt / 2
            wts[:-1] += dtt / 2
            wts = wts / wts.sum()
        else:
            wts[:] = 1.0

        def tmean(x):
            return torch.einsum("t,t...->...", wts, x)

        # selectivity: target over off-target occupancy (time means); an off-target occupancy below the
        # resolution of its time mean (one complex at one record) counts as that resolution, so a
        # perfectly selective ligand gets a large finite ratio rather than a division by zero
        floor = 1.0 / (max(self.n_o, 1) * len(t))
        selectivity = tmean(occ) / tmean(ooc).clamp_min(floor) if self.n_o else torch.full((W,), float("nan"))
        inwin = ((occ >= lo) & (occ <= hi)).double()
        inwin_g = ((occ_g >= lo) & (occ_g <= hi)).double()
        rep = self.worlds.replication.cpu().numpy()
        arm = self.worlds.arm.cpu().numpy()
        df = pd.DataFrame({
            "world": np.arange(W), "replication": rep, "arm": arm,
            "target_occupancy_mean": tmean(occ).numpy(),
            "time_in_window": tmean(inwin).numpy(),
            "offtarget_occupancy_mean": tmean(ooc).numpy(),
            "offtarget_occupancy_max": ooc.max(0).values.numpy(),
            "target_complexes_mean": tmean(bg.sum(2)).numpy(),
            "offtarget_complexes_mean": tmean(oc).numpy(),
            "free_ligand_uM_mean": micromolar(tmean(fl).numpy(), V),
            "doses_given": self.doses_given.cpu().numpy(),
            "selectivity_ratio": selectivity.numpy(),
            "ligand_cleared": self.n_cleared.cpu().numpy(),
        })
        ts = per_world_table(self.datacollector.model_vars, W, "time", world_first=True)
        og = tmean(occ_g).numpy()  # [W, G]
        ig = tmean(inwin_g).numpy()
        groups = pd.DataFrame({
            "world": np.repeat(np.arange(W), G),
            "group_kind": "expression",
            "group": np.tile(np.array(self.group_names, dtype=object), W),
            "n_receptors": np.tile(self.group_counts.cpu().numpy(), W),
            "target_occupancy_mean": og.ravel(),
            "time_in_window": ig.ravel(),
        })
        return RunResult(worlds=df, metrics=list(self.metrics), tables={"timeseries": ts}, groups=groups,
                         complete=self.step_index >= self.n_steps)


    def write_figures(self, result: RunResult, figdir) -> list[str]:
        """Target and off-target occupancy over time, the therapeutic window shaded."""
        from twins import plots

        ax = plots.occupancy(result.tables["timeseries"], window=self.window)
        ax.set_title("occupancy: mean over worlds, 5–95% band")
        plots.save(ax, figdir / "occupancy.png")
        return ["occupancy.png"]
