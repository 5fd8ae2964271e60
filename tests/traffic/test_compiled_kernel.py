"""The fused path (``compute.compile=true``: :func:`kernels.advance` through ``torch.compile``) gives
the same numbers as eager, bit for bit, and so do the look past the stop line on the front subset
(eager) and on every vehicle masked (``dense_front``, what the compiled graph runs)."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import GridScenario, JunctionScenario, grid_scenario, junction_scenario
from twins.core.worlds import WorldBatch
from twins.traffic import kernels
from twins.traffic.model import TrafficTwin

LINES = [{"name": "L", "route": ["W0_J0_0", "J0_0_E0"], "headway_s": 120.0,
          "stops": [{"name": "a", "edge": "W0_J0_0", "pos_m": 100, "pax_per_h": 180},
                    {"name": "b", "edge": "J0_0_E0", "pos_m": 150, "pax_per_h": 180}]}]


def _final_state(scen, horizon, **kw):
    tw = TrafficTwin(scen, WorldBatch.replications(5, 3), dt=1.0, horizon=horizon, **kw)
    while tw.step_index < tw.n_steps:
        tw.step()
    return {k: v.clone() for k, v in tw.state.items()}, tw.lane_acc_total.clone()


def _grid(horizon):
    return grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), horizon)


def _bus_junction(horizon):
    s = OmegaConf.merge(OmegaConf.structured(JunctionScenario),
                        {"bus_lines": LINES, "flows_veh_h": {"N": 400, "E": 400, "S": 400, "W": 400}})
    return junction_scenario(s, horizon)


def _assert_same(a, b):
    (sa, acc_a), (sb, acc_b) = a, b
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"state column {k!r} differs"
    assert torch.equal(acc_a, acc_b), "lane observations differ"
    assert int((sa["status"] == kernels.ARRIVED).sum()) > 50  # the run did something


def test_dense_front_equals_front_subset(monkeypatch):
    """What the compiled graph computes (every vehicle, masked), run eagerly, against the default."""
    eager = _final_state(_grid(600.0), 600.0)
    dense = kernels.advance.__defaults__
    monkeypatch.setattr(kernels.advance, "__defaults__", (True,))  # dense_front=True
    assert dense == (False,)
    _assert_same(eager, _final_state(_grid(600.0), 600.0))


@pytest.mark.slow
@pytest.mark.parametrize("build", [_grid, _bus_junction], ids=["grid", "bus"])
def test_compiled_equals_eager(build):
    horizon = 600.0
    _assert_same(_final_state(build(horizon), horizon), _final_state(build(horizon), horizon, compile=True))
