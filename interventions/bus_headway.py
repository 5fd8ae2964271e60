"""``bus_headway``: run the scenario's bus lines more (or less) often, or shift their timetable.

The baseline is each line's own timetable (``scenario.bus_lines[*].headway_s`` and
``offset_s``). A parameter vector sets, for the chosen lines (``lines``; default: every
line):

- ``headway_s`` — the time between two departures of a line (s);
- ``offset_s`` — the first departure of a line (s);

shared (``headway_s=300``) or per line (``east.headway_s=300`` in a parameter vector,
``per_line: {east: {headway_s: 300}}`` in config). A value equal to the baseline leaves
the worlds bit-identical.

Theory it should reproduce: passengers who arrive at random at a stop served by
buses every H seconds wait H/2 on average when the buses keep their timetable
(and E[H²]/(2·E[H]) ≥ H/2 when they bunch). The k-th bus of a line keeps its vehicle
id whatever the headway, and passengers are keyed by (replication, stop, k), so the
arms differ only by the timetable (common random numbers).

Writes ``bus_headway_s`` and ``bus_offset_s`` [W, lines] (s) into ``twin.worlds.params``;
the traffic twin dispatches its buses from them when it builds its population
(``TrafficTwin.read_params``), so ``apply`` has the twin read them again (its network and agents stay).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from ._traffic import traffic_twin
from .base import Intervention, Parameter, register

KEYS = ("headway_s", "offset_s")


@dataclass
class BusHeadwayConfig:
    name: str = "bus_headway"
    lines: Optional[List[str]] = None  # bus line names the shared values apply to; null: every line
    headway_s: Optional[float] = None  # null: keep each line's headway
    offset_s: Optional[float] = None  # null: keep each line's first departure
    per_line: Dict[str, Dict[str, float]] = field(default_factory=dict)  # {east: {headway_s: 300}}
    min_headway_s: float = 60.0  # bounds of the headway parameter
    max_headway_s: float = 3600.0


@register("bus_headway", BusHeadwayConfig)
class BusHeadway(Intervention):
    """Bus timetables: headway and first departure, shared or per line."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        c = self.cfg
        self.min_headway_s = float(c.get("min_headway_s", 60.0))
        self.max_headway_s = float(c.get("max_headway_s", 3600.0))
        ln = c.get("lines", None)
        self.line_ids = None if ln is None else [str(x) for x in ln]
        if not 0 < self.min_headway_s <= self.max_headway_s:
            raise ConfigError("intervention.min_headway_s", self.min_headway_s,
                              f"a headway > 0 s and <= max_headway_s={self.max_headway_s:g}")

    # --- the lines ------------------------------------------------------------------------------
    def all_lines(self, twin) -> list:
        tw = traffic_twin(twin, self.name)
        if not tw.bus_lines:
            raise ConfigError("intervention", self.name, "a scenario with bus lines",
                              f"scenario {tw.scenario.name!r} has none. Try scenario=bus_corridor, or add "
                              "scenario.bus_lines.")
        return tw.bus_lines

    def selected(self, twin) -> list[int]:
        """Indices of the chosen lines."""
        lines = self.all_lines(twin)
        names = [l.id for l in lines]
        if self.line_ids is None:
            return list(range(len(lines)))
        if not self.line_ids:
            raise ConfigError("intervention.lines", [], "at least one line name (or null for all)")
        for n in self.line_ids:
            if n not in names:
                raise ConfigError("intervention.lines", n, "bus line names of the scenario", suggest(n, names))
        return [names.index(n) for n in self.line_ids]

    # --- parameter space ------------------------------------------------------------------------
    def _param(self, name: str, key: str, values: list[float], what: str) -> Parameter:
        base = values[0] if len(set(values)) == 1 else None
        if key == "headway_s":
            return Parameter(name, "float", self.min_headway_s, max([self.max_headway_s] + values), "s", base,
                             doc=f"time between two departures of {what}")
        return Parameter(name, "float", 0.0, max([self.max_headway_s] + values), "s", base,
                         doc=f"first departure of {what}")

    def parameters(self, twin) -> list[Parameter]:
        lines = self.all_lines(twin)
        chosen = [lines[i] for i in self.selected(twin)]
        out = [self._param(k, k, [getattr(l, k) for l in chosen], "the chosen lines") for k in KEYS]
        for l in lines:
            out += [self._param(f"{l.id}.{k}", k, [getattr(l, k)], f"line {l.id}") for k in KEYS]
        return out

    def config_values(self) -> dict:
        c = self.cfg
        out = {k: c.get(k) for k in KEYS if c.get(k, None) is not None}
        for ln, d in (c.get("per_line", None) or {}).items():
            for k, v in d.items():
                out[f"{ln}.{k}"] = v
        return out

    # --- the plan -------------------------------------------------------------------------------
    def plan(self, values: dict | None, twin) -> torch.Tensor:
        """``[2, lines]`` float64: each line's headway and first departure under ``values``
        (the baseline's own numbers, bit for bit, where a value is not set)."""
        lines = self.all_lines(twin)
        out = torch.tensor([[getattr(l, k) for l in lines] for k in KEYS], dtype=torch.float64)
        if not values:
            return out
        chosen = set(self.selected(twin))
        for i, l in enumerate(lines):
            for j, k in enumerate(KEYS):
                v = values.get(f"{l.id}.{k}", values.get(k) if i in chosen else None)
                if v is not None:
                    out[j, i] = float(v)
        return out

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        tw = traffic_twin(twin, self.name)
        if len(values_per_world) != tw.W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {tw.W} worlds")
        cache: dict = {}
        rows = []
        for v in values_per_world:
            key = tuple(sorted((v or {}).items()))
            if key not in cache:
                cache[key] = self.plan(self.validate(dict(v), tw) if v else None, tw)
            rows.append(cache[key])
        p = torch.stack(rows)  # [W, 2, lines]
        tw.worlds.params["bus_headway_s"] = p[:, 0].to(tw.device)
        tw.worlds.params["bus_offset_s"] = p[:, 1].to(tw.device)
        tw.read_params()
