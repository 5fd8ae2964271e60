"""``max_pressure``: replace fixed-time programs by an adaptive max-pressure controller.

Varaiya (2013), "Max pressure control of a network of signalized intersections",
Transp. Res. C 36. At the chosen junctions (``junctions``; null: every signalized
junction) each world with the controller enabled picks, every ``decision_interval_s``
after ``min_green_s`` of green, the green phase of its program with the highest
pressure (Σ over the phase's green links of the running vehicles on the link's
incoming lane minus the mean per lane on its outgoing edge), switching if it beats
the current phase; at ``max_green_s`` it switches to the best other phase. Switches go
through the program's own yellow and all-red phases; the phase states are the
program's, so conflicting movements are never green together.

The baseline arm keeps the fixed-time programs (``enabled=false`` is the null
intervention: bit-identical worlds). The controller itself is
:func:`twins.traffic.control.max_pressure_codes`.

Writes into ``twin.worlds.params``: ``max_pressure`` [W, P] bool (where it runs),
``max_pressure_min_green_s``, ``max_pressure_max_green_s``, ``max_pressure_interval_s`` [W].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from twins.core.errors import ConfigError

from ._traffic import traffic_twin
from .base import Intervention, Parameter, register
from .signal_timing import SignalTiming

PARAMS = ("enabled", "min_green_s", "max_green_s", "decision_interval_s")


@dataclass
class MaxPressureConfig:
    name: str = "max_pressure"
    junctions: Optional[List[str]] = None  # signal program ids; null: every signalized junction
    enabled: bool = True  # false: the null intervention (fixed-time everywhere)
    min_green_s: float = 7.0  # a green is shown at least this long
    max_green_s: float = 60.0  # a green is left at the latest after this long
    decision_interval_s: float = 5.0  # after min green, the controller decides this often
    max_s: float = 600.0  # upper bound of the time parameters


@register("max_pressure", MaxPressureConfig)
class MaxPressure(Intervention):
    """Adaptive max-pressure signal control at chosen junctions."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        c = self.cfg
        j = c.get("junctions", None)
        self.junction_ids = None if j is None else [str(x) for x in j]
        self.max_s = float(c.get("max_s", 600.0))
        if not self.max_s > 0:
            raise ConfigError("intervention.max_s", self.max_s, "a positive number of seconds")

    def parameters(self, twin) -> list[Parameter]:
        traffic_twin(twin, self.name)
        # junction selection (and its errors) as in signal_timing
        SignalTiming({"junctions": self.junction_ids}).selected(twin)
        return [
            Parameter("enabled", "categorical", baseline=False, choices=(False, True),
                      doc="run max pressure (false: the fixed-time programs)"),
            Parameter("min_green_s", "float", 0.0, self.max_s, "s", doc="shortest green"),
            Parameter("max_green_s", "float", 1.0, self.max_s, "s", doc="longest green"),
            Parameter("decision_interval_s", "float", 0.1, self.max_s, "s",
                      doc="time between decisions after min green (> 0)"),
        ]

    def config_values(self) -> dict:
        c = self.cfg
        return {k: c.get(k) for k in PARAMS if c.get(k, None) is not None}

    def validate(self, values: dict, twin) -> dict:
        values = super().validate(values, twin)
        d = MaxPressureConfig()
        mn = values.get("min_green_s", d.min_green_s)
        mx = values.get("max_green_s", d.max_green_s)
        if mn > mx:
            raise ConfigError("intervention.min_green_s", mn, f"<= max_green_s={mx:g} s",
                              "A green cannot be shown longer than its minimum and shorter than its maximum.")
        return values

    def _mask(self, twin) -> torch.Tensor:
        progs = SignalTiming({"junctions": self.junction_ids}).selected(twin)
        m = torch.zeros(len(twin.net_cpu.program_ids), dtype=torch.bool)
        m[[p.index for p in progs]] = True
        return m

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        traffic_twin(twin, self.name)
        W = twin.W
        if len(values_per_world) != W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {W} worlds")
        d = MaxPressureConfig()
        mask = self._mask(twin)
        P = mask.numel()
        on = torch.zeros(W, P, dtype=torch.bool)
        mn = torch.full((W,), d.min_green_s, dtype=torch.float64)
        mx = torch.full((W,), d.max_green_s, dtype=torch.float64)
        iv = torch.full((W,), d.decision_interval_s, dtype=torch.float64)
        for w, v in enumerate(values_per_world):
            if not v:
                continue
            v = self.validate(dict(v), twin)
            if v.get("enabled", True) is False or v.get("enabled", True) == 0:
                continue
            on[w] = mask
            mn[w] = v.get("min_green_s", d.min_green_s)
            mx[w] = v.get("max_green_s", d.max_green_s)
            iv[w] = v.get("decision_interval_s", d.decision_interval_s)
        dev = twin.device
        p = twin.worlds.params
        p["max_pressure"] = on.to(dev)
        p["max_pressure_min_green_s"] = mn.to(dev)
        p["max_pressure_max_green_s"] = mx.to(dev)
        p["max_pressure_interval_s"] = iv.to(dev)
