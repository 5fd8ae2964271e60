"""bench_traffic's per-step counts (issue 20): the dispatch counter sees the tensor kernels' operations and their
host syncs, and the compiled step stays within issue 20's CPU budget (<= 60 kernels, no host sync on most steps)."""
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
def test_compiled_step_is_few_kernels_and_rarely_syncs():
    tw = _warm(None)
    assert tw.kernel == "native"
    c = bench_traffic.count_per_step(tw, 32)
    assert 1 <= c["kernels_per_step"] <= 60
    assert c["host_syncs_per_step"] <= 2 / 32  # the window's start every 32 steps (and rule 12's rare check)
