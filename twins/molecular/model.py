"""The molecular twin: a drug (ligand) meeting its target and an off-target in a
periodic cell volume, and the Lennard-Jones fluid used to validate the physics.

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
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import IntEnum

import mesa
import numpy as np
import pandas as pd
import torch

from twins.core import noise
from twins.core.errors import check
from twins.core.noise import Stream
from twins.core.twin import RunResult, Twin
from twins.core.worlds import WorldBatch

from . import kernels as K

def _uM(n, volume_nm3):
    """Molecule count in a volume (nm³) → concentration in µM."""
    # c [mol/L] = n / (N_A * V[L]), V[L] = V[nm³] * 1e-24
    return n / (6.02214076e23 * volume_nm3 * 1e-24) * 1e6


class Species(IntEnum):
    EMPTY = 0  # slot not (yet) used
    TARGET = 1  # free target receptor
    OFFTARGET = 2  # free off-target protein
    LIGAND = 3  # free ligand
    TARGET_COMPLEX = 4  # target + ligand (the receptor's slot)
    OFFTARGET_COMPLEX = 5  # off-target + ligand
    BOUND_LIGAND = 6  # ligand parked inside a complex
    CLEARED = 7  # ligand eliminated (never reused)


_BIND_DRAW = 16  # reaction draws: 0 clearance, 1 unbinding, 16 + partner id: binding
LIGAND_ID_STRIDE = 1 << 20  # noise ids of consecutive doses' ligands are this far apart (max molecules per dose)


# ============================================================================ Mesa agents
@dataclass(frozen=True)
class ParticleView:
    """Read-only view of one particle of one world."""

    world: int
    slot: int
    species: str
    position: tuple
    partner: int | None
    group: str | None


class SpeciesPopulation(mesa.Agent):
    """A vectorized agent set: all particles of some species, in every world.

    Per-agent state is tensor columns of the model; ``count`` is ``[W]``;
    ``view(w, slot)`` and ``members(w)`` give read-only per-particle views.
    """

    def __init__(self, model, name: str, codes: tuple[int, ...]):
        super().__init__(model)
        self.name, self.codes = name, tuple(int(c) for c in codes)

    def mask(self) -> torch.Tensor:
        sp = self.model.species
        m = torch.zeros_like(sp, dtype=torch.bool)
        for c in self.codes:
            m |= sp == c
        return m

    @property
    def count(self) -> torch.Tensor:
        return self.mask().sum(1)

    def members(self, world: int) -> list[int]:
        return torch.nonzero(self.mask()[world]).flatten().tolist()

    def view(self, world: int, slot: int) -> ParticleView:
        return self.model.particle(world, slot)

    def __len__(self) -> int:
        return int(self.mask().sum())


class Compartment(mesa.Agent):
    """A region of the box a person reasons about: the extracellular volume
    (where ligand is dosed and cleared) or a cell carrying target receptors at
    some expression level (a subgroup for equity metrics)."""

    def __init__(self, model, name: str, kind: str, x_range=(0.0, 1.0), n_receptors: int = 0,
                 group_index: int | None = None):
        super().__init__(model)
        self.name, self.kind, self.x_range = name, kind, tuple(x_range)
        self.n_receptors, self.group_index = int(n_receptors), group_index

    @property
    def occupancy(self) -> torch.Tensor:
        """Current fraction of this cell's receptors bound, per world ``[W]``."""
        if self.group_index is None or self.n_receptors == 0:
            return torch.zeros(self.model.W, device=self.model.device)
        return self.model.bound_per_group()[:, self.group_index] / self.n_receptors

    @property
    def mean_occupancy(self) -> float:
        return float(self.occupancy.mean())


class DosingSchedule(mesa.Agent):
    """Repeated dosing: ``dose[w]`` ligand molecules every ``interval[w]`` from
    ``first_dose[w]``, at most ``n_max[w]`` doses; administers by activating the
    pre-allocated ligand slots of each due dose."""

    def __init__(self, model, first_dose: torch.Tensor, interval: torch.Tensor, dose: torch.Tensor,
                 n_max: torch.Tensor):
        super().__init__(model)
        self.first_dose, self.interval, self.dose = first_dose, interval, dose
        self.n_max = torch.as_tensor(n_max, device=interval.device).long().expand_as(interval)
        self._next = -math.inf  # earliest time any world's next dose is due

    def doses_due(self, t: float) -> torch.Tensor:
        """Number of doses given by time ``t`` in each world ``[W]``."""
        eps = 1e-9 * max(1.0, abs(t))
        n = torch.floor((t - self.first_dose + eps) / self.interval) + 1
        n = torch.where(t + eps >= self.first_dose, n, torch.zeros_like(n))
        return torch.minimum(n.clamp_min(0).long(), self.n_max)

    def step(self):
        t = self.model.time
        if t + 1e-9 * max(1.0, abs(t)) < self._next:
            return  # no world has a dose due: skip the slot update
        n = self.doses_due(t)
        self.model._administer(n, self.dose)
        nxt = torch.where(n < self.n_max, self.first_dose + n * self.interval, torch.full_like(self.interval, math.inf))
        self._next = float(nxt.min()) if nxt.numel() else math.inf


