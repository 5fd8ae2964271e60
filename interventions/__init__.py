"""Interventions (do-operators), counterfactual evaluation, search, ethics gates.

``interventions.get(cfg.intervention)`` returns the :class:`~interventions.base.Intervention`
named by the config; each registers its structured config as ``intervention/<name>_schema``.
"""
from .base import (REGISTRY, Intervention, NoIntervention, Parameter, check_fit, fitting, get,  # noqa: F401
                   register, register_configs)
from . import signal_timing  # noqa: F401,E402  (registers itself)
from . import road_closure, demand_management, max_pressure  # noqa: F401,E402  (register themselves)
from . import bus_headway  # noqa: F401,E402  (registers itself)
from . import drug_design  # noqa: F401,E402  (molecular twin; registers itself)

# the twin each built-in intervention acts on (a new one says it in register(name, schema, twins=(...)))
for _name, _twins in {"signal_timing": ("traffic",), "road_closure": ("traffic",), "demand_management": ("traffic",),
                      "max_pressure": ("traffic",), "bus_headway": ("traffic",), "drug_design": ("molecular",)}.items():
    if _name in REGISTRY and not REGISTRY[_name].twins:
        REGISTRY[_name].twins = _twins

__all__ = ["check_fit", "fitting", "REGISTRY", "Intervention", "NoIntervention", "Parameter", "get", "register",
           "register_configs"]
