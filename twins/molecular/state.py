"""The molecular twins' state and static tables as typed records, with their units.

Tensors are ``[W, N, ...]`` (W worlds, N particle slots) unless said. An index that names another particle
(``partner``, the neighbour list) is flattened over the batch, ``w * N + slot`` (-1: none).

Drug meets target (:class:`~twins.molecular.model.MolecularTwin`; lengths nm, times µs, energies kT):

- :class:`ParticleState`: what changes as particles move, bind, unbind and are dosed or cleared;
- :class:`SlotTable`: the slot layout, fixed for a run (receptor groups, noise ids, the ligand slots' doses);
- :class:`Kinetics`: each world's rates.

The Lennard-Jones fluid (:class:`~twins.molecular.lj.LJFluidTwin`; reduced units σ = ε = m = k_B = 1, time τ):

- :class:`LJState`: what :func:`twins.molecular.kernels.lj_step` reads and returns;
- :class:`VerletList`: each world's neighbour list and where it was built;
- :class:`NoiseKeys`: the step's keyed-noise inputs;
- :class:`LJSettings`: the step's settings, fixed for a run.

The records are plain containers: the kernels stay pure functions of them (no methods that compute).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from twins.core.records import Columns

Tensor = torch.Tensor


# ----------------------------------------------------------------------------- drug meets target
@dataclass
class ParticleState(Columns):
    """The particle table of every world (slots: targets, off-targets, then ligands by dose; model docstring)."""

    pos: Tensor  # [W, N, 3] nm, wrapped into [0, box)
    species: Tensor  # [W, N] int8: agents.Species code (EMPTY until dosed, CLEARED after)
    partner: Tensor  # [W, N] int64: the complex partner, w * N + slot (-1: free)
    force: Tensor | None = None  # [W, N, 3] kT/nm: soft repulsion for the next step (None: no forces)


@dataclass(frozen=True)
class SlotTable(Columns):
    """What each slot is, fixed for a run (it changes only when the worlds' parameters are read again)."""

    group: Tensor  # [N] int64: a target receptor's expression group (cell) index (-1: not a target)
    noise_id: Tensor  # [N] int64: the particle id that keys its noise (independent of the layout)
    ligand_dose: Tensor  # [n_ligand] int64: the dose each ligand slot belongs to (0 = first)
    ligand_index: Tensor  # [n_ligand] int64: its index within that dose
    spawn_pos: Tensor  # [W, n_ligand, 3] nm: where each ligand appears when dosed


@dataclass(frozen=True)
class Kinetics(Columns):
    """Each world's rates ``[W]`` (1/µs): ``worlds.params``, else the scenario's value."""

    k_on_target: Tensor  # Doi microscopic binding rate of ligand + target inside the reaction radius
    k_off_target: Tensor  # unbinding of the target complex
    k_on_offtarget: Tensor  # as k_on_target, for the off-target
    k_off_offtarget: Tensor  # as k_off_target, for the off-target complex
    k_el: Tensor  # first-order clearance of free ligand


# ----------------------------------------------------------------------------- Lennard-Jones fluid
@dataclass
class LJState(Columns):
    """The fluid's state after a step (reduced units)."""

    pos: Tensor  # [W, N, 3] σ, wrapped into [0, box)
    vel: Tensor  # [W, N, 3] σ/τ
    force: Tensor  # [W, N, 3] ε/σ at pos
    epot: Tensor  # [W] ε: pair energy (shifted by -V(cutoff) per pair when the potential is)
    virial: Tensor  # [W] ε: Σ over pairs of r_ij · f_ij
    npairs: Tensor  # [W] pairs inside the cutoff (in the float dtype)
    drift: Tensor  # [W] σ: largest displacement of any particle since the world's list was built


@dataclass
class VerletList(Columns):
    """Each world's Verlet list (radius cutoff + skin), rebuilt by the twin when a world needs it."""

    nbr: Tensor  # [W, N, capacity] int64: neighbours as w * N + j, then -1
    built_at: Tensor  # [W, N, 3] σ: positions when the world's list was built


@dataclass
class NoiseKeys:
    """The keyed Brownian noise of a step (:func:`twins.molecular.kernels.keyed_normals`)."""

    prefix: Tensor  # [W, N] int64: each particle's key prefix (kernels.key_prefix)
    step: Tensor  # 0-d int64: the step index (on the device: no transfer per step)
    links: Tensor  # [6] int64: kernels.draw_links(6)


@dataclass(frozen=True)
class LJSettings:
    """The LJ step's settings, fixed for a run (plain numbers: constants to torch.compile)."""

    dt: float  # τ per step
    gamma: float  # 1/τ: Langevin friction (0: NVE)
    box: float  # σ: the periodic box's edge
    cutoff: float  # σ: where the potential is truncated
    shift: bool = False  # the potential shifted to 0 at the cutoff
