"""Molecular scenarios: ``molecular`` (drug, target, off-target in a cell volume)
and ``lj_fluid`` (Lennard-Jones fluid for physics validation).

Time step and horizon. The top-level ``dt_s`` / ``horizon_s`` are shared with
the traffic twin (1 s / 3600 s) and meaningless at molecular scale, so each
molecular scenario carries its own ``dt`` and ``horizon`` in the scenario's
time unit (molecular: µs; lj_fluid: reduced LJ time τ). They win when set
(the shipped YAMLs set them); set them to ``null`` to fall back to the
top-level ``dt_s`` / ``horizon_s`` read in the same unit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import torch
from omegaconf import OmegaConf

from twins.core.errors import check

from . import scenario


@dataclass
class CellSpec:
    """A cell carrying target receptors: a slab ``x_from..x_to`` (fractions of the box edge)."""

    name: str = "cell"
    receptors: int = 50
    x_from: float = 0.0
    x_to: float = 1.0


@dataclass
class MolecularScenario:
    kind: str = "molecular"
    name: str = "molecular"  # label of runs and figures
    dt: Optional[float] = 0.01  # µs (overrides top-level dt_s)
    horizon: Optional[float] = 20.0  # µs (overrides top-level horizon_s)
    box: float = 60.0  # nm, periodic cube
    reaction_radius: float = 2.0  # nm (Doi)
    cell_size: Optional[float] = None  # nm; automatic (>= reaction radius) when null
    cells: List[CellSpec] = field(default_factory=lambda: [CellSpec("high", 60, 0.0, 0.5),
                                                           CellSpec("low", 20, 0.5, 1.0)])
    n_offtarget: int = 40
    D_target: float = 0.5  # nm²/µs (= µm²/s)
    D_offtarget: float = 5.0
    D_ligand: float = 20.0
    k_on_target: float = 20.0  # 1/µs, Doi microscopic rate within the reaction radius
    k_off_target: float = 0.2  # 1/µs
    k_on_offtarget: float = 5.0
    k_off_offtarget: float = 2.0
    dose: float = 150.0  # molecules per dose
    max_dose: Optional[int] = None  # per-dose slot capacity (default: the largest dose of any world)
    first_dose: float = 0.0  # µs
    dosing_interval: float = 10.0  # µs
    n_doses: int = 0  # 0: as many as fit in the horizon
    k_el: float = 0.1  # 1/µs clearance of free ligand
    repulsion_k: float = 0.0  # kT/nm², soft repulsion among macromolecules (0 = ideal)
    repulsion_radius: float = 4.0  # nm
    therapeutic_window: List[float] = field(default_factory=lambda: [0.5, 0.9])
    record_every: int = 10  # steps between time-series records


@dataclass
class LJFluidScenario:
    kind: str = "lj_fluid"
    name: str = "lj_fluid"  # label of runs and figures
    dt: Optional[float] = 0.005  # τ (overrides top-level dt_s)
    horizon: Optional[float] = 25.0  # τ (overrides top-level horizon_s)
    n_particles: int = 500
    density: float = 0.7  # ρσ³
    temperature: float = 2.0  # kT/ε
    cutoff: float = 3.0  # σ
    gamma: float = 1.0  # Langevin friction (1/τ); 0 = NVE
    shift: bool = False  # shift the potential to 0 at the cutoff
    lattice: str = "fcc"  # fcc | random
    equilibration: float = 0.25  # fraction of the horizon left out of averages
    record_every: int = 10
    skin: Optional[float] = None  # σ, Verlet-list buffer beyond the cutoff; None: 0.3 (less in a small box)
    neighbor_check_every: Optional[int] = None  # steps between neighbour-list checks; None: from dt, skin, T


def _time(cfg, sc):
    dt = sc.dt if sc.get("dt") is not None else cfg.dt_s
    horizon = sc.horizon if sc.get("horizon") is not None else cfg.horizon_s
    check(dt > 0, "scenario.dt", dt, "a positive time step")
    n = horizon / dt
    check(horizon > 0 and abs(n - round(n)) < 1e-6 * max(1.0, n), "scenario.horizon", horizon,
          f"a positive whole multiple of dt={dt:g}", f"Try horizon={max(1, round(n)) * dt:g}.")
    return float(dt), float(horizon)


@scenario("molecular", MolecularScenario)
def build_molecular(cfg, worlds, device, dtype):
    from twins.molecular.model import MolecularTwin

    sc = cfg.scenario
    dt, horizon = _time(cfg, sc)
    cells = [(c.name, int(c.receptors), float(c.x_from), float(c.x_to)) for c in sc.cells]
    return MolecularTwin(
        worlds, dt=dt, horizon=horizon, device=device, dtype=dtype, box=sc.box,
        reaction_radius=sc.reaction_radius, cell_size=sc.cell_size, cells=cells, n_offtarget=sc.n_offtarget,
        D_target=sc.D_target, D_offtarget=sc.D_offtarget, D_ligand=sc.D_ligand,
        k_on_target=sc.k_on_target, k_off_target=sc.k_off_target, k_on_offtarget=sc.k_on_offtarget,
        k_off_offtarget=sc.k_off_offtarget, dose=sc.dose, max_dose=sc.max_dose, first_dose=sc.first_dose,
        dosing_interval=sc.dosing_interval, n_doses=sc.n_doses, k_el=sc.k_el, repulsion_k=sc.repulsion_k,
        repulsion_radius=sc.repulsion_radius, therapeutic_window=list(sc.therapeutic_window),
        record_every=sc.record_every)


@scenario("lj_fluid", LJFluidScenario)
def build_lj_fluid(cfg, worlds, device, dtype):
    from twins.molecular.lj import LJFluidTwin

    sc = cfg.scenario
    dt, horizon = _time(cfg, sc)
    return LJFluidTwin(
        worlds, dt=dt, horizon=horizon, device=device, dtype=dtype if dtype is not None else torch.float64,
        n_particles=sc.n_particles, density=sc.density, temperature=sc.temperature, cutoff=sc.cutoff,
        gamma=sc.gamma, shift=sc.shift, lattice=sc.lattice, equilibration=sc.equilibration,
        record_every=sc.record_every, skin=sc.skin, check_every=sc.neighbor_check_every,
        compile=OmegaConf.select(cfg, "compute.compile", default=None))
