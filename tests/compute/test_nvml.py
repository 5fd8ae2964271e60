"""GPU energy from NVML's cumulative counter (twins.compute.accounting), with a fake ``pynvml`` module: the chunk's
GPU is found by UUID (else through CUDA_VISIBLE_DEVICES: numbers or GPU- UUIDs), the counter difference is
converted from mJ to J, and where NVML is missing or fails, or the GPU cannot be told for sure (a MIG instance, a
UUID NVML does not list), the account says the energy is unavailable (never another GPU's or a made-up figure).
No CUDA tensors are faked: only torch.cuda's device lookup and synchronize, which measure() calls."""
import sys
import time
import types

import pytest
import torch

from twins.compute import accounting

UUIDS = ["0a1b2c3d-0000-0000-0000-000000000000", "0a1b2c3d-1111-1111-1111-111111111111",
         "0a1b2c3d-2222-2222-2222-222222222222"]


class NVMLError(Exception):
    pass


def fake_pynvml(uuids=UUIDS, fail_init=False, unsupported=False, names=None):
    """A ``pynvml`` stand-in: GPU ``i``'s energy counter (mJ) advances by ``(i + 1) × 1000`` at every read."""
    nv = types.ModuleType("pynvml")
    nv.NVMLError = NVMLError
    nv.counters = [5_000_000 + 777 * i for i in range(len(uuids))]
    nv.reads, nv.inits = [], 0

    def nvmlInit():
        nv.inits += 1
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def nvmlDeviceGetHandleByIndex(i):
        if not 0 <= i < len(uuids):
            raise NVMLError("Invalid Argument")
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(h):
        if unsupported:
            raise NVMLError("Not Supported")
        i = h[1]
        nv.reads.append(i)
        nv.counters[i] += (i + 1) * 1000
        return nv.counters[i]

    nv.nvmlInit = nvmlInit
    nv.nvmlDeviceGetCount = lambda: len(uuids)
    nv.nvmlDeviceGetHandleByIndex = nvmlDeviceGetHandleByIndex
    nv.nvmlDeviceGetUUID = lambda h: ("GPU-" + uuids[h[1]]).encode()  # older pynvml returns bytes
    nv.nvmlDeviceGetName = lambda h: (names or ["NVIDIA H100 80GB HBM3"] * len(uuids))[h[1]]
    nv.nvmlDeviceGetTotalEnergyConsumption = nvmlDeviceGetTotalEnergyConsumption
    return nv


@pytest.fixture(autouse=True)
def fresh_nvml(monkeypatch):
    """No NVML module state carried between tests (accounting caches the initialised module)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    accounting._nvml.cache_clear()
    yield
    accounting._nvml.cache_clear()


def install(monkeypatch, nv, uuid=None):
    """``nv`` as ``pynvml``; torch.cuda answering for a GPU whose UUID is ``uuid`` (None: no uuid property)."""
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)

    def props(index):
        return types.SimpleNamespace(name="Fake GPU", **({"uuid": uuid} if uuid is not None else {}))

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)


def chunk_account(device="cuda:0", work_s=0.0):
    """A chunk (``work_s`` seconds long) measured on ``device``, in a run's account: (usage, summary)."""
    meter = accounting.RunMeter(cpu_watts_per_core=5.0).start()
    with accounting.measure(torch.device(device)) as u:
        time.sleep(work_s)
    meter.add(u)
    return u, meter.stop().summary()


def test_counter_of_the_chunks_gpu_found_by_uuid(monkeypatch):
    nv = fake_pynvml()
    install(monkeypatch, nv, uuid=UUIDS[1])  # torch's cuda:0 is NVML's GPU 1 (UUIDs match without "GPU-")
    u, s = chunk_account("cuda:0")
    assert set(nv.reads) == {1} and len(nv.reads) == 2  # read before and after the chunk, on its GPU only
    assert u.device == "cuda" and u.gpu_energy_j == pytest.approx(2.0)  # 2000 mJ between the reads
    assert s["energy"]["cuda"] == {"joules": 2.0, "method": "nvml", "estimate": False,
                                   "note": "NVML total-energy counter per chunk's GPU (whole GPU)"}
    assert s["device_seconds"]["cuda"] == pytest.approx(u.wall_s, abs=1e-3)
    assert s["energy_total_j"] == pytest.approx(2.0 + s["energy"]["cpu"]["joules"], abs=1e-3)
    assert nv.inits == 1  # NVML is initialised once per process, not per read


def test_index_fallback_follows_cuda_visible_devices(monkeypatch):
    nv = fake_pynvml()
    install(monkeypatch, nv, uuid=None)  # no uuid property: match by number
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # as Ray sets it: torch's cuda:0 is physical GPU 2
    u, s = chunk_account("cuda:0")
    assert set(nv.reads) == {2} and u.gpu_energy_j == pytest.approx(3.0)
    assert s["energy"]["cuda"]["joules"] == 3.0 and s["energy"]["cuda"]["method"] == "nvml"
    nv.reads.clear()
    u, _ = chunk_account("cuda:1")
    assert set(nv.reads) == {0} and u.gpu_energy_j == pytest.approx(1.0)


