"""``signal_timing``: retime fixed-time signal programs — cycle length, green split, offsets.

The baseline is the scenario's own programs. A parameter vector changes, at
the chosen junctions (``junctions``; default: every signalized junction):

- ``cycle_s`` — the cycle length. Yellow and all-red phases keep their
  durations (the lost time); the green phases share what remains, in the
  baseline's proportions unless ``green_split`` is set;
- ``green_split`` — the share of the effective green given to the first green
  phase (north–south in the generated scenarios); only for two-phase programs;
- ``offset_s`` / ``offset_step_s`` — the offset of the first chosen junction and
  the increment per further junction in the order of ``junctions`` (a green
  wave along a corridor when the step is the travel time between them).

Every green phase keeps at least ``min_green_s`` (pedestrian crossing time).
Each may be set shared (``cycle_s=90``) or per junction (``J0_2.cycle_s=90`` in
a parameter vector, ``per_junction: {J0_2: {cycle_s: 90}}`` in config).
A parameter equal to the baseline leaves the program bit-identical.

Writes ``signal_durations`` [W, P, K] and ``signal_offsets`` [W, P] (seconds)
into ``twin.worlds.params``, which the traffic twin reads per world.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from .base import Intervention, Parameter, register

SHARED = ("cycle_s", "green_split", "offset_s", "offset_step_s")
PER_JUNCTION = ("cycle_s", "green_split", "offset_s")
_SIG_GREEN, _SIG_YELLOW, _SIG_GREEN_MINOR = 0, 1, 3  # twins.traffic.compiled codes


@dataclass
class SignalTimingConfig:
    name: str = "signal_timing"
    junctions: Optional[List[str]] = None  # signal program ids to retime; null: all signalized junctions
    cycle_s: Optional[float] = None  # null: keep each junction's cycle
    green_split: Optional[float] = None  # share of effective green for the first (NS) green phase; null: keep
    offset_s: Optional[float] = None  # offset of the first chosen junction; null (and no step): keep offsets
    offset_step_s: Optional[float] = None  # added per further junction (green wave); null: 0 when offset_s set
    per_junction: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {J0_1: {cycle_s: 90}}
    min_green_s: float = 7.0  # no green phase shorter than this (pedestrian crossing)
    max_cycle_s: float = 180.0  # upper bound of the cycle parameter


@dataclass(frozen=True)
class _Program:
    """A baseline program as the intervention sees it."""

    index: int
    id: str
    durations: torch.Tensor  # [K] float64 (zero padded)
    green: list[int]  # phase indices of green phases
    fixed: list[int]  # yellow / all-red phases (kept)
    offset: float

    @property
    def cycle(self) -> float:
        return float(self.durations.sum())

    @property
    def lost(self) -> float:
        return float(self.durations[self.fixed].sum()) if self.fixed else 0.0

    @property
    def split(self) -> float | None:
        if len(self.green) != 2:
            return None
        g = self.durations[self.green]
        return float(g[0] / g.sum())


def programs_of(twin) -> list[_Program]:
    """The scenario's signal programs, with green and fixed (yellow / all-red) phases told apart."""
    comp = twin.compiled
    dur = comp.phase_durations.detach().cpu().to(torch.float64)
    code = comp.phase_code.detach().cpu()
    n_links = torch.bincount(comp.link_program.cpu(), minlength=len(comp.program_ids))
    out = []
    for p, pid in enumerate(comp.program_ids):
        L = int(n_links[p])
        green, fixed = [], []
        for k in range(dur.shape[1]):
            if dur[p, k] <= 0:
                continue
            c = code[p, k, :L]
            if bool(((c == _SIG_GREEN) | (c == _SIG_GREEN_MINOR)).any()) and not bool((c == _SIG_YELLOW).any()):
                green.append(k)
            else:
                fixed.append(k)
        out.append(_Program(p, pid, dur[p].clone(), green, fixed, float(comp.program_offset[p])))
    return out


