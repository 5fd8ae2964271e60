"""The causal contract and the numbers on an accelerator (``benchmarks/gpu_check.sh`` runs these on a
CUDA machine). Without CUDA they skip; ``TWINS_TEST_DEVICE=cpu`` runs the same checks on the CPU,
which is how their logic is exercised on machines without a GPU."""
from __future__ import annotations

import os

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import GridScenario, grid_scenario
from twins.core.worlds import WorldBatch
from twins.molecular.model import MolecularTwin
from twins.traffic import kernels
from twins.traffic.model import TrafficTwin

DEVICE = os.environ.get("TWINS_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                                  reason="no CUDA device (TWINS_TEST_DEVICE=cpu runs these on CPU)")]
STATE = ("status", "lane", "pos", "speed", "route_pos", "insert_step", "arrive_step", "stops")


def _traffic(worlds: WorldBatch, device, dtype=torch.float32, horizon=600.0, **kw) -> TrafficTwin:
    scen = grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), horizon)
    tw = TrafficTwin(scen, worlds, dt=1.0, horizon=horizon, device=device, dtype=dtype, **kw)
    while tw.step_index < tw.n_steps:
        tw.step()
    return tw


def test_traffic_reproducible_and_batch_independent():
    wb = WorldBatch.replications(11, 4)
    a, b = _traffic(wb, DEVICE), _traffic(wb, DEVICE)
    alone = _traffic(wb.subset([2]), DEVICE)
    assert int((a.state.status == kernels.ARRIVED).sum()) > 100
    for k in STATE:  # lane sums (index_add_) may add in any order on CUDA: state columns only
        assert torch.equal(getattr(a.state, k), getattr(b.state, k)), k
        assert torch.equal(getattr(a.state, k)[2], getattr(alone.state, k)[0]), k


def test_traffic_device_matches_cpu_in_float64():
    """Only IEEE-exact operations (no transcendental functions, no fused multiply-adds in separate
    kernels): the device follows the CPU's trajectory; 1e-9 m allows for a library's different but
    correctly rounded path without letting a different decision through."""
    wb = WorldBatch.replications(5, 2)
    dev, cpu = _traffic(wb, DEVICE, torch.float64), _traffic(wb, "cpu", torch.float64)
    for k in ("status", "lane", "route_pos", "arrive_step"):
        assert torch.equal(getattr(dev.state, k).cpu(), getattr(cpu.state, k)), k
    assert float((dev.state.pos.cpu() - cpu.state.pos).abs().max()) < 1e-9


def test_fused_idm_move_matches_eager():
    """torch.compile on CUDA emits Triton, which may contract a*b+c into one FMA: allow 4 float32 ulps
    of a speed or position (bit-identical on CPU: tests/traffic/test_compiled_kernel.py)."""
    g = torch.Generator().manual_seed(0)
    n = 100_003
    u = lambda lo, hi: (lo + (hi - lo) * torch.rand(n, generator=g)).to(DEVICE)  # noqa: E731
    gap = u(-1, 80)
    gap[::3] = torch.inf
    a = u(1, 3)
    args = (u(0, 20), u(10, 17), gap, u(0, 20), a, 2 * torch.sqrt(a * u(2, 5)), u(0.8, 1.6), u(1.5, 3), 4, 1.0, 4,
            torch.minimum(gap, u(-2, 60)), u(0, 500))
    for e, f in zip(kernels.idm_move(*args), kernels.fused_idm_move(*args)):
        torch.testing.assert_close(f, e, rtol=4 * 2.0 ** -23, atol=1e-5)


def test_molecular_reproducible_and_batch_independent():
    kw = dict(dt=0.01, horizon=0.5, box=30.0, cells=(("high", 20, 0.0, 0.5), ("low", 8, 0.5, 1.0)), n_offtarget=10,
              dose=40, dosing_interval=0.2, k_el=0.5, record_every=5, device=DEVICE)
    wb = WorldBatch.replications(7, 4)
    runs = []
    for worlds in (wb, wb, wb.subset([2])):
        m = MolecularTwin(worlds, **kw)
        m.run(progress=False)
        runs.append(m)
    a, b, alone = runs
    assert torch.equal(a.state.pos, b.state.pos) and torch.equal(a.state.species, b.state.species)
    assert torch.equal(a.state.pos[2], alone.state.pos[0]) and torch.equal(a.state.species[2], alone.state.species[0])
    assert int(a.doses_given[0]) == 3


def test_planned_chunks_equal_one_batch():
    """The compute plan on the device (memory probe, chunks) gives the same tables as one batch."""
    from hydra import compose, initialize_config_dir

    from twins.cli import CONF_DIR
    from twins.compute.execute import merge, remap
    from twins.core import runner

    def compose_cfg(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            return compose(config_name="config", overrides=["output.figures=false", "progress=false", *overrides])
    over = ["scenario=junction", "horizon_s=240", "replications=3", "intervention=signal_timing",
            "intervention.cycle_s=90", f"compute.device={DEVICE}"]
    iv, arms, twin = runner.make_counterfactual(compose_cfg(*over))
    ref = merge([remap(twin.run(progress=False), range(twin.W))])
    for chunk in ("null", "2"):
        exe = runner.plan_counterfactual(compose_cfg(*over, f"compute.max_worlds_per_chunk={chunk}")).exe
        got = exe.run(progress=False)
        pd.testing.assert_frame_equal(got.worlds, ref.worlds, check_exact=True)
        assert all(d.startswith(DEVICE.split(":")[0]) for d in exe.plan.devices)
        assert exe.plan.probe is not None and exe.plan.probe.bytes_per_world > 0
