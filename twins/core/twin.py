"""The twin base class and what a run returns.

A twin is a ``mesa.Model`` holding a batch of worlds whose population state
lives in torch tensors. ``step()`` advances every world by one ``dt``;
``run()`` steps to the horizon and returns a :class:`RunResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mesa
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
    (trips, time series, ...), each written as ``<name>.parquet``.
    """

    worlds: pd.DataFrame
    metrics: list[str]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    groups: pd.DataFrame | None = None
    complete: bool = True


class Twin(mesa.Model):
    """Base class: a Mesa model over a batch of W worlds on one device."""

    #: metric names this twin reports, in display order
    metrics: tuple[str, ...] = ()

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
    def time(self) -> float:
        return self.step_index * self.dt

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
            raise NumericalError(quantity, w, n, self.time, values[w, n].tolist(), hint)

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