# ============================================================================ molecular twin
def doses_that_fit(first: float, interval: float, t_last: float) -> int:
    """Doses at ``first, first + interval, ...`` that fall at or before ``t_last`` (the last step's time)."""
    return max(int(math.floor((t_last - first + 1e-9) / interval)) + 1, 0)


class MolecularTwin(Twin):
    """Brownian dynamics + Doi reactions of ligand, target and off-target in W worlds."""

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
        self.k_on_t = self._param("k_on_target", k_on_target)
        self.k_off_t = self._param("k_off_target", k_off_target)
        self.k_on_o = self._param("k_on_offtarget", k_on_offtarget)
        self.k_off_o = self._param("k_off_offtarget", k_off_offtarget)
        self.k_el = self._param("k_el", k_el)
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
        self.group = torch.full((N,), -1, dtype=torch.long, device=dev)
        self.group[: self.n_t] = grp
        self.pid = torch.arange(N, device=dev)
        lig = torch.arange(self.n_lig, device=dev)
        self.lig_dose = lig // max(max_dose, 1)
        self.lig_k = lig % max(max_dose, 1)
        # noise id of each slot: independent of max_dose and n_dose_slots (module docstring)
        self.nid = torch.cat((self.pid[: self.lig0], self.lig0 + self.lig_dose * LIGAND_ID_STRIDE + self.lig_k))
        self.rep = self.worlds.replication

        # ---- initial state: receptors uniformly in their cell's slab, off-targets anywhere
        u = self._uniform(Stream.PLACEMENT, self.nid[None, :, None], 0, torch.arange(3, device=dev)[None, None, :])
        xlo = torch.zeros(N, dtype=self.dtype, device=dev)
        xhi = torch.ones(N, dtype=self.dtype, device=dev)
        for g, c in enumerate(cells):
            m = self.group == g
            xlo[m], xhi[m] = float(c[2]), float(c[3])
        frac = u.clone()
        frac[..., 0] = xlo + (xhi - xlo) * u[..., 0]
        self.pos = K.wrap(frac * self.box, self.box)
        self.spawn_pos = self.pos[:, self.lig0:].clone()  # where each ligand appears when dosed
        sp = torch.zeros((W, N), dtype=torch.int8, device=dev)
        sp[:, : self.n_t] = Species.TARGET
        sp[:, self.n_t: self.lig0] = Species.OFFTARGET
        self.species = sp
        self.partner = torch.full((W, N), -1, dtype=torch.long, device=dev)
        self.D_table = torch.tensor([0, D_target, D_offtarget, D_ligand, D_target, D_offtarget, 0, 0],
                                    dtype=self.dtype, device=dev)
        self.dose_count = dose_n.long()
        self.force = None
        # per-step constants: Brownian step scale sqrt(2 D dt) and D dt (force term) by species,
        # unbinding probabilities, and the noise-key prefixes (hashed once; kernels.key_prefix)
        self._bscale = torch.sqrt(2.0 * self.D_table * self.dt)
        self._dtD = self.D_table * self.dt
        self._p_off_t = -torch.expm1(-self.k_off_t * self.dt)
        self._p_off_o = -torch.expm1(-self.k_off_o * self.dt)
        self._clears = bool((self.k_el > 0).any())
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
            self._reach = K.reach_table(self.pos, rec, self.box, self.R)
        self._pref_b = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.BROWNIAN, self.nid[None, :])
        self._pref_r = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.REACTION, self.nid[None, :])
        self._pref_p = K.key_prefix(self.worlds.seed, self.rep[:, None], Stream.PLACEMENT, self.nid[None, :])
        self._unbind_draws = torch.arange(3, 6, device=dev)[None, :]
        self.n_cleared = torch.zeros(W, dtype=torch.long, device=dev)
        self.n_bind_events = torch.zeros(W, dtype=torch.long, device=dev)
        self.n_unbind_events = torch.zeros(W, dtype=torch.long, device=dev)
        self.doses_given = torch.zeros(W, dtype=torch.long, device=dev)
        self._rec: list[tuple] = []

        if self.schedule is not None:  # the one of an earlier read
            self.schedule.remove()
        self.schedule = DosingSchedule(self, first, interval, dose_n, n_max)
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "time": lambda m: m.time,
                "target_occupancy": lambda m: float(m.target_occupancy().mean()),
                "offtarget_occupancy": lambda m: float(m.offtarget_occupancy().mean()),
                "free_ligand_uM": lambda m: float(_uM(m.populations["ligand"].count.double().mean(), m.box ** 3)),
            },
            agenttype_reporters={Compartment: {"occupancy": "mean_occupancy"}},
        ) if self._collect else None
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
        p = int(self.partner[world, slot])
        g = int(self.group[slot])
        return ParticleView(world, slot, Species(int(self.species[world, slot])).name,
                            tuple(self.pos[world, slot].tolist()), None if p < 0 else p % self.N,
                            self.group_names[g] if g >= 0 else None)

    def bound_per_group(self) -> torch.Tensor:
        b = (self.species[:, : self.n_t] == Species.TARGET_COMPLEX).to(self.dtype)
        return b @ self.group_onehot  # [W, G]

    def target_occupancy(self) -> torch.Tensor:
        return self.bound_per_group().sum(1) / max(self.n_t, 1)

    def offtarget_occupancy(self) -> torch.Tensor:
        b = (self.species[:, self.n_t: self.lig0] == Species.OFFTARGET_COMPLEX).sum(1)
        return b.to(self.dtype) / max(self.n_o, 1)

    # ------------------------------------------------------------------ dosing
    def _administer(self, n_due: torch.Tensor, dose_count: torch.Tensor):
        if self.n_lig == 0:
            return
        sl = self.species[:, self.lig0:]
        new = (sl == Species.EMPTY) & (self.lig_dose[None, :] < n_due[:, None]) & \
              (self.lig_k[None, :] < self.dose_count[:, None])
        self.species[:, self.lig0:] = torch.where(new, torch.full_like(sl, Species.LIGAND), sl)
        self.pos[:, self.lig0:] = torch.where(new[..., None], self.spawn_pos, self.pos[:, self.lig0:])
        self.doses_given = torch.maximum(self.doses_given, torch.where(self.dose_count > 0, n_due, 0))

    # ------------------------------------------------------------------ step
    def step(self):
        W, N, dev = self.W, self.N, self.device
        s = self.step_index
        take = torch.Tensor.index_select  # gathers: several times faster on CPU than ``x[idx]``
        self.schedule.step()
        sp = self.species
        # --- Brownian move (complexes move with their receptor; parked ligands have D = 0).
        # Noise: three normals per particle from one keyed hashing pass (kernels.keyed_normals3),
        # only for the slots from the first species block that can move (immobile receptors would
        # get dx = 0 · ξ = 0 exactly: skipping them changes no bit).
        a = self._mobile_from
        spm = sp[:, a:]
        scale = take(self._bscale, 0, spm.reshape(-1).long()).view(W, N - a, 1)
        dx = scale * K.keyed_normals3(self._pref_b[:, a:], s, self.dtype)
        if self.force is not None:
            dx = dx + take(self._dtD, 0, spm.reshape(-1).long()).view(W, N - a, 1) * self.force[:, a:]
        self.pos[:, a:] = K.wrap(self.pos[:, a:] + dx, self.box)
        # --- reactions, all decided on the pre-reaction state (on the moved positions)
        flat_sp = sp.view(-1)
        free_lig = sp == Species.LIGAND
        free_rec = (sp >= Species.TARGET) & (sp <= Species.OFFTARGET)
        # the pair search queries from the smaller set (fewer cell lookups); the pair set is the same
        if self._reach is not None:
            gi, gj, _, _ = K.reach_pairs(self.pos, free_lig, free_rec, self._reach, self.box, self.R, self.lig0)
        elif int(free_rec.sum()) < int(free_lig.sum()):
            gj, gi, _, _ = K.cell_pairs(self.pos, free_rec, free_lig, self.box, self.R, self.cell_size)
        else:
            gi, gj, _, _ = K.cell_pairs(self.pos, free_lig, free_rec, self.box, self.R, self.cell_size)
        pref_r = self._pref_r.view(-1)
        if gi.numel():
            w = torch.div(gi, N, rounding_mode="floor")
            is_t = take(flat_sp, 0, gj) == Species.TARGET
            rate = torch.where(is_t, take(self.k_on_t, 0, w), take(self.k_on_o, 0, w))
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
        partner = self.partner.view(-1)
        pos = self.pos.view(-1, 3)
        if self.n_lig and self._clears:  # clearance of free ligand (draw 0), not the ones binding now
            h_l = K.advance(self._pref_r[:, nr:], s)
            ul = K.bits_uniform(K.advance(h_l, 0), self.dtype)
            clear_flat = torch.zeros(W, N, dtype=torch.bool, device=dev)
            clear_flat[:, nr:] = free_lig[:, nr:] & K.bernoulli(self.k_el[:, None], self.dt, ul)
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
        self.species = new_sp.view(W, N)
        # --- forces for the next step (soft repulsion among macromolecules)
        if self.rep_k > 0:
            macro = (self.species >= 1) & (self.species != Species.LIGAND) & (self.species <= 5)
            self.force = K.soft_repulsion_pair_forces(self.pos, macro, self.box, self.rep_r, self.rep_k)
        self.step_index += 1
        if self.step_index % self.record_every == 0 or self.step_index == self.n_steps:
            self._record()

    # ------------------------------------------------------------------ observation
    def _record(self):
        self.check_finite("position", self.pos, self.species != Species.EMPTY,
                          "Check the diffusion coefficients, dt and forces of that world (repulsion_k, radius): "
                          "a step that large can throw particles to infinity.")
        bg = self.bound_per_group()
        n_oc = (self.species[:, self.n_t: self.lig0] == Species.OFFTARGET_COMPLEX).sum(1)
        n_lig = (self.species == Species.LIGAND).sum(1)
        self._rec.append((self.time, bg, n_oc, n_lig))
        if self.datacollector is not None:
            self.datacollector.collect(self)

    def timeseries(self):
        """``(t [T], bound_per_group [T,W,G], offtarget_complexes [T,W], free_ligand [T,W])``."""
        t = torch.tensor([r[0] for r in self._rec], dtype=torch.float64)
        bg = torch.stack([r[1] for r in self._rec]).double().cpu()
        oc = torch.stack([r[2] for r in self._rec]).double().cpu()
        fl = torch.stack([r[3] for r in self._rec]).double().cpu()
        return t, bg, oc, fl

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
            "free_ligand_uM_mean": _uM(tmean(fl).numpy(), V),
            "doses_given": self.doses_given.cpu().numpy(),
            "selectivity_ratio": selectivity.numpy(),
            "ligand_cleared": self.n_cleared.cpu().numpy(),
        })
        ts = pd.DataFrame({
            "world": np.repeat(np.arange(W)[None, :], len(t), 0).ravel(),
            "time": np.repeat(t.numpy()[:, None], W, 1).ravel(),
            "target_occupancy": occ.numpy().ravel(),
            "offtarget_occupancy": ooc.numpy().ravel(),
            "target_complexes": bg.sum(2).numpy().ravel(),
            "offtarget_complexes": oc.numpy().ravel(),
            "free_ligand": fl.numpy().ravel(),
            "free_ligand_uM": _uM(fl.numpy().ravel(), V),
        })
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


