"""The twin base class and what a run returns.

A twin is a ``mesa.Model`` holding a batch of worlds whose population state
lives in torch tensors. ``step()`` advances every world by one ``dt``;
``run()`` steps to the horizon and returns a :class:`RunResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mesa
import numpy as np
import pandas as pd
import torch

from .errors import NumericalError
from .worlds import WorldBatch


@dataclass
class RunResult:
    """Per-world outcomes plus any number of long tables.

    ``worlds`` has one row per world: ``world``, ``replication``, ``arm`` and one
    column per metric in ``metrics``. ``groups`` (optional) has one row per
    world × group with columns ``world``, ``group_kind``, ``group`` and metric
    columns: equity and per-group effects read it. ``tables`` holds the rest
    (trips, time series, ...), each written as ``<name>.parquet``; it may be a :class:`LazyTables` whose long
    tables are built when first read.
    """

    worlds: pd.DataFrame
    metrics: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    groups: pd.DataFrame | None = None
    complete: bool = True


class LazyTables(dict):
    """A run's tables, some built when first read (:meth:`lazy`): reading one (``[]``, ``get``, ``items``,
    ``values``, copying, pickling) builds and keeps it, so code that iterates the tables (to write them, say)
    sees plain DataFrames, and code that never reads the trips never pays for them. ``in``, ``len`` and
    iterating the names build nothing; :meth:`pending` and :meth:`peek` let code that passes tables on
    (:func:`twins.compute.execute.remap`, ``merge``) keep them pending."""

    class _Pending:
        def __init__(self, build):
            self.build = build

    def lazy(self, name: str, build) -> None:
        """``name`` is built by ``build()`` when first read."""
        dict.__setitem__(self, name, LazyTables._Pending(build))

    def pending(self, name: str):
        """The builder of ``name`` if it is not built yet, else None (builds nothing)."""
        v = dict.get(self, name)
        return v.build if isinstance(v, LazyTables._Pending) else None

    def peek(self, name: str, default=None):
        """``name`` as ``get`` reads it, but a pending table is built without being kept (a caller that keeps
        the result itself, such as a merge of chunks, then holds the rows once)."""
        if name not in self:
            return default
        build = self.pending(name)
        return build() if build is not None else dict.__getitem__(self, name)

    def __getitem__(self, name):
        v = dict.__getitem__(self, name)
        if isinstance(v, LazyTables._Pending):
            v = v.build()
            dict.__setitem__(self, name, v)
        return v

    def __iter__(self):  # not dict's own: dict(tables) and {**tables} then read through __getitem__
        return iter(list(dict.keys(self)))

    def get(self, name, default=None):
        return self[name] if name in self else default

    def items(self):
        return [(k, self[k]) for k in list(dict.keys(self))]

    def values(self):
        return [self[k] for k in list(dict.keys(self))]

    def copy(self):
        return dict(self.items())

    def pop(self, name, *default):
        if name in self:
            v = self[name]
            dict.pop(self, name)
            return v
        return dict.pop(self, name, *default)

    def __reduce__(self):
        return dict, (self.items(),)

    def __repr__(self) -> str:
        return repr({k: (v if not isinstance(v, LazyTables._Pending) else "<built when read>")
                     for k, v in dict.items(self)})


def pending_table(tables, name: str):
    """The builder of ``tables[name]`` if ``tables`` (any mapping) holds it unbuilt (:class:`LazyTables`), else
    None."""
    return tables.pending(name) if isinstance(tables, LazyTables) else None


def per_world_table(model_vars: dict, W: int, time_key: str, world_first: bool = False) -> pd.DataFrame:
    """A per-world DataCollector's model variables (``{name: [value per collect]}``, each value a ``[W]`` array or
    one value for every world) as a long table: one row per collect and world; ``time_key`` and ``world`` first
    (``world`` before it when ``world_first``), then every other reporter, in order."""
    times = model_vars.get(time_key) or []
    if not times:
        return pd.DataFrame()
    t = np.repeat(np.asarray(times, dtype=np.float64), W)
    world = np.tile(np.arange(W), len(times))
    out = {"world": world, time_key: t} if world_first else {time_key: t, "world": world}
    for k, vals in model_vars.items():
        if k != time_key:
            out[k] = np.concatenate([np.broadcast_to(np.asarray(v), (W,)) for v in vals])
    return pd.DataFrame(out)


class Twin(mesa.Model):
    """Base class: a Mesa model over a batch of W worlds on one device."""

    #: metric names this twin reports, in display order
    metrics: tuple[str, ...] = ()
    #: the clock at step 0 (a subclass may set it per instance)
    begin: float = 0.0

    def __init__(self, worlds: WorldBatch, *, dt: float, horizon: float, device="cpu", dtype=torch.float32):
        super().__init__(rng=int(worlds.seed))
        self.device = torch.device(device)
        self.dtype = dtype
        self.worlds = worlds.to(self.device)
        self.dt = float(dt)
        self.horizon = float(horizon)
        self.n_steps = int(round(self.horizon / self.dt))
        self.step_index = 0

    @property
    def W(self) -> int:
        return self.worlds.size

    @property
    def time_s(self) -> float:
        """The clock now, in the scenario's time unit: ``begin + step_index · dt`` (not ``time``: Mesa's
        ``Model`` owns that name)."""
        return self.begin + self.step_index * self.dt

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def results(self) -> RunResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_finite(self, quantity: str, values: torch.Tensor, live: torch.Tensor, hint: str) -> None:
        """Raise :class:`NumericalError` for the first non-finite entry of ``values`` [W, N, ...] among the
        ``live`` [W, N] entities (one reduction and one host sync: cheap at observation points)."""
        bad = ~torch.isfinite(values)
        if bad.dim() > live.dim():
            bad = bad.flatten(live.dim()).any(-1)
        bad = bad & live
        if bool(bad.any()):
            w, n = (int(i) for i in torch.nonzero(bad)[0])
            raise NumericalError(quantity, w, n, self.time_s, values[w, n].tolist(), hint)

    def outcome_targets(self) -> tuple[list[str], dict[str, list[str]]]:
        """``(metrics, {group_kind: group metrics})``: what a search on this twin may optimize or limit (the
        metrics of ``results().worlds``, the group kinds of ``results().groups`` and of
        :meth:`counterfactual_groups`; a test pins that these are what a run reports)."""
        return list(self.metrics), {}

    def counterfactual_groups(self, result: RunResult) -> pd.DataFrame | None:
        """Per-world group outcomes a counterfactual reports besides ``result.groups`` (columns ``world``,
        ``group_kind``, ``group`` and metrics), e.g. traffic's per-approach delay; None: none."""
        return None

    def write_figures(self, result: RunResult, figdir) -> list[str]:
        """Write this twin's standard figures into ``figdir``; returns their names."""
        return []

    def run(self, progress: bool | None = None, desc: str | None = None) -> RunResult:
        """Step to the horizon (a tqdm bar when ``progress``; auto: only on long runs)."""
        from tqdm.auto import tqdm

        remaining = self.n_steps - self.step_index
        disable = (not progress) if progress is not None else None
        with tqdm(total=remaining, desc=desc or type(self).__name__, unit="step",
                  disable=disable if disable is not None else False, mininterval=2.0,
                  delay=3.0 if progress is None else 0.0, leave=False) as bar:
            while self.step_index < self.n_steps:
                self.step()
                bar.update(1)
        return self.results()
