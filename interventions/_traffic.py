"""Helpers shared by traffic interventions that change what the twin builds at construction."""
from __future__ import annotations

from twins.core.errors import ConfigError


def traffic_twin(twin, name: str):
    """``twin`` if it is a traffic twin, else a :class:`ConfigError` naming the intervention."""
    from twins.traffic.model import TrafficTwin

    if not isinstance(twin, TrafficTwin):
        raise ConfigError("intervention", name, "a traffic scenario",
                          f"intervention {name!r} changes routes or demand of a traffic twin; "
                          f"this scenario builds a {type(twin).__name__}.")
    return twin


def rebuild(twin) -> None:
    """Construct ``twin`` again from its scenario and worlds, so that it reads the per-world parameters
    (``twin.worlds.params``) an intervention has just written. Routes and the vehicle population are
    compiled in ``TrafficTwin.__init__``; rebuilding keeps every parameter already written (signal plans
    of another intervention included), and the exogenous noise is a pure function of the keys, so the
    rebuilt worlds draw exactly what they would have drawn had they been built this way at first."""
    if getattr(twin, "step_index", 0) != 0:
        raise RuntimeError("an intervention must be applied before the twin's first step")
    # mesa.Model.__init__ wraps ``step`` in an instance attribute; unwrap it so it is wrapped once
    twin.__dict__.pop("step", None)
    type(twin).__init__(twin, twin.scenario, twin.worlds, **twin._init_kwargs)
