"""The fused path (``compute.compile=true``: :func:`kernels.idm_move` through ``torch.compile``) gives
the same numbers as eager, bit for bit: whole runs, buses included, and the function alone on sizes
that do and do not fill the last SIMD vector."""
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
    return {k: v.clone() for k, v in tw.state.columns().items()}, tw.lane_acc_total.clone()


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


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 13, 4096 + 7])
def test_fused_idm_move_equals_eager(n):
    g = torch.Generator().manual_seed(n)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    v, v0, v_lead = u(0, 20), u(10, 17), u(0, 20)
    gap = u(-1, 80)
    gap[::3] = torch.inf  # free road
    a = u(1, 3)
    args = (v, v0, gap, v_lead, a, 2 * torch.sqrt(a * u(2, 5)), u(0.8, 1.6), u(1.5, 3), 4, 1.0, 4,
            torch.minimum(gap, u(-2, 60)), u(0, 500))
    for hold in (None, torch.rand(n, generator=g) < 0.2):
        eager, fused = kernels.idm_move(*args, hold), kernels.fused_idm_move(*args, hold)
        assert all(torch.equal(e, f) for e, f in zip(eager, fused))


@pytest.mark.slow
@pytest.mark.parametrize("build", [_grid, _bus_junction], ids=["grid", "bus"])
def test_compiled_equals_eager(build):
    horizon = 600.0
    _assert_same(_final_state(build(horizon), horizon), _final_state(build(horizon), horizon, compile=True))
