"""What a run cost: wall time, device-seconds per device type, energy.

- **CPU time** is the process CPU time (``time.process_time``: every thread of
  the process) of the driver plus, for chunks run in other processes (Ray
  workers), theirs. It is reported as ``device_seconds["cpu"]`` (core-seconds).
- **GPU time** is the wall time a chunk held a GPU, summed over chunks
  (``device_seconds["cuda"]``).
- **GPU energy** comes from NVML's cumulative energy counter
  (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer) read before and
  after each chunk on that chunk's GPU, when ``pynvml`` (the ``nvidia-ml-py``
  package) is importable. It is the whole GPU's energy, including anything
  else running on it. Without NVML, or where the chunk's GPU cannot be told
  for sure (a MIG instance, a UUID NVML does not list: :func:`nvml_handle`),
  a GPU chunk's energy is ``null``.
- **CPU energy** comes from RAPL package counters
  (``/sys/class/powercap/intel-rapl:N/energy_uj``) where they are readable and
  every chunk ran on this machine — the whole package, so other processes on
  the machine are included; otherwise it is an **estimate**:
  ``compute.cpu_watts_per_core`` × CPU core-seconds, labelled ``estimate``
  (no DRAM, no idle power).
"""
from __future__ import annotations

import functools
import glob
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: default for compute.cpu_watts_per_core: a server core under load, from TDP / cores of an
#: AMD EPYC 7763 (280 W / 64 cores = 4.4 W). A stated figure, not a measurement.
DEFAULT_CPU_WATTS_PER_CORE = 4.4


# --- counters -----------------------------------------------------------------------------------
def _rapl_zones() -> list[Path]:
    """Top-level RAPL package zones (``intel-rapl:N``; sub-zones ``:N:M`` are parts of a package)."""
    zones = []
    for d in sorted(glob.glob("/sys/class/powercap/intel-rapl:*")):
        if d.count(":") == 1 and os.access(os.path.join(d, "energy_uj"), os.R_OK):
            zones.append(Path(d))
    return zones


def rapl_read() -> dict[str, tuple[int, int]] | None:
    """``{zone: (energy_uj, max_energy_range_uj)}`` or None where RAPL is not readable."""
    out = {}
    for z in _rapl_zones():
        try:
            e = int((z / "energy_uj").read_text())
            r = int((z / "max_energy_range_uj").read_text()) if (z / "max_energy_range_uj").exists() else 0
        except (OSError, ValueError):
            return None
        out[z.name] = (e, r)
    return out or None


def rapl_joules(before, after) -> float | None:
    if not before or not after or set(before) != set(after):
        return None
    total = 0.0
    for k, (e0, rng) in before.items():
        e1 = after[k][0]
        d = e1 - e0 if e1 >= e0 else e1 + rng - e0  # the counter wraps at max_energy_range_uj
        total += d / 1e6
    return total


