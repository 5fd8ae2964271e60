"""Scenario builders: a registry from a scenario ``kind`` to its schema and builder.

Each builder takes the composed config, a :class:`~twins.core.worlds.WorldBatch`,
a device and a dtype, and returns a ready :class:`~twins.core.twin.Twin`.
Register one with :func:`scenario`; the schema dataclass becomes the Hydra
structured config ``scenario/<kind>_schema``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twins.core.errors import ConfigError, suggest


@dataclass(frozen=True)
class ScenarioEntry:
    schema: type
    build: Callable


SCENARIOS: dict[str, ScenarioEntry] = {}


def scenario(kind: str, schema: type):
    def deco(build):
        SCENARIOS[kind] = ScenarioEntry(schema, build)
        return build

    return deco


def get(kind: str) -> ScenarioEntry:
    if kind not in SCENARIOS:
        raise ConfigError("scenario.kind", kind, "a registered scenario kind", suggest(kind, SCENARIOS))
    return SCENARIOS[kind]


def build_twin(cfg, worlds, device, dtype):
    """The twin for ``cfg.scenario`` over ``worlds``."""
    return get(cfg.scenario.kind).build(cfg, worlds, device, dtype)


# builders register themselves on import; optional ones only when present
import importlib  # noqa: E402
import importlib.util  # noqa: E402

for _name in ("traffic", "sumo", "molecular"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
