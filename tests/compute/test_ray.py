"""compute=ray: the same worlds through a local Ray cluster give bit-identical results; a chunk whose
worker is killed is retried, and the results equal the uninterrupted run's (none lost, none doubled). A GPU run
is planned for the cluster's GPUs, with the memory probe on a worker, even where this process has none."""
import json
import os

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from twins.compute.execute import run_chunk  # noqa: E402
from twins.core import runner  # noqa: E402

from .conftest import compose_cfg  # noqa: E402

RUN = ["scenario=junction", "horizon_s=120", "replications=3", "intervention=signal_timing",
       "intervention.cycle_s=90", "compute.max_worlds_per_chunk=2", "compute.device=cpu"]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One local Ray instance for the module (2 CPUs), shut down after. It advertises one GPU with no CUDA
    device behind it: runs here say compute.device=cpu; a cuda run is planned on it, never run."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _run(backend, **attrs):
    cfg = compose_cfg(*RUN, f"compute={backend}")
    exe = runner.plan_counterfactual(cfg).exe
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
    # where the worlds ran (the Ray workers), and the driver apart from it
    assert man["device"] == "cpu (Ray workers)" and man["driver_device"].startswith("cpu (")


def test_the_manifest_says_the_worlds_ran_on_the_clusters_gpus_not_the_drivers_cpu():
    """compute=ray, compute.device=cuda from a driver without a GPU: the chunks run on the cluster's GPUs."""
    import torch

    from twins.compute.device import describe, manifest_devices

    cfg = compose_cfg(*RUN, "compute=ray", "compute.device=cuda")
    cpu = torch.device("cpu")
    assert manifest_devices(cfg, cpu) == {"device": "cuda (Ray workers' GPUs)", "driver_device": describe(cpu)}
    assert manifest_devices(compose_cfg(*RUN), cpu) == {"device": describe(cpu)}  # local: one and the same


def test_search_batches_through_ray_equal_local():
    import numpy as np

    from interventions._evaluate import TwinEvaluator

    base = ["scenario=junction", "intervention=signal_timing", "horizon_s=60", "replications=2",
            "compute.max_worlds_per_chunk=2", "search.params=[cycle_s]", "compute.device=cpu"]
    outs = []
    for backend in ("local", "ray"):
        ev = TwinEvaluator(compose_cfg(*base, f"compute={backend}"), ["cycle_s"])
        outs.append(ev(np.array([[60.0], [100.0]]), [0, 1]))
        assert ev.compute_account()["chunks"] == 3  # 3 arms × 2 replications in chunks of 2
    np.testing.assert_array_equal(outs[0].treated, outs[1].treated)
    np.testing.assert_array_equal(outs[0].baseline, outs[1].baseline)
    assert not np.array_equal(outs[0].treated[0], outs[0].treated[1])  # the candidates differ


# --- planning for the cluster's devices ----------------------------------------------------------------
def test_probe_on_a_worker_measures_what_the_driver_does():
    import torch

    from twins.compute import plan, ray_backend

    cfg = compose_cfg(*RUN, "compute=ray")
    job = plan.Job(cfg, plan.WorldBatch.replications(cfg.seed, 6), [])
    here = plan.probe_memory(job, torch.device("cpu"))
    there = ray_backend.probe_on_worker(job, "cpu")
    assert there.method == here.method + ", on a Ray worker" and ray_backend.free_on_worker("cpu") > 0
    # the same tensors, measured in another process (whose module caches start cold)
    assert there.bytes_per_world == pytest.approx(here.bytes_per_world, rel=0.1)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this process has a GPU: it probes here")
def test_cuda_on_the_cluster_is_planned_from_a_driver_without_one():
    """compute.device=cuda: chunks go to the cluster's GPUs although this process has none; the probe runs on a
    GPU worker. (This one has no CUDA device behind its GPU, so the probe fails there and the CPU probe stands
    in, labelled, with the GPU's free memory unknown.)"""
    cfg = compose_cfg(*RUN, "compute=ray", "compute.device=cuda")
    plan = runner.plan_counterfactual(cfg)
    exe, twin = plan.exe, plan.twin
    assert twin.device.type == "cpu"  # the driver's view twin
    d = exe.plan.describe()
    assert d["devices"] == ["cuda"] and {c.device for c in exe.plan.chunks} == {"cuda"} and d["chunks"] == 3
    assert "a stand-in for cuda (the probe on a Ray worker failed" in d["memory_method"]
    assert d["memory_method"].startswith("cpu: live tensor storage") and d["bytes_per_world"] > 0
    assert d["free_bytes"] is None and d["chunk_size_limited_by"] == "compute.max_worlds_per_chunk"
    cfg.compute.max_worlds_per_chunk = None  # nothing to size chunks by: one per GPU of the cluster
    d = runner.plan_counterfactual(cfg).exe.plan.describe()
    assert d["chunks"] == 1 and d["chunk_size_limited_by"].startswith("free memory unknown")