# ============================================================================ LJ fluid
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
        self.T = self._param("temperature", temperature)
        self.equilibration, self.record_every = float(equilibration), max(1, int(record_every))
        self.pid = torch.arange(N, device=dev)
        self._key = K.key_prefix(worlds.seed, self.worlds.replication[:, None], Stream.BROWNIAN, self.pid[None, :])
        self._links = K.draw_links(6, dev)
        self._step_t = torch.zeros((), dtype=torch.int64, device=dev)
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
        self.pos = K.wrap(pos, self.box)
        v = noise.normal(worlds.seed, rep, Stream.PLACEMENT, self.pid[None, :, None], 0, d3, dtype=dtype, device=dev)
        v = v - v.mean(1, keepdim=True)
        t_now = (v * v).sum((1, 2)) / (3 * (N - 1))
        self.vel = v * torch.sqrt(self.T / t_now)[:, None, None]
        self.capacity = K.verlet_capacity(self.rho, self.rc + self.skin)
        self._nbr = torch.full((W, N, self.capacity), -1, dtype=torch.long, device=dev)
        self._built_at = self.pos.clone()
        self._drift = torch.zeros(W, dtype=dtype, device=dev)  # largest displacement since the list was built
        self._drift_checked = torch.zeros(W, dtype=dtype, device=dev)  # ... at the last check
        self.rebuilds = torch.zeros(W, dtype=torch.long, device=dev)
        self.replays = 0
        self._built_step = [0] * W
        self._rebuild(list(range(W)))
        self.force, self.epot, self.virial, self.npairs = self._forces(self.pos)
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
        return K.lj_forces(pos, self._nbr, self.box, self.rc, shift=self.shift)

    def _rebuild(self, worlds: list[int]):
        """New Verlet lists for ``worlds`` at their current positions."""
        if not worlds:
            return
        N, idx = self.N, torch.tensor(worlds, device=self.device)
        nbr, needed = K.verlet_list(self.pos[idx], self.alive[idx], self.box, self.rc + self.skin, self.capacity)
        if needed > self.capacity:
            grown = -(-needed // 16) * 16
            warnings.warn(f"LJ neighbour list: a particle has {needed} neighbours within cutoff + skin, more than "
                          f"the {self.capacity} slots planned from the density; widened to {grown} (a denser "
                          f"region than a fluid's: a world's rounding now depends on the batch it ran in)",
                          stacklevel=3)
            self._nbr = torch.cat((self._nbr, self._nbr.new_full((self.W, N, grown - self.capacity), -1)), 2)
            self.capacity = grown
        if nbr.shape[2] < self.capacity:
            nbr = torch.cat((nbr, nbr.new_full((len(worlds), N, self.capacity - nbr.shape[2]), -1)), 2)
        # the list numbers particles within the sub-batch: w_sub * N + j -> w * N + j
        shift = ((idx - torch.arange(len(worlds), device=self.device)) * N)[:, None, None]
        self._nbr[idx] = torch.where(nbr >= 0, nbr + shift, nbr)
        self._built_at[idx] = self.pos[idx]
        self._drift[idx] = 0
        self._drift_checked[idx] = 0
        self.rebuilds[idx] += 1
        for w in worlds:
            self._built_step[w] = self.step_index

    def _save(self):
        return (self.step_index, len(self._rec), self.pos.clone(), self.vel.clone(), self.force.clone(),
                self.epot.clone(), self.virial.clone(), self.npairs.clone(), self._drift.clone())

    def _restore(self, snap):
        self.step_index, n_rec = snap[0], snap[1]
        self._step_t.fill_(self.step_index)
        del self._rec[n_rec:]
        self.pos, self.vel, self.force, self.epot, self.virial, self.npairs, self._drift = (t.clone() for t in snap[2:])

    def step(self):
        self._advance()
        if self.step_index % self.check_every == 0 or self.step_index >= self.n_steps:
            self._check_lists()

    def _check_lists(self):
        """Replay the period since the last check for worlds whose list went stale, then rebuild
        the lists that would go stale before the next check (see the class docstring)."""
        half, start = 0.5 * self.skin, self._snapshot[0]
        while True:
            drift = self._drift.tolist()  # the host read of this period
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
                    d = self._drift.tolist()
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
        self._drift_checked = self._drift.clone()
        self._snapshot = self._save()

    def _advance(self):
        (self.pos, self.vel, self.force, self.epot, self.virial, self.npairs, self._drift) = self._step_fn(
            self.pos, self.vel, self.force, self._nbr, self._built_at, self._drift, self.T, self._key,
            self._step_t, self._links, dt=self.dt, gamma=self.gamma, box=self.box, cutoff=self.rc, shift=self.shift)
        self.step_index += 1
        self._step_t += 1  # the step counter lives on the device: no transfer per step
        if self.step_index % self.record_every == 0 or self.step_index == self.n_steps:
            self._record()

    def observables(self):
        """Instantaneous per-world ``(U/N incl. tail, P incl. tail, T_kin, H/N of the dynamics)``."""
        N, V = self.N, self.box ** 3
        ke = 0.5 * (self.vel * self.vel).sum((1, 2))
        t_kin = 2 * ke / (3 * (N - 1))
        u_unshift = self.epot / N
        if self.shift:  # report the truncated, unshifted energy: add back V(rc) per pair inside rc
            sc6 = self.rc ** -6
            u_unshift = u_unshift + self.npairs * 4.0 * (sc6 * sc6 - sc6) / N
        pressure = (2 * ke + self.virial) / (3 * V) + self.p_tail
        return u_unshift, pressure, t_kin, (ke + self.epot) / N

    def _record(self):
        self.check_finite("position", self.pos, self.alive,
                          "Lower dt (velocity Verlet needs dt well below the collision time, ~0.005 in LJ units) "
                          "or check the initial configuration for overlaps.")
        u, p, t, h = self.observables()
        self._rec.append((self.time, u, p, t, h))

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
