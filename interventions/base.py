"""The intervention protocol: a do-operator with a declared parameter space.

An :class:`Intervention` is built from its config node (``cfg.intervention``).
It declares its parameters (:meth:`Intervention.parameters`: names, kinds,
bounds, units and the *baseline* value read from the twin's scenario),
checks a parameter vector (:meth:`Intervention.validate`), and writes a
possibly different parameter vector into every world of a batch
(:meth:`Intervention.apply`). A world whose vector is ``None`` (or empty)
keeps the scenario's baseline exactly, bit for bit: that is causal contract
item 1.

Interventions know parameter spaces and how to write them into a world's
tensors; they never import a search library, and a search never imports a
twin (it only sees ``parameters()`` and an evaluate function).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from twins.core.errors import ConfigError, suggest

KINDS = ("float", "int", "categorical")


@dataclass(frozen=True)
class Parameter:
    """One dimension of an intervention's parameter space."""

    name: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    unit: str = ""
    baseline: Any = None  # the scenario's own value (None: the scenario has no single value)
    choices: tuple = ()
    doc: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Parameter.kind={self.kind!r}: expected one of {KINDS}")

    @property
    def valid(self) -> str:
        if self.kind == "categorical":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        unit = f" {self.unit}" if self.unit else ""
        what = "an integer" if self.kind == "int" else "a number"
        return f"{what} in [{self.low:g}, {self.high:g}]{unit}"

    def check(self, value, field_prefix: str = "intervention.") -> Any:
        """``value`` converted to this parameter's kind, or a :class:`ConfigError`."""
        fld = f"{field_prefix}{self.name}"
        if self.kind == "categorical":
            if value not in self.choices:
                raise ConfigError(fld, value, self.valid)
            return value
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise ConfigError(fld, value, self.valid) from None
        if not math.isfinite(x):
            raise ConfigError(fld, value, self.valid)
        if self.kind == "int":
            if x != round(x):
                raise ConfigError(fld, value, self.valid)
            x = int(round(x))
        if (self.low is not None and x < self.low) or (self.high is not None and x > self.high):
            raise ConfigError(fld, value, self.valid, f"({self.name}: {self.doc})" if self.doc else None)
        return x


class Intervention(ABC):
    """A named, parameterized change applied per world (a do-operator)."""

    #: registry name, also the config's ``name`` and ``conf/intervention/<name>.yaml``
    name: str = ""

    def __init__(self, cfg: DictConfig | dict | None = None):
        if cfg is None:
            cfg = {}
        self.cfg = OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg

    # --- the parameter space ------------------------------------------------------------------
    @abstractmethod
    def parameters(self, twin) -> list[Parameter]:
        """The parameter space for ``twin``'s scenario, baselines read from it."""

    def config_values(self) -> dict:
        """The parameter vector the config asks for (the treated arm): the set (non-null) values."""
        return {}

    def validate(self, values: dict, twin) -> dict:
        """``values`` checked against :meth:`parameters`: unknown names and out-of-bounds values are
        :class:`ConfigError`\\ s naming the field, the value and the valid range. Returns the
        converted values."""
        params = {p.name: p for p in self.parameters(twin)}
        out = {}
        for k, v in (values or {}).items():
            if k not in params:
                raise ConfigError(f"intervention.{k}", v, f"a parameter of intervention {self.name!r}",
                                  suggest(k, params) if params else f"{self.name!r} has no parameters.")
            out[k] = params[k].check(v)
        return out

    def baseline(self, twin) -> dict:
        """The scenario's own parameter vector (parameters that have a single baseline value)."""
        return {p.name: p.baseline for p in self.parameters(twin) if p.baseline is not None}

    # --- applying it ----------------------------------------------------------------------------
    @abstractmethod
    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        """Write world ``w``'s parameter vector ``values_per_world[w]`` into the twin's per-world
        parameters (``twin.worlds.params``), before the first step. ``None`` or ``{}``: baseline."""

    def describe(self, values: dict | None) -> str:
        if not values:
            return "baseline"
        return f"{self.name}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in values.items()) + ")"

    @staticmethod
    def _check_fresh(twin) -> None:
        if getattr(twin, "step_index", 0) != 0:
            raise RuntimeError("an intervention must be applied before the twin's first step")


@dataclass
class NoneConfig:
    """The schema of ``intervention=none``."""

    name: str = "none"


class NoIntervention(Intervention):
    """The baseline: no parameters, changes nothing."""

    name = "none"

    def parameters(self, twin) -> list[Parameter]:
        return []

    def apply(self, twin, values_per_world) -> None:
        for v in values_per_world:
            if v:
                raise ConfigError("intervention", v, "no parameters (intervention=none)")


@dataclass
class Entry:
    cls: type
    schema: type
    twins: tuple = ()  # the twins it acts on (scenarios.twin_of: traffic, molecular, ...); (): every twin


REGISTRY: dict[str, Entry] = {}


def register(name: str, schema: type, twins: Sequence[str] = ()):
    """Class decorator: ``@register("signal_timing", SignalTimingConfig, twins=("traffic",))``."""

    def deco(cls):
        cls.name = name
        REGISTRY[name] = Entry(cls, schema, tuple(twins))
        return cls

    return deco


def fitting(twin: str) -> list[str]:
    """The interventions that act on ``twin``."""
    return [n for n, e in REGISTRY.items() if not e.twins or twin in e.twins]


def check_fit(name: str, twin: str, scenario: str) -> None:
    """A :class:`ConfigError` when intervention ``name`` does not act on ``twin`` (scenario ``scenario``),
    naming both and the interventions that do, before a twin is built."""
    entry = REGISTRY.get(name)
    if entry is None or not entry.twins or twin in entry.twins:
        return  # an unknown name is reported by get() with its suggestions
    raise ConfigError("intervention", name,
                      f"an intervention for the {twin} twin of scenario={scenario}: {', '.join(fitting(twin))}",
                      f"{name} acts on {' / '.join(entry.twins)} twins; pick one of those, or a "
                      f"{' / '.join(entry.twins)} scenario.")


register("none", NoneConfig)(NoIntervention)


def get(cfg) -> Intervention:
    """The intervention for a config node (``cfg.intervention``), a dict, or a bare name."""
    if cfg is None:
        cfg = {"name": "none"}
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    name = cfg.get("name", "none") if hasattr(cfg, "get") else getattr(cfg, "name", "none")
    if name not in REGISTRY:
        raise ConfigError("intervention.name", name, "a registered intervention", suggest(name, REGISTRY))
    return REGISTRY[name].cls(cfg)


def register_configs(cs) -> None:
    """Store every intervention schema as ``intervention/<name>_schema`` in Hydra's ConfigStore."""
    for name, entry in REGISTRY.items():
        cs.store(group="intervention", name=f"{name}_schema", node=entry.schema)


__all__ = ["Parameter", "Intervention", "NoIntervention", "register", "get", "REGISTRY", "register_configs",
           "check_fit", "fitting"]
