"""Every run folder carries its compute plan and its compute/energy account."""
import json

import pytest

from twins.compute import accounting
from twins.core import runner

from .conftest import compose_cfg


def test_manifest_records_wall_time_device_seconds_and_energy(tmp_path):
    cfg = compose_cfg("scenario=junction", "horizon_s=120", "replications=5", "compute.max_worlds_per_chunk=3",
                      "compute.cpu_watts_per_core=10")
    runner.run(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    acc, comp = man["accounting"], man["compute"]
    assert comp["chunks"] == 2 and comp["devices"] == ["cpu"] and comp["bytes_per_world"] > 0
    assert man["device"].startswith("cpu (") and "driver_device" not in man  # local: the driver ran the worlds
    assert comp["memory_method"].startswith("cpu:")
    assert 0 < acc["wall_time_s"] <= man["wall_time_s"]
    cpu_s = acc["device_seconds"]["cpu"]
    assert cpu_s > 0 and "cuda" not in acc["device_seconds"]
    e = acc["energy"]["cpu"]
    if accounting.rapl_read() is None:  # this machine: the stated figure, labelled an estimate
        assert e["method"] == "estimate" and e["estimate"] is True and acc["energy_is_estimate"] is True
        assert e["joules"] == pytest.approx(10 * cpu_s, rel=1e-3, abs=1e-2)
    else:
        assert e["method"] == "rapl" and e["joules"] > 0
    assert acc["energy_total_j"] == pytest.approx(e["joules"])


def test_rapl_counter_wraps(tmp_path):
    before = {"intel-rapl:0": (9_000_000, 10_000_000)}
    after = {"intel-rapl:0": (1_000_000, 10_000_000)}
    assert accounting.rapl_joules(before, after) == pytest.approx(2.0)
    assert accounting.rapl_joules(None, after) is None


def test_remote_chunks_add_their_cpu_time_local_ones_do_not():
    m = accounting.RunMeter(cpu_watts_per_core=5.0).start().stop()
    m.add(accounting.Usage(device="cpu", wall_s=1.0, cpu_s=2.0))  # this process: already in m.cpu_s
    m.add(accounting.Usage(device="cpu", wall_s=1.0, cpu_s=3.0, pid=-1))  # another process
    m.add(accounting.Usage(device="cuda", wall_s=4.0, cpu_s=0.0, gpu_energy_j=100.0, pid=-1))
    s = m.summary()
    assert s["device_seconds"]["cpu"] == pytest.approx(m.cpu_s + 3.0, abs=1e-3)
    assert s["device_seconds"]["cuda"] == pytest.approx(4.0)
    assert s["energy"]["cuda"] == {"joules": 100.0, "method": "nvml", "estimate": False,
                                   "note": "NVML total-energy counter per chunk's GPU (whole GPU)"}
    m.add(accounting.Usage(device="cuda", wall_s=1.0, gpu_energy_j=None, pid=-1))  # no NVML there
    assert m.summary()["energy"]["cuda"]["joules"] is None
