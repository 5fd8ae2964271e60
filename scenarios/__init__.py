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
    twin: str | None = None  # the twin it builds (traffic, molecular, ...): which interventions fit it


SCENARIOS: dict[str, ScenarioEntry] = {}
# the twin of the built-in kinds (a new kind says it with @scenario(kind, schema, twin="..."))
TWIN_OF_KIND = {"grid": "traffic", "arterial": "traffic", "junction": "traffic", "ring": "traffic",
                "sumo": "traffic", "molecular": "molecular", "lj_fluid": "lj_fluid"}


def scenario(kind: str, schema: type, twin: str | None = None):
    def deco(build):
        SCENARIOS[kind] = ScenarioEntry(schema, build, twin or TWIN_OF_KIND.get(kind, kind))
        return build

    return deco


def twin_of(kind: str) -> str:
    """The twin a scenario kind builds (``traffic``, ``molecular``, ...)."""
    return get(kind).twin


def kinds_of(twin: str) -> list[str]:
    return sorted(k for k, e in SCENARIOS.items() if e.twin == twin)


def get(kind: str) -> ScenarioEntry:
    if kind not in SCENARIOS:
        raise ConfigError("scenario.kind", kind, "a registered scenario kind", suggest(kind, SCENARIOS))
    return SCENARIOS[kind]


def build_twin(cfg, worlds, device, dtype):
    """The twin for ``cfg.scenario`` over ``worlds``."""
    return get(cfg.scenario.kind).build(cfg, worlds, device, dtype)


def validate(cfg) -> None:
    """Cheap checks of the scenario's input files before any twin is built (``twins.core.config``)."""
    scen = cfg.get("scenario")
    if scen is not None and scen.get("kind") == "sumo":
        _check_sumo_demand(scen)


class _Found(Exception):
    pass


DEMAND_TAGS = ("vehicle", "trip", "flow")


def _check_sumo_demand(scen) -> None:
    """A SUMO scenario must load some vehicles: route files without one ``<vehicle>``, ``<trip>`` or ``<flow>``
    (or none at all) are refused naming the files, instead of failing deep inside the twin."""
    from pathlib import Path

    from twins.traffic import sumo, sumo_xml

    from .sumo import abs_path

    routes = [abs_path(r.strip()) for r in str(scen.get("routes") or "").split(",") if r.strip()]
    field, where = "scenario.routes", ""
    if not routes and scen.get("sumocfg"):
        opts, path = sumo.read_sumocfg(abs_path(scen.sumocfg))
        routes = [str(p) for p in sumo.config_files(opts.get("route-files", ""), path.parent)]
        field, where = "route-files", f" (the route-files of {path}; scenario.routes=... overrides them)"
    if not routes:
        if scen.get("sumocfg") or scen.get("net"):
            raise ConfigError(field, "", "one or more SUMO route files with vehicles, trips or flows",
                              f"The twin has no demand without them{where}: scenario.routes=ROUTES.rou.xml.")
        return  # no files at all: the builder names scenario.sumocfg

    def start(tag, attrs, _pos):
        if tag in DEMAND_TAGS:
            raise _Found  # one is enough: stop reading

    for r in routes:
        p = sumo_xml.check_file(r, field)
        try:
            sumo_xml.parse(Path(p), start)
        except _Found:
            return
    raise ConfigError(field, ",".join(routes), "route files with at least one <vehicle>, <trip> or <flow>",
                      f"They hold no demand for the twin to simulate{where}; check that the right file is named.")


# builders register themselves on import; optional ones only when present
import importlib  # noqa: E402
import importlib.util  # noqa: E402

for _name in ("traffic", "sumo", "molecular"):
    if importlib.util.find_spec(f"{__name__}.{_name}") is not None:
        importlib.import_module(f"{__name__}.{_name}")
