"""Interventions (do-operators), counterfactual evaluation, search, ethics gates.

``interventions.get(cfg.intervention)`` returns the :class:`~interventions.base.Intervention`
named by the config; each registers its structured config as ``intervention/<name>_schema``.
"""
from .base import REGISTRY, Intervention, NoIntervention, Parameter, get, register, register_configs  # noqa: F401
from . import signal_timing  # noqa: F401,E402  (registers itself)
from . import road_closure, demand_management, max_pressure  # noqa: F401,E402  (register themselves)
from . import bus_headway  # noqa: F401,E402  (registers itself)
from . import drug_design  # noqa: F401,E402  (molecular twin; registers itself)

__all__ = ["REGISTRY", "Intervention", "NoIntervention", "Parameter", "get", "register", "register_configs"]