def test_a_uuid_nvml_does_not_list_is_unknown_not_the_index(monkeypatch):
    nv = fake_pynvml()
    assert accounting.nvml_energy_mj(nv, "GPU-" + UUIDS[2], 0) == nv.counters[2]  # with the prefix, too
    assert nv.reads == [2]
    # torch knows the device's UUID and NVML lists no such GPU (a MIG instance): unknown, not GPU 1's counter
    assert accounting.nvml_energy_mj(nv, "9f9f9f9f-3333-3333-3333-333333333333", 1) is None
    assert accounting.nvml_energy_mj(nv, None, 7) is None  # no such GPU: unreadable, not an error
    assert nv.reads == [2]
    install(monkeypatch, nv, uuid="9f9f9f9f-3333-3333-3333-333333333333")  # ... and in a run's account
    u, s = chunk_account("cuda:1")
    assert nv.reads == [2] and u.gpu_energy_j is None
    assert s["energy"]["cuda"]["joules"] is None and s["energy"]["cuda"]["method"] == "unavailable"
    assert "MIG" in s["energy"]["cuda"]["note"]


def test_uuid_entries_of_cuda_visible_devices_are_resolved_through_nvml(monkeypatch):
    nv = fake_pynvml()
    install(monkeypatch, nv, uuid=None)  # no uuid property: CUDA_VISIBLE_DEVICES says which GPU
    # full UUIDs, and a unique prefix (CUDA accepts both): torch's cuda:0 is GPU 2, cuda:1 is GPU 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"GPU-{UUIDS[2]}, GPU-{UUIDS[0][:12]}")
    u, _ = chunk_account("cuda:0")
    assert set(nv.reads) == {2} and u.gpu_energy_j == pytest.approx(3.0)
    nv.reads.clear()
    u, _ = chunk_account("cuda:1")
    assert set(nv.reads) == {0} and u.gpu_energy_j == pytest.approx(1.0)


@pytest.mark.parametrize("visible, index", [
    ("MIG-5a6b7c8d-0000-0000-0000-000000000000", 0),  # a MIG instance: no energy counter of its own
    ("GPU-0a1b2c3d", 0),                              # a prefix of every GPU's UUID: ambiguous
    ("GPU-ffffffff-0000-0000-0000-000000000000", 0),  # a GPU NVML does not list
    ("1", 1),                                         # past the visible list
])
def test_cuda_visible_devices_entries_that_name_no_single_gpu_are_unknown(monkeypatch, visible, index):
    nv = fake_pynvml()
    install(monkeypatch, nv, uuid=None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    u, s = chunk_account(f"cuda:{index}")
    assert nv.reads == [] and u.gpu_energy_j is None and s["energy"]["cuda"]["joules"] is None


def test_numbers_are_trusted_only_where_cuda_numbers_gpus_as_nvml_does(monkeypatch):
    """CUDA's default order is fastest first; NVML's is PCI order. They agree for GPUs of one model, or under
    CUDA_DEVICE_ORDER=PCI_BUS_ID; otherwise a number (without a UUID) does not tell the GPU for sure."""
    nv = fake_pynvml(names=["NVIDIA H100", "NVIDIA A100", "NVIDIA H100"])
    install(monkeypatch, nv, uuid=None)
    u, _ = chunk_account("cuda:1")
    assert nv.reads == [] and u.gpu_energy_j is None
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    u, _ = chunk_account("cuda:1")
    assert set(nv.reads) == {1} and u.gpu_energy_j == pytest.approx(2.0)


@pytest.mark.parametrize("why", ["not installed", "init fails", "counter not supported"])
def test_energy_unavailable_is_said_not_invented(monkeypatch, why):
    if why == "not installed":
        install(monkeypatch, None, uuid=UUIDS[0])  # sys.modules["pynvml"] = None: import raises ImportError
    else:
        install(monkeypatch, fake_pynvml(fail_init=why == "init fails", unsupported=why == "counter not supported"),
                uuid=UUIDS[0])
    u, s = chunk_account("cuda:0", work_s=0.02)
    assert u.gpu_energy_j is None
    e = s["energy"]["cuda"]
    assert e["joules"] is None and e["method"] == "unavailable" and e["estimate"] is False
    assert "nvidia-ml-py" in e["note"]
    assert s["energy_total_j"] == s["energy"]["cpu"]["joules"]  # the total counts what is known
    # the GPU time is still counted: the chunk's wall time
    assert s["device_seconds"]["cuda"] == round(u.wall_s, 3) and u.wall_s >= 0.02


def test_cpu_chunks_never_read_nvml(monkeypatch):
    nv = fake_pynvml()
    install(monkeypatch, nv, uuid=UUIDS[0])
    u, s = chunk_account("cpu")
    assert nv.reads == [] and u.gpu_energy_j is None and "cuda" not in s["energy"]


def test_combine_adds_accounts_and_keeps_unknowns_unknown():
    a = {"wall_time_s": 1.0, "device_seconds": {"cpu": 2.0, "cuda": 1.0}, "chunks": 2,
         "energy": {"cpu": {"joules": 8.0, "method": "estimate", "estimate": True, "note": "a"},
                    "cuda": {"joules": 100.0, "method": "nvml", "estimate": False, "note": "n"}}}
    b = {"wall_time_s": 0.5, "device_seconds": {"cpu": 1.0, "cuda": 0.5}, "chunks": 3,
         "energy": {"cpu": {"joules": 4.0, "method": "estimate", "estimate": True, "note": "b"},
                    "cuda": {"joules": None, "method": "unavailable", "estimate": False, "note": "u"}}}
    c = accounting.combine(a, b)
    assert c["wall_time_s"] == 1.5 and c["chunks"] == 5 and c["device_seconds"] == {"cpu": 3.0, "cuda": 1.5}
    assert c["energy"]["cpu"]["joules"] == 12.0 and c["energy"]["cpu"]["method"] == "estimate"
    assert c["energy"]["cuda"]["joules"] is None and c["energy"]["cuda"]["method"] == "mixed: nvml, unavailable"
    assert c["energy_total_j"] == 12.0 and c["energy_is_estimate"] is True
    assert accounting.combine(a)["energy"] == a["energy"]