@register("signal_timing", SignalTimingConfig)
class SignalTiming(Intervention):
    """Fixed-time signal retiming: cycle, split, offsets; shared or per junction."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        c = self.cfg
        self.min_green_s = float(c.get("min_green_s", 7.0))
        self.max_cycle_s = float(c.get("max_cycle_s", 180.0))
        j = c.get("junctions", None)
        self.junction_ids = None if j is None else [str(x) for x in j]
        if self.min_green_s < 0:
            raise ConfigError("intervention.min_green_s", self.min_green_s, ">= 0 seconds")

    # --- parameter space ------------------------------------------------------------------------
    def selected(self, twin) -> list[_Program]:
        progs = programs_of(twin)
        if not progs:
            raise ConfigError("intervention", "signal_timing", "a scenario with signalized junctions",
                              f"scenario {getattr(twin.scenario, 'name', '?')!r} has no signal programs.")
        by_id = {p.id: p for p in progs}
        if self.junction_ids is None:
            return progs
        out = []
        for j in self.junction_ids:
            if j not in by_id:
                raise ConfigError("intervention.junctions", j, "signalized junction ids of the scenario",
                                  suggest(j, by_id))
            out.append(by_id[j])
        if not out:
            raise ConfigError("intervention.junctions", [], "at least one junction id (or null for all)")
        return out

    def _cycle_param(self, name: str, progs: list[_Program]) -> Parameter:
        low = max(p.lost + len(p.green) * self.min_green_s for p in progs)
        cycles = {p.cycle for p in progs}
        base = cycles.pop() if len(cycles) == 1 else None
        high = max([self.max_cycle_s, low] + [p.cycle for p in progs])
        worst = max(progs, key=lambda p: p.lost + len(p.green) * self.min_green_s)
        return Parameter(name, "float", low, high, "s", base,
                         doc=f"cycle length; at least {len(worst.green)} greens of min_green_s="
                             f"{self.min_green_s:g} s plus {worst.lost:g} s yellow/all-red at {worst.id}, "
                             f"at most max_cycle_s={self.max_cycle_s:g} s")

    def parameters(self, twin) -> list[Parameter]:
        progs = self.selected(twin)
        two_phase = all(p.split is not None for p in progs)
        splits = {p.split for p in progs}
        offs = [p.offset for p in progs]
        steps = {round(b - a, 9) for a, b in zip(offs, offs[1:])}
        hi_c = max([self.max_cycle_s] + [p.cycle for p in progs])
        out = [self._cycle_param("cycle_s", progs)]
        if two_phase:
            out.append(Parameter("green_split", "float", 0.05, 0.95, "share",
                                 splits.pop() if len(splits) == 1 else None,
                                 doc="share of the effective green for the first (NS) green phase"))
        out.append(Parameter("offset_s", "float", 0.0, hi_c, "s", offs[0], doc="offset of the first junction"))
        out.append(Parameter("offset_step_s", "float", -hi_c, hi_c, "s",
                             steps.pop() if len(steps) == 1 else (0.0 if len(progs) == 1 else None),
                             doc="offset added per further junction"))
        for p in progs:
            out.append(self._cycle_param(f"{p.id}.cycle_s", [p]))
            if p.split is not None:
                out.append(Parameter(f"{p.id}.green_split", "float", 0.05, 0.95, "share", p.split))
            out.append(Parameter(f"{p.id}.offset_s", "float", 0.0, max(self.max_cycle_s, p.cycle), "s", p.offset))
        return out

    def config_values(self) -> dict:
        c = self.cfg
        out = {k: c.get(k) for k in SHARED if c.get(k, None) is not None}
        for j, d in (c.get("per_junction", None) or {}).items():
            for k, v in d.items():
                out[f"{j}.{k}"] = v
        return out

    def validate(self, values: dict, twin) -> dict:
        values = super().validate(values, twin)
        for p, plan in zip(self.selected(twin), self._plans(values, twin)):
            self._durations(p, *plan[:2], values)  # raises on a green shorter than min_green_s
        return values

    # --- the plan -------------------------------------------------------------------------------
    def _plans(self, values: dict, twin) -> list[tuple]:
        """Per chosen program: (cycle or None, split or None, offset or None); None keeps the baseline."""
        progs = self.selected(twin)
        shared_off = "offset_s" in values or "offset_step_s" in values
        off0 = values.get("offset_s", progs[0].offset)
        step = values.get("offset_step_s", 0.0)
        plans = []
        for i, p in enumerate(progs):
            cyc = values.get(f"{p.id}.cycle_s", values.get("cycle_s"))
            spl = values.get(f"{p.id}.green_split", values.get("green_split"))
            off = values.get(f"{p.id}.offset_s")
            if off is None and shared_off:
                off = off0 + i * step
            plans.append((cyc, spl, off))
        return plans

    def _durations(self, p: _Program, cycle, split, values) -> torch.Tensor:
        d = p.durations
        same_cycle = cycle is None or float(cycle) == p.cycle
        same_split = split is None or (p.split is not None and float(split) == p.split)
        if same_cycle and same_split:
            return d  # the baseline program, bit for bit
        if split is not None and p.split is None:
            raise ConfigError("intervention.green_split", split, "unset for this junction",
                              f"junction {p.id!r} has {len(p.green)} green phases; green_split needs exactly 2.")
        cycle = p.cycle if cycle is None else float(cycle)
        G = cycle - p.lost
        need = p.lost + len(p.green) * self.min_green_s
        fld = "intervention.cycle_s" if f"{p.id}.cycle_s" not in values else f"intervention.{p.id}.cycle_s"
        if G < len(p.green) * self.min_green_s - 1e-9:
            raise ConfigError(fld, cycle, f">= {need:g} s at junction {p.id!r} ({len(p.green)} greens of "
                              f"min_green_s={self.min_green_s:g} s plus {p.lost:g} s yellow/all-red)")
        new = d.clone()
        if split is not None:
            g0 = G * float(split)
            greens = torch.tensor([g0, G - g0], dtype=torch.float64)
        else:
            base = d[p.green]
            greens = base * (G / float(base.sum()))
        if bool((greens < self.min_green_s - 1e-9).any()):
            lo, hi = self.min_green_s / G, 1 - self.min_green_s / G
            sfld = "intervention.green_split" if f"{p.id}.green_split" not in values \
                else f"intervention.{p.id}.green_split"
            raise ConfigError(sfld, split, f"a share in [{lo:.3f}, {hi:.3f}] at junction {p.id!r} with a "
                              f"{cycle:g} s cycle (each green >= min_green_s={self.min_green_s:g} s)")
        new[p.green] = greens
        return new

    def plan(self, values: dict | None, twin) -> tuple[torch.Tensor, torch.Tensor]:
        """``(durations [P, K], offsets [P])`` for one parameter vector (float64, CPU)."""
        comp = twin.compiled
        dur = comp.phase_durations.detach().cpu().to(torch.float64).clone()
        off = comp.program_offset.detach().cpu().to(torch.float64).clone()
        if not values:
            return dur, off
        progs = self.selected(twin)
        for p, (cyc, spl, o) in zip(progs, self._plans(values, twin)):
            dur[p.index] = self._durations(p, cyc, spl, values)
            if o is not None and float(o) != p.offset:
                off[p.index] = float(o)
        return dur, off

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        W = twin.W
        if len(values_per_world) != W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {W} worlds")
        cache: dict = {}
        durs, offs = [], []
        for v in values_per_world:
            key = tuple(sorted((v or {}).items()))
            if key not in cache:
                cache[key] = self.plan(self.validate(dict(v or {}), twin) if v else None, twin)
            d, o = cache[key]
            durs.append(d)
            offs.append(o)
        dev = twin.device
        dur = torch.stack(durs).to(dev)
        off = torch.stack(offs).to(dev)
        twin.worlds.params["signal_durations"] = dur
        twin.worlds.params["signal_offsets"] = off
        # the traffic twin copies these per-world plans at construction; refresh its copies
        twin.signal_durations = dur.clone()
        twin.signal_offsets = off.clone()


def webster_delay(cycle_s: float, green_eff_s: float, q_veh_s: float, s_veh_s: float) -> float:
    """Webster's (1958) mean delay per vehicle (s) at a fixed-time signal with random arrivals:

    d = c(1-λ)² / (2(1-λx)) + x² / (2q(1-x)) − 0.65 (c/q²)^{1/3} x^{2+5λ},  λ = g/c, x = q/(λ s).
    """
    lam = green_eff_s / cycle_s
    x = q_veh_s / (lam * s_veh_s)
    if x >= 1:
        return math.inf
    return (cycle_s * (1 - lam) ** 2 / (2 * (1 - lam * x)) + x * x / (2 * q_veh_s * (1 - x))
            - 0.65 * (cycle_s / q_veh_s ** 2) ** (1 / 3) * x ** (2 + 5 * lam))


def webster_uniform_delay(cycle_s: float, green_eff_s: float, q_veh_s: float, s_veh_s: float) -> float:
    """The uniform (deterministic-arrival) term of Webster's delay: c(1-λ)² / (2(1-λx))."""
    lam = green_eff_s / cycle_s
    x = q_veh_s / (lam * s_veh_s)
    return cycle_s * (1 - lam) ** 2 / (2 * (1 - lam * x)) if x < 1 else math.inf
