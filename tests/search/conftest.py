"""A constructed search problem with a known optimum: no twin, just ``evaluate(params, reps)``."""
from __future__ import annotations

import numpy as np
import pytest

from interventions._evaluate import Outcomes
from interventions.base import Parameter

OPT = np.array([0.3, -0.6])  # the optimum of f


def space2():
    return [Parameter("x", "float", -2.0, 2.0, baseline=0.0), Parameter("y", "float", -2.0, 2.0, baseline=0.0)]


class Synthetic:
    """f(x, y) = |(x, y) − OPT|² (minimum 0 at OPT), g = (x − 1)² + (y − 1)² (a second objective);
    the baseline arm is the point (0, 0). Per-replication noise is shared by all arms (CRN) plus a small
    arm-specific part, so paired effects are f(p) − f(0) + small noise."""

    metrics = ["f", "g"]

    def __init__(self, noise: float = 0.01, fail_on_call: int | None = None):
        self.noise, self.fail_on_call = noise, fail_on_call
        self.calls = 0
        self.evaluated: list[tuple] = []  # every candidate vector evaluated (search replications only)

    @staticmethod
    def true(p):
        p = np.atleast_2d(p)
        f = ((p - OPT) ** 2).sum(1)
        g = ((p - 1.0) ** 2).sum(1)
        return np.stack([f, g], 1)

    def __call__(self, params, reps):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt("killed mid-batch")
        params = np.atleast_2d(params)
        reps = np.asarray(list(reps))
        if reps[0] < 10_000:
            self.evaluated += [tuple(np.round(r, 12)) for r in params]
        common = np.array([[np.sin(1.7 * r + j) for j in range(2)] for r in reps])  # [R, M]
        rng = np.random.default_rng(reps[0] * 7919 + len(params))
        base = self.true(np.zeros(2))[0][None] + common
        treated = self.true(params)[:, None, :] + common[None] + self.noise * rng.standard_normal(
            (len(params), len(reps), 2))
        return Outcomes(self.metrics, reps, treated, base)


@pytest.fixture
def synthetic():
    return Synthetic