@functools.lru_cache(maxsize=1)
def _nvml():
    """The initialised ``pynvml`` module, or None (not installed, no driver). Once per process
    (``_nvml.cache_clear()`` forgets it)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    return pynvml


def _bare_uuid(u) -> str:
    u = u.decode() if isinstance(u, bytes) else str(u)
    u = u.strip().lower()
    return u[4:] if u.startswith("gpu-") else u


def _nvml_gpus(nv):
    """``[(bare uuid, handle)]`` of every GPU NVML lists (NVML numbers them physically, ignoring
    ``CUDA_VISIBLE_DEVICES``; MIG instances are not among them)."""
    out = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        out.append((_bare_uuid(nv.nvmlDeviceGetUUID(h)), h))
    return out


def _pci_numbering(nv) -> bool:
    """Does CUDA number the GPUs as NVML does (see :func:`nvml_handle`)?"""
    if os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper() == "PCI_BUS_ID":
        return True
    names = {str(nv.nvmlDeviceGetName(h)) for _, h in _nvml_gpus(nv)}
    return len(names) <= 1


def nvml_handle(nv, uuid: str | None, index: int):
    """NVML's handle of torch's ``cuda:index``, or None where it cannot be told for sure (then the energy is
    unknown, never another GPU's):

    - by ``uuid`` (torch's, matched with or without the ``GPU-`` prefix) when torch knows it; a UUID NVML does
      not list (a MIG instance, whose energy NVML does not count on its own) gives None;
    - else through ``CUDA_VISIBLE_DEVICES`` (which Ray sets for each task, and NVML ignores): its entry
      ``index`` is a physical number, or a ``GPU-`` UUID (or a unique prefix of one, as CUDA accepts); a
      ``MIG-`` entry, or one that matches no GPU, gives None;
    - with no ``CUDA_VISIBLE_DEVICES``, NVML's GPU ``index``.

    A number is CUDA's, which is NVML's (PCI order) under ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or when every GPU is
    the same model (CUDA's default fastest-first order then keeps PCI order); otherwise a number gives None.
    """
    if uuid:
        want = _bare_uuid(uuid)
        return next((h for u, h in _nvml_gpus(nv) if u == want), None)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return nv.nvmlDeviceGetHandleByIndex(index) if _pci_numbering(nv) else None
    entries = [e.strip() for e in visible.split(",")]
    entry = entries[index] if 0 <= index < len(entries) else ""
    if entry.isdigit():
        return nv.nvmlDeviceGetHandleByIndex(int(entry)) if _pci_numbering(nv) else None
    if entry.lower().startswith("gpu-"):
        want = _bare_uuid(entry)
        found = [h for u, h in _nvml_gpus(nv) if u.startswith(want)]
        return found[0] if len(found) == 1 else None
    return None  # MIG-..., empty, or not a device


def nvml_energy_mj(nv, uuid: str | None, index: int) -> float | None:
    """NVML's cumulative energy counter (mJ) of torch's ``cuda:index`` (found by :func:`nvml_handle`); None
    where that GPU cannot be identified for sure or its counter cannot be read."""
    try:
        h = nvml_handle(nv, uuid, index)
        return None if h is None else float(nv.nvmlDeviceGetTotalEnergyConsumption(h))
    except Exception:  # not supported on this GPU (pre-Volta) or driver, or no such GPU
        return None


def gpu_energy_mj(device: torch.device) -> float | None:
    """NVML's cumulative energy counter (mJ) of ``device`` (a torch CUDA device), or None."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    nv = _nvml()
    if nv is None:
        return None
    try:
        index = device.index if device.index is not None else torch.cuda.current_device()
    except Exception:
        index = 0
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # an older torch without the uuid property
        uuid = None
    return nvml_energy_mj(nv, uuid, index)


# --- what one chunk (or the driver) used ---------------------------------------------------------
@dataclass
class Usage:
    """Measured by :func:`measure` around a piece of work in one process."""

    device: str = "cpu"  # device type the work ran on: cpu | cuda
    wall_s: float = 0.0
    cpu_s: float = 0.0
    gpu_energy_j: float | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)


@contextmanager
def measure(device: torch.device | str = "cpu"):
    """``with measure(dev) as u: ...`` fills ``u`` (a :class:`Usage`) when the block ends."""
    device = torch.device(device)
    u = Usage(device=device.type)
    e0 = gpu_energy_mj(device)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield u
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        u.wall_s = time.perf_counter() - t0
        u.cpu_s = time.process_time() - c0
        e1 = gpu_energy_mj(device) if e0 is not None else None
        u.gpu_energy_j = (e1 - e0) / 1e3 if (e0 is not None and e1 is not None) else None


class RunMeter:
    """The account of one run: the driver's own usage plus every chunk's.

    ``start()`` / ``stop()`` bracket the run in the driver process; ``add(usage)``
    records a chunk. Chunks that ran in the driver's process are already inside
    its CPU time and are not counted twice.
    """

    def __init__(self, cpu_watts_per_core: float = DEFAULT_CPU_WATTS_PER_CORE):
        self.cpu_watts_per_core = float(cpu_watts_per_core)
        self.chunks: list[Usage] = []
        self._t0 = self._c0 = None
        self._rapl0 = None
        self.wall_s = self.cpu_s = 0.0
        self._rapl_j: float | None = None

    def start(self) -> "RunMeter":
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._rapl0 = rapl_read()
        return self

    def add(self, usage: Usage) -> None:
        self.chunks.append(usage)

    def stop(self) -> "RunMeter":
        if self._t0 is not None:
            self.wall_s += time.perf_counter() - self._t0
            self.cpu_s += time.process_time() - self._c0
            rj = rapl_joules(self._rapl0, rapl_read())
            self._rapl_j = rj if self._rapl_j is None else (self._rapl_j + rj if rj is not None else None)
            self._t0 = None
        return self

    def merge(self, other: "RunMeter") -> None:
        """Add another run's account (e.g. every evaluation of a search)."""
        self.wall_s += other.wall_s
        self.cpu_s += other.cpu_s
        self.chunks += other.chunks
        if other._rapl_j is not None:
            self._rapl_j = (self._rapl_j or 0.0) + other._rapl_j

    def summary(self) -> dict:
        """The manifest's ``accounting`` block."""
        me, host = os.getpid(), socket.gethostname()
        remote = [u for u in self.chunks if u.pid != me or u.host != host]
        cpu_s = self.cpu_s + sum(u.cpu_s for u in remote)
        gpu_chunks = [u for u in self.chunks if u.device == "cuda"]
        device_seconds = {"cpu": round(cpu_s, 3)}
        if gpu_chunks:
            device_seconds["cuda"] = round(sum(u.wall_s for u in gpu_chunks), 3)
        all_here = all(u.host == host for u in self.chunks)
        if self._rapl_j is not None and all_here:
            cpu_energy = {"joules": round(self._rapl_j, 3), "method": "rapl",
                          "note": "RAPL package counters over the run: includes every process on the machine",
                          "estimate": False}
        else:
            cpu_energy = {"joules": round(cpu_s * self.cpu_watts_per_core, 3), "method": "estimate",
                          "note": f"{self.cpu_watts_per_core:g} W per core (compute.cpu_watts_per_core) "
                                  f"x {cpu_s:.3f} CPU core-seconds; RAPL not readable here",
                          "estimate": True}
        energy = {"cpu": cpu_energy}
        if gpu_chunks:
            known = [u.gpu_energy_j for u in gpu_chunks if u.gpu_energy_j is not None]
            energy["cuda"] = ({"joules": round(sum(known), 3), "method": "nvml", "estimate": False,
                               "note": "NVML total-energy counter per chunk's GPU (whole GPU)"}
                              if len(known) == len(gpu_chunks) else
                              {"joules": None, "method": "unavailable", "estimate": False,
                               "note": "NVML energy counter not available for every GPU chunk: install "
                                       "nvidia-ml-py (the counter needs a Volta or newer GPU); a MIG "
                                       "instance, or a GPU NVML cannot identify, has none"})
        known_j = [e["joules"] for e in energy.values() if e["joules"] is not None]
        return {
            "wall_time_s": round(self.wall_s, 3),
            "device_seconds": device_seconds,
            "energy": energy,
            "energy_total_j": round(sum(known_j), 3),
            "energy_is_estimate": any(e["estimate"] for e in energy.values()),
            "chunks": len(self.chunks),
        }


def combine(*accounts: dict) -> dict:
    """Several :meth:`RunMeter.summary` blocks as one (e.g. a run and its ethics evidence batches): times,
    device-seconds, chunks and joules add; a device's energy is unknown (null) when any part's is, and an
    estimate when any part's is."""
    accounts = [a for a in accounts if a]
    device_seconds: dict = {}
    energy: dict = {}
    for a in accounts:
        for k, v in (a.get("device_seconds") or {}).items():
            device_seconds[k] = round(device_seconds.get(k, 0.0) + float(v), 3)
        for k, e in (a.get("energy") or {}).items():
            energy.setdefault(k, []).append(e)
    out_energy = {}
    for k, parts in energy.items():
        methods = list(dict.fromkeys(str(e.get("method")) for e in parts))
        joules = [e.get("joules") for e in parts]
        out_energy[k] = {"joules": None if any(j is None for j in joules) else round(sum(joules), 3),
                         "method": methods[0] if len(methods) == 1 else "mixed: " + ", ".join(methods),
                         "estimate": any(bool(e.get("estimate")) for e in parts),
                         "note": parts[0].get("note") if len(parts) == 1 else
                         f"the sum of {len(parts)} accounts (see parts): " + "; ".join(
                             dict.fromkeys(str(e.get("note")) for e in parts))}
    known = [e["joules"] for e in out_energy.values() if e["joules"] is not None]
    return {"wall_time_s": round(sum(float(a.get("wall_time_s", 0.0)) for a in accounts), 3),
            "device_seconds": device_seconds,
            "energy": out_energy,
            "energy_total_j": round(sum(known), 3),
            "energy_is_estimate": any(e["estimate"] for e in out_energy.values()),
            "chunks": int(sum(int(a.get("chunks", 0)) for a in accounts))}
