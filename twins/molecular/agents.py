"""The molecular twin's Mesa agents, over its tensor state (:class:`~twins.molecular.model.MolecularTwin`).

Compartments and the dosing schedule are Mesa agents of the model. A species is a :class:`SpeciesPopulation`
(one agent for all worlds, ``count`` per world); its particles in one world are a ``mesa.agent.AgentSet`` of
:class:`Particle` agents (``population.in_world(k)``, ``twin.particles(k)``), built when asked for: each reads,
and for its position writes, that world's columns of the twin's state (``twin.state``, a
:class:`~.state.ParticleState`). ``step()`` builds no per-particle object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import mesa
import torch


class Species(IntEnum):
    EMPTY = 0  # slot not (yet) used
    TARGET = 1  # free target receptor
    OFFTARGET = 2  # free off-target protein
    LIGAND = 3  # free ligand
    TARGET_COMPLEX = 4  # target + ligand (the receptor's slot)
    OFFTARGET_COMPLEX = 5  # off-target + ligand
    BOUND_LIGAND = 6  # ligand parked inside a complex
    CLEARED = 7  # ligand eliminated (never reused)


@dataclass(frozen=True)
class ParticleView:
    """Read-only snapshot of one particle of one world."""

    world: int
    slot: int
    species: str
    position: tuple
    partner: int | None
    group: str | None


class Particle(mesa.Agent):
    """One particle (slot ``slot``) of world ``world``: its attributes are that world's tensor columns, read
    live. Not registered with the model (``model.agents`` keeps the compartments, the dosing schedule and the
    species populations); the twin keeps one per particle asked for, so the same particle is the same agent."""

    def __init__(self, model, world: int, slot: int):
        # no mesa.Agent.__init__: it would register the particle with the model
        self.model, self.world, self.slot = model, int(world), int(slot)
        self.unique_id = self.world * model.N + self.slot

    @property
    def species(self) -> Species:
        return Species(int(self.model.state.species[self.world, self.slot]))

    @property
    def position(self) -> tuple:
        return tuple(self.model.state.pos[self.world, self.slot].tolist())

    @position.setter
    def position(self, xyz) -> None:
        pos = self.model.state.pos
        pos[self.world, self.slot] = torch.remainder(torch.as_tensor(xyz, dtype=pos.dtype, device=pos.device),
                                                     self.model.box)

    @property
    def partner(self) -> int | None:
        """Slot of the complex partner in the same world (None when free)."""
        p = int(self.model.state.partner[self.world, self.slot])
        return None if p < 0 else p % self.model.N

    @property
    def group(self) -> str | None:
        """Expression group (cell) of a target receptor, else None."""
        g = int(self.model.slots.group[self.slot])
        return self.model.group_names[g] if g >= 0 else None

    def view(self) -> ParticleView:
        return self.model.particle(self.world, self.slot)

    def remove(self) -> None:
        raise TypeError("a particle is a view of the twin's tensors; it cannot be removed")


class SpeciesPopulation(mesa.Agent):
    """All particles of some species (``codes``), in every world.

    ``count`` is ``[W]``; ``in_world(k)`` is the Mesa agent set of world ``k``'s particles of this species;
    ``members(k)`` their slots and ``view(k, slot)`` read-only snapshots.
    """

    def __init__(self, model, name: str, codes: tuple[int, ...]):
        super().__init__(model)
        self.name, self.codes = name, tuple(int(c) for c in codes)

    def mask(self) -> torch.Tensor:
        return species_mask(self.model.state.species, self.codes)

    @property
    def count(self) -> torch.Tensor:
        return self.mask().sum(1)

    def members(self, world: int) -> list[int]:
        return torch.nonzero(species_mask(self.model.state.species[world], self.codes)).flatten().tolist()

    def in_world(self, world: int) -> mesa.agent.AgentSet:
        """This species' particles in world ``world``, as :class:`Particle` agents."""
        return self.model.particles(world, self.codes)

    def view(self, world: int, slot: int) -> ParticleView:
        return self.model.particle(world, slot)

    def __len__(self) -> int:
        return int(self.mask().sum())


def species_mask(species: torch.Tensor, codes) -> torch.Tensor:
    """Where ``species`` (any shape) holds one of ``codes``."""
    m = torch.zeros_like(species, dtype=torch.bool)
    for c in codes:
        m |= species == int(c)
    return m


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
        t = self.model.time_s
        if t + 1e-9 * max(1.0, abs(t)) < self._next:
            return  # no world has a dose due: skip the slot update
        n = self.doses_due(t)
        self.model.administer(n, self.dose)
        nxt = torch.where(n < self.n_max, self.first_dose + n * self.interval, torch.full_like(self.interval, math.inf))
        self._next = float(nxt.min()) if nxt.numel() else math.inf