def test_ray_devices_are_the_clusters(monkeypatch):
    from twins.compute.ray_backend import parallel_slots, plan_devices
    from twins.core.errors import ConfigError

    cfg = lambda dev: compose_cfg(*RUN, "compute=ray", f"compute.device={dev}")  # noqa: E731
    assert plan_devices(cfg("auto")) == ["cuda"] and parallel_slots(cfg("auto")) == 1  # one GPU: one at a time
    assert plan_devices(cfg("cpu")) == ["cpu"] and parallel_slots(cfg("cpu")) == 2
    with pytest.raises(ConfigError, match=r"compute.device='cuda:1'.*cuda, auto or cpu with compute=ray"):
        plan_devices(cfg("cuda:1"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})  # a cluster without GPUs
    assert plan_devices(cfg("auto")) == ["cpu"]
    with pytest.raises(ConfigError, match=r"compute.device='cuda'.*auto or cpu on this Ray cluster.*no GPU"):
        plan_devices(cfg("cuda"))


# --- the worker probe: what is cached, and where it runs ---------------------------------------------------
@pytest.fixture
def worker_calls(monkeypatch):
    """Counts the Ray worker calls of ray_backend.measure (the real ones run; their caches start empty)."""
    from twins.compute import ray_backend

    monkeypatch.setattr(ray_backend, "_WORKER_PROBES", {})
    calls = {"probe": [], "free": []}
    real_probe, real_free = ray_backend.probe_on_worker, ray_backend.free_on_worker

    def probe(job, kind, *a, **k):
        calls["probe"].append(kind)
        return real_probe(job, kind, *a, **k)

    def free(kind, *a, **k):
        calls["free"].append(kind)
        return real_free(kind, *a, **k)

    monkeypatch.setattr(ray_backend, "probe_on_worker", probe)
    monkeypatch.setattr(ray_backend, "free_on_worker", free)
    return calls


def _job(*more):
    from twins.compute import plan

    cfg = compose_cfg(*RUN, "compute=ray", *more)
    return plan.Job(cfg, plan.WorldBatch.replications(cfg.seed, 6), [])


def test_a_cluster_elsewhere_is_probed_on_a_worker_and_its_free_memory_reread_at_every_plan(monkeypatch,
                                                                                           worker_calls):
    """compute.address other than local: the cluster is not this machine, so the probe and the free memory come
    from a worker. The probe is cached; the free memory is not (it changes between plans)."""
    from twins.compute import ray_backend

    job = _job("compute.address=auto")  # joins the running (module) cluster, as a remote one would be
    p1, f1 = ray_backend.measure(job, ["cpu"])
    assert p1.method.endswith(", on a Ray worker") and f1 > 0
    frees = iter([3e9, 1e9])  # the worker's free memory as it changes between two plans
    monkeypatch.setattr(ray_backend, "free_on_worker", lambda kind, *a, **k: worker_calls["free"].append(kind)
                        or next(frees))
    assert ray_backend.measure(job, ["cpu"]) == (p1, 3e9)
    assert ray_backend.measure(job, ["cpu"]) == (p1, 1e9)
    assert worker_calls == {"probe": ["cpu"], "free": ["cpu", "cpu", "cpu"]}

    def unreadable(kind, *a, **k):
        raise TimeoutError("no worker free")

    monkeypatch.setattr(ray_backend, "free_on_worker", unreadable)  # then unknown, and labelled so
    p, f = ray_backend.measure(job, ["cpu"])
    assert f is None and p.bytes_per_world == p1.bytes_per_world
    assert p.method == (p1.method + "; the worker's free memory unknown (reading it failed: TimeoutError: "
                        "no worker free)")
    # compute.address=local: the cluster is this machine, which has the chunks' device: probed here
    p, _ = ray_backend.measure(_job("compute.address=local"), ["cpu"])
    assert not p.method.endswith("on a Ray worker") and worker_calls["probe"] == ["cpu"]


def test_a_driver_gpu_does_not_stand_in_for_a_remote_clusters(monkeypatch, worker_calls):
    """A driver with a GPU and a cluster elsewhere: the probe runs on a GPU worker, not on the driver's cuda:0
    (torch.cuda is faked as present; the module cluster's GPU has no CUDA device behind it, so the probe fails
    there and the labelled CPU stand-in is used)."""
    import torch

    from twins.compute import plan, ray_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(plan, "measure_here", lambda *a: pytest.fail("probed on the driver's GPU"))
    p, free = ray_backend.measure(_job("compute.address=auto", "compute.device=cuda"), ["cuda"])
    assert worker_calls["probe"] == ["cuda"] and free is None
    assert "a stand-in for cuda (the probe on a Ray worker failed" in p.method


def test_a_failed_worker_probe_is_cached_too(monkeypatch, worker_calls):
    """A probe that failed (no worker with the device within PROBE_TIMEOUT_S) is not retried at every plan."""
    from twins.compute import ray_backend

    def fails(job, kind, *a, **k):
        worker_calls["probe"].append(kind)
        raise TimeoutError("no worker with a GPU within the timeout")

    monkeypatch.setattr(ray_backend, "probe_on_worker", fails)
    job = _job("compute.address=auto", "compute.device=cuda")
    first = ray_backend.measure(job, ["cuda"])
    assert ray_backend.measure(job, ["cuda"]) == first and first[1] is None
    assert "TimeoutError: no worker with a GPU" in first[0].method and "free memory unknown" in first[0].method
    assert worker_calls == {"probe": ["cuda"], "free": []}
    assert ray_backend.PROBE_TIMEOUT_S <= 120  # a missing GPU worker costs minutes at most, once
