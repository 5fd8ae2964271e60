"""The searched space and the samplers that walk it.

Optuna distributions of the intervention's parameters (:class:`~interventions.base.Parameter`), the grid of
``search.sampler=grid``, the scenario's own plan as a point of the space (``baseline_point``), the sampler by
name (``make_sampler``, with the constraints of a told trial) and the non-dominated rows of a table of
objective values (``pareto_mask``).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from twins.core.errors import ConfigError

from .base import Parameter

log = logging.getLogger("twins")

SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")


def _has_set_constraint() -> bool:
    try:
        import optuna

        return hasattr(optuna.trial.Trial, "set_constraint")
    except ImportError:  # pragma: no cover
        return False


# Optuna >= 5 reads constraints set on the trial (Trial.set_constraint); older ones take constraints_func
HAS_SET_CONSTRAINT = _has_set_constraint()


def constraints_of_trial(trial) -> list[float]:
    """Optuna ``constraints_func``: the violations stored on the trial before it was told."""
    return list(trial.user_attrs.get("constraints", []))


def distributions(space: Sequence[Parameter]):
    import optuna.distributions as d

    out = {}
    for p in space:
        if p.kind == "categorical":
            out[p.name] = d.CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            out[p.name] = d.IntDistribution(int(p.low), int(p.high))
        else:
            out[p.name] = d.FloatDistribution(float(p.low), float(p.high))
    return out


def encode(p: Parameter, v):
    """A parameter's value as the number the evaluator takes (a categorical one: its index)."""
    return p.choices.index(v) if p.kind == "categorical" else float(v)


def grid(space: Sequence[Parameter], points: int) -> dict:
    g = {}
    for p in space:
        if p.kind == "categorical":
            g[p.name] = list(p.choices)
        elif p.kind == "int":
            g[p.name] = sorted({int(round(x)) for x in np.linspace(p.low, p.high, points)})
        else:
            g[p.name] = [float(x) for x in np.linspace(p.low, p.high, points)]
    return g


def grid_index(g: dict, point: dict) -> tuple | None:
    """The grid point (a tuple in ``g``'s key order) equal to ``point`` (floats to 1e-9 of their range), if any."""
    out = []
    for k, vals in g.items():
        x = point[k]
        hit = [v for v in vals if v == x or (isinstance(v, float) and isinstance(x, (int, float))
                                               and abs(v - x) <= 1e-9 * max(1.0, abs(vals[-1] - vals[0])))]
        if not hit:
            return None
        out.append(hit[0])
    return tuple(out)


def grid_size(space: Sequence[Parameter], points: int, start_point: dict | None) -> int:
    """Trials a grid search has: its points, plus the baseline where it is not one of them."""
    g = grid(space, points)
    n = int(np.prod([len(v) for v in g.values()]))
    if start_point is not None and grid_index(g, start_point) is None:
        n += 1  # the baseline is not a grid point: it is evaluated as well
    return n


def baseline_point(space: Sequence[Parameter]) -> tuple[dict | None, str | None]:
    """The scenario's own plan as a point of the search space, ``({name: baseline}, None)``, or ``(None, why)``
    when a searched parameter has no single baseline value (e.g. the junctions' cycles differ) or its baseline
    lies outside the searched bounds."""
    missing = [p.name for p in space if p.baseline is None]
    if missing:
        return None, (f"the scenario has no single value of {', '.join(missing)} (its junctions differ), so its own "
                      "plan is not a point of the search space")
    out = {}
    for p in space:
        try:
            out[p.name] = p.check(p.baseline, "search.params.")
        except ConfigError:
            return None, f"the scenario's {p.name}={p.baseline!r} lies outside the searched bounds ({p.valid})"
    return out, None


def make_sampler(name: str, seed: int, space: Sequence[Parameter], n_objectives: int, constrained: bool,
                 batch: int, grid_points: int = 5):
    import optuna

    cf = constraints_of_trial if constrained and not HAS_SET_CONSTRAINT else None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, constant_liar=True,
                                          n_startup_trials=max(batch, 8), multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf, population_size=max(batch, 4))
    if name == "cmaes":
        if n_objectives > 1:
            raise ConfigError("search.sampler", name, "tpe, nsga2 or random for several objectives",
                              "CMA-ES optimizes one objective.")
        try:
            import importlib

            importlib.import_module("cmaes")  # optuna needs it for CmaEsSampler
        except ImportError:
            raise ConfigError("search.sampler", name, "a sampler whose package is installed",
                              "CMA-ES needs the 'cmaes' package: pip install cmaes.") from None
        if constrained:
            log.warning("search: CMA-ES ignores constraints while sampling; they still filter the winner")
        return optuna.samplers.CmaEsSampler(seed=seed, popsize=max(batch, 4), n_startup_trials=0,
                                            warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":  # the grid points are enqueued by the search (GridSampler cannot run ask/tell batches)
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError("search.sampler", name, " | ".join(SAMPLERS))


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows of ``values[N, M]`` that no other row dominates (signs follow ``directions``)."""
    v = np.asarray(values, dtype=float) * np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dom = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        if dom.any():
            keep[i] = False
    # identical points: keep the first only
    _, first = np.unique(v, axis=0, return_index=True) if n else (None, np.array([], int))
    dup = np.ones(n, dtype=bool)
    dup[first] = False
    return keep & ~dup


__all__ = ["SAMPLERS", "HAS_SET_CONSTRAINT", "constraints_of_trial", "distributions", "encode", "grid",
           "grid_index", "grid_size", "baseline_point", "make_sampler", "pareto_mask"]
