"""compute=ray: the same worlds through a local Ray cluster give bit-identical results; a chunk whose
worker is killed is retried, and the results equal the uninterrupted run's (none lost, none doubled)."""
import json
import os

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from twins.compute.execute import run_chunk  # noqa: E402
from twins.core import runner  # noqa: E402

from .conftest import compose_cfg  # noqa: E402

RUN = ["scenario=junction", "horizon_s=120", "replications=3", "intervention=signal_timing",
       "intervention.cycle_s=90", "compute.max_worlds_per_chunk=2"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray instance for the module (2 CPUs), shut down after."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(backend, **attrs):
    cfg = compose_cfg(*RUN, f"compute={backend}")
    _, _, exe, _ = runner.plan_counterfactual(cfg)
    for k, v in attrs.items():
        setattr(exe, k, v)
    return exe, exe.run(progress=False)


@pytest.fixture(scope="module")
def local_result():
    return _run("local")[1]


def _assert_same(a, b):
    pd.testing.assert_frame_equal(a.worlds, b.worlds, check_exact=True)
    pd.testing.assert_frame_equal(a.groups, b.groups, check_exact=True)
    for k in a.tables:
        pd.testing.assert_frame_equal(a.tables[k], b.tables[k], check_exact=True, obj=k)


def test_ray_equals_local(local_result):
    exe, res = _run("ray")
    assert exe.backend == "ray" and len(exe.plan.chunks) == 3 and sorted(exe.done) == [0, 1, 2]
    assert {u.pid for u in exe.meter.chunks} != {os.getpid()}  # the chunks ran in Ray workers
    _assert_same(res, local_result)


def test_killed_worker_is_retried_and_nothing_is_lost_or_doubled(tmp_path, local_result):
    marker = tmp_path / "killed-once"

    def dies_once(job, chunk, device):  # pickled by value into the Ray worker
        if chunk.id == 1 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-run, as if killed
        return run_chunk(job, chunk, device)

    exe, res = _run("ray", chunk_fn=dies_once)
    assert marker.exists()  # the kill happened
    assert sorted(exe.done) == [0, 1, 2] and len(exe.meter.chunks) == 3
    _assert_same(res, local_result)


def test_run_folder_through_ray(tmp_path):
    runner.run(compose_cfg(*RUN, "compute=ray"), tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["complete"] and man["compute"]["backend"] == "ray" and man["compute"]["chunks"] == 3
    # chunks ran in other processes: their CPU time is in the account
    assert man["accounting"]["device_seconds"]["cpu"] > 0 and man["accounting"]["chunks"] == 3
    w = pd.read_parquet(tmp_path / "worlds.parquet")
    assert w["world"].tolist() == list(range(6))


def test_search_batches_through_ray_equal_local():
    import numpy as np

    from interventions._evaluate import TwinEvaluator

    base = ["scenario=junction", "intervention=signal_timing", "horizon_s=60", "replications=2",
            "compute.max_worlds_per_chunk=2", "search.params=[cycle_s]"]
    outs = []
    for backend in ("local", "ray"):
        ev = TwinEvaluator(compose_cfg(*base, f"compute={backend}"), ["cycle_s"])
        outs.append(ev(np.array([[60.0], [100.0]]), [0, 1]))
        assert ev.compute_account()["chunks"] == 3  # 3 arms × 2 replications in chunks of 2
    np.testing.assert_array_equal(outs[0].treated, outs[1].treated)
    np.testing.assert_array_equal(outs[0].baseline, outs[1].baseline)
    assert not np.array_equal(outs[0].treated[0], outs[0].treated[1])  # the candidates differ
