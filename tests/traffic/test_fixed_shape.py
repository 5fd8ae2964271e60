"""The tensor kernels' fixed-shape mode (issue 20 item 2; ``StepSettings.fixed_shape``, on by default on CUDA): every
rule over the whole window with masks instead of index subsets found by ``nonzero``. It must give the numbers of the
index-subset mode bit for bit, step by step, with every rule on (insertion rounds, right of way, turning speeds, bus
stops, lane changing, Krauss dawdling), and it must not read the device from the host."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR
from twins.compute.counting import count_per_step
from twins.core import pipeline

CASES = {
    "junction": ["scenario=junction"],
    "arterial, Krauss": ["scenario=arterial", "scenario.car_following=Krauss"],
    "bus corridor": ["scenario=bus_corridor"],
    "grid, lane changing": ["scenario=traffic", "scenario.lane_changing=true", "scenario.rows=3", "scenario.cols=3"],
}


def _twin(overrides, fixed: bool, horizon: int):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=[*overrides, f"horizon_s={horizon}", "replications=2",
                                                       "compute.compile=false", "progress=false"])
    tw = pipeline.make_twin(cfg)
    assert tw.kernel.startswith("tensor")
    tw.fixed_shape = fixed
    return tw


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_shape_gives_the_same_numbers_at_every_step(case):
    a, b = _twin(CASES[case], False, 420), _twin(CASES[case], True, 420)
    running = 0
    while a.step_index < a.n_steps:
        a.step()
        b.step()
        for k, col in a.state.columns().items():
            assert torch.equal(col, getattr(b.state, k)), (case, k, a.step_index)
        assert torch.equal(a.lane_acc_interval, b.lane_acc_interval), (case, a.step_index)
        running = max(running, int((a.state.status == 1).sum()))
    assert running > 20, "the case put vehicles on the road"
    ra, rb = a.results(), b.results()
    assert ra.worlds.equals(rb.worlds)


def test_fixed_shape_reads_the_host_only_at_the_windows_check():
    """The step itself reads nothing back; what is left is the twin's window check (the slots' status, once per
    32 steps: one nonzero and one scalar read) and rule 12's check of the longest standing time (amortized)."""
    for fixed, most in ((True, 0.2), (False, None)):
        tw = _twin(CASES["junction"], fixed, 300)
        for _ in range(120):
            tw.step()
        counts = count_per_step(tw.step, steps=32)
        assert counts["kernels_per_step"] > 100, counts  # the counter saw the step
        if fixed:
            assert counts["host_syncs_per_step"] <= most, counts
        else:  # the index-subset mode (the CPU's): several nonzero a step, which is what the mode removes
            assert counts["sync_ops"].get("nonzero", 0) >= 3, counts


def test_fixed_shape_windows_come_in_few_shapes():
    """The window of a fixed-shape run holds every slot that may move, starts on a multiple of 16 and has a
    power-of-two length but near the end: a compiled step or CUDA graph is built for a handful of shapes."""
    from twins.traffic.model import window_bucket

    for S in (100, 1000, 5000, 10007):
        for lo in range(0, S, 97):
            for hi in range(lo, S + 1, 131):
                a, b = window_bucket(lo, hi, S)
                assert a <= lo and b >= hi and a % 16 == 0 and b <= S, (lo, hi, S, a, b)
                assert b - a == S or (b - a) & (b - a - 1) == 0 or b == S, (lo, hi, S, a, b)
    tw = _twin(CASES["grid, lane changing"], True, 900)
    shapes = set()
    while tw.step_index < tw.n_steps:
        lo, hi = tw._window()
        shapes.add(hi - lo)
        tw.step()
    assert len(shapes) <= 6, shapes
