"""Helpers shared by traffic interventions."""
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

