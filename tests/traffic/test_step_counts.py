"""bench_traffic's per-step counts (issue 20): the dispatch counter sees the tensor kernels' operations and their
host syncs, and the compiled step and the fixed-shape tensor step stay within issue 20's CPU budget (<= 60 kernels for
the compiled step, no host sync: the window's start advances from a copy read 32 steps later)."""
from __future__ import annotations

import sys

import pytest
import torch

from tests.conftest import ROOT
from twins.traffic import native

sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_traffic  # noqa: E402


def _warm(compile):
    tw = bench_traffic.build(1, "cpu", torch.float32, 0, horizon=400.0, compile=compile)
    for _ in range(120):  # vehicles on every entry, some at red lights
        tw.step()
    return tw


def test_counter_sees_the_tensor_kernels_operations_and_syncs():
    c = bench_traffic.count_per_step(_warm(False), 4)
    assert c["kernels_per_step"] > 100  # the tensor path is hundreds of operations a step
    assert c["sync_ops"].get("nonzero", 0) >= 1 and c["host_syncs_per_step"] >= 1


@pytest.mark.skipif(not native.available(), reason="no C++ compiler for the compiled step")
def test_compiled_step_is_few_kernels_and_never_syncs():
    tw = _warm(None)
    assert tw.kernel == "native"
    c = bench_traffic.count_per_step(tw, 96)  # three of the window start's advances
    assert 1 <= c["kernels_per_step"] <= 60
    assert c["host_syncs_per_step"] == 0, c["sync_ops"]


@pytest.mark.parametrize("compile", [False, None])
def test_the_window_start_still_moves_past_arrived_vehicles(compile):
    """The start advances from the copy made 32 steps before: behind the arrivals, never past a vehicle that has
    not arrived."""
    from tests.traffic._helpers import chain_scenario
    from twins.core.worlds import WorldBatch
    from twins.traffic import kernels
    from twins.traffic.model import TrafficTwin

    scen = chain_scenario("window", {"a": 300.0, "b": 300.0}, ["a", "b"])
    tw = TrafficTwin(scen, WorldBatch.replications(0, 2), dt=1.0, horizon=200.0, compile=compile)
    starts = []
    while tw.step_index < tw.n_steps:
        tw.step()
        arrived = (tw.state.status == kernels.ARRIVED).all(0)
        assert bool(arrived[:tw.lo].all())  # only slots that have arrived in every world are left behind
        starts.append(tw.lo)
    assert starts[-1] >= 20 and starts == sorted(starts)


def test_fixed_shape_tensor_step_never_syncs():
    tw = bench_traffic.build(1, "cpu", torch.float32, 0, horizon=400.0, compile=False)
    tw.fixed_shape = True
    for _ in range(120):
        tw.step()
    c = bench_traffic.count_per_step(tw, 64)
    assert c["kernels_per_step"] > 100 and c["host_syncs_per_step"] == 0, c["sync_ops"]


def test_a_blocking_copy_from_the_device_counts_as_a_host_sync():
    """The counter's device-to-host rule, on stand-ins for CUDA tensors (this machine has none)."""
    from types import SimpleNamespace

    from twins.compute.counting import blocking_device_read

    cuda, cpu = SimpleNamespace(device=SimpleNamespace(type="cuda")), SimpleNamespace(device=SimpleNamespace(type="cpu"))
    assert blocking_device_read("_to_copy", (cuda,), {"device": SimpleNamespace(type="cpu")})
    assert not blocking_device_read("_to_copy", (cuda,), {"device": SimpleNamespace(type="cpu"), "non_blocking": True})
    assert blocking_device_read("copy_", (cpu, cuda), {})
    assert not blocking_device_read("copy_", (cpu, cuda, True), {})
    assert not blocking_device_read("copy_", (cuda, cpu), {})  # host to device: the host does not wait
    assert not blocking_device_read("_to_copy", (cpu,), {"device": SimpleNamespace(type="cpu")})
    assert not blocking_device_read("add", (cuda, cuda), {})
