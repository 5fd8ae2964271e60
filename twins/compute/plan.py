"""The compute plan: how a run's W worlds are split into chunks that fit the device(s).

A run is a :class:`Job` (the config, its whole :class:`~twins.core.worlds.WorldBatch`
and the counterfactual arms). The planner

1. **probes** the memory one world needs: it builds the scenario's twin on 1
   and on 4 worlds and steps each a few times; the difference is the cost of
   a world, the rest is the twin's fixed cost (network, route tables). On
   CUDA the figure is the peak of ``torch.cuda.max_memory_allocated`` (step
   temporaries included); on CPU it is the storage of every tensor alive
   after the probe steps (found through the garbage collector), times
   :data:`CPU_TRANSIENT_FACTOR` to cover a step's temporaries. A run of no more
   worlds than the probe's own 4 is not probed (it would cost as much as the run).
   Under ``compute=ray`` the devices are the cluster's (:func:`targets`): a GPU run
   from a driver without a GPU is probed on a Ray GPU worker
   (:func:`twins.compute.ray_backend.measure`), falling back, labelled in
   ``memory_method``, to the CPU probe with the free memory unknown;
2. sizes a chunk to ``compute.memory_fraction`` of the free memory
   (``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of ``/proc/meminfo``
   on CPU), capped by ``compute.max_worlds_per_chunk``;
3. splits the worlds into equal contiguous chunks — at least one per parallel
   slot (every visible GPU of ``compute.device=auto|cuda``; every Ray worker) —
   and deals them out over the devices.

Chunks are reassembled in world order (``twins.compute.execute``); batch
independence (DESIGN §3.2, ``tests/core/test_causal_contract.py``) makes the
result bit-identical to one batch.
"""
from __future__ import annotations

import gc
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch

from .device import check_device_spec, resolve_device, resolve_dtype

log = logging.getLogger("twins")

PROBE_WORLDS = (1, 4)
PROBE_STEPS = 3
#: on CPU the probe sees the live state only; a step's temporaries are allowed for by this factor
CPU_TRANSIENT_FACTOR = 2.0
#: a planned search batch leaves the sampler at least this many ask/tell rounds
MIN_SEARCH_ROUNDS = 4


@dataclass
class Job:
    """One run's worth of work: ``worlds`` (all of them) of ``cfg``'s scenario; ``arms`` (baseline
    first) are written into each world by the intervention when there are several."""

    cfg: DictConfig
    worlds: WorldBatch
    arms: list = field(default_factory=list)

    @property
    def W(self) -> int:
        return self.worlds.size

    @property
    def n_steps(self) -> int:
        return int(round(float(self.cfg.horizon_s) / float(self.cfg.dt_s)))


@dataclass(frozen=True)
class Chunk:
    id: int
    index: tuple[int, ...]  # global world indices, ascending
    device: str

    @property
    def size(self) -> int:
        return len(self.index)


@dataclass(frozen=True)
class MemoryProbe:
    bytes_per_world: float
    fixed_bytes: float
    method: str


@dataclass
class ComputePlan:
    chunks: list[Chunk]
    devices: list[str]
    chunk_size: int
    probe: MemoryProbe | None
    free_bytes: float | None
    reason: str  # what limited the chunk size

    def describe(self) -> dict:
        """The manifest's ``compute`` block."""
        p = self.probe
        return {"chunks": len(self.chunks), "chunk_size": self.chunk_size, "devices": self.devices,
                "chunk_size_limited_by": self.reason,
                "bytes_per_world": None if p is None else int(p.bytes_per_world),
                "fixed_bytes": None if p is None else int(p.fixed_bytes),
                "memory_method": None if p is None else p.method,
                "free_bytes": None if self.free_bytes is None else int(self.free_bytes)}


# --- devices --------------------------------------------------------------------------------------
def resolve_devices(spec: str) -> list[torch.device]:
    """``auto`` and ``cuda``: every visible GPU (CPU when none); ``cuda:N``: that one; ``cpu``."""
    first = resolve_device(spec)  # validates (clear error for cuda where there is none)
    s = str(spec).strip().lower()
    if first.type == "cuda" and s in ("auto", "cuda"):
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [first]


def free_bytes(device: torch.device) -> float | None:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        import os

        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


# --- building and probing ------------------------------------------------------------------------
def build_chunk_twin(job: Job, index, device):
    """The twin of ``job``'s worlds ``index`` on ``device``, each world carrying its arm's parameters."""
    import interventions
    import scenarios
    from interventions import counterfactual as cf

    sub = job.worlds.subset(list(index))
    twin = scenarios.build_twin(job.cfg, sub, torch.device(device), resolve_dtype(job.cfg.compute.dtype))
    if len(job.arms) > 1:
        cf.apply_arms(interventions.get(job.cfg.get("intervention", None)), twin, job.arms)
    return twin


def _live_tensor_bytes(device_type: str) -> dict[int, int]:
    import warnings

    out = {}
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns of deprecations
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if isinstance(o, torch.Tensor)]
    for o in tensors:
        if o.device.type == device_type:
            try:
                s = o.untyped_storage()
                out[s.data_ptr()] = s.nbytes()
            except (RuntimeError, NotImplementedError):  # sparse / meta tensors
                pass
    return out


def _probe_bytes(job: Job, n: int, device: torch.device) -> float:
    steps = min(PROBE_STEPS, job.n_steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        twin = build_chunk_twin(job, range(n), device)
        for _ in range(steps):
            twin.step()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del twin
        torch.cuda.empty_cache()
        return float(peak)
    gc.collect()
    before = _live_tensor_bytes("cpu")
    twin = build_chunk_twin(job, range(n), device)
    for _ in range(steps):
        twin.step()
    after = _live_tensor_bytes("cpu")
    del twin
    return float(sum(b for p, b in after.items() if p not in before)) * CPU_TRANSIENT_FACTOR


_PROBES: dict[tuple, MemoryProbe] = {}


def _probe_key(job: Job, device: torch.device) -> tuple:
    c = job.cfg
    parts = [OmegaConf.to_yaml(c.scenario, resolve=True), OmegaConf.to_yaml(c.get("intervention") or {}, resolve=True),
             c.horizon_s, c.dt_s, c.compute.dtype, str(device), c.get("output") and OmegaConf.to_yaml(c.output)]
    return tuple(str(p) for p in parts)


def probe_memory(job: Job, device: torch.device) -> MemoryProbe:
    """Bytes per world and fixed bytes of ``job``'s twin on ``device`` (cached per scenario and device)."""
    key = _probe_key(job, device)
    if key in _PROBES:
        return _PROBES[key]
    probe_job = Job(job.cfg, WorldBatch.replications(job.worlds.seed, max(PROBE_WORLDS)), [])
    n1, n2 = PROBE_WORLDS
    b1, b2 = _probe_bytes(probe_job, n1, device), _probe_bytes(probe_job, n2, device)
    per_world = (b2 - b1) / (n2 - n1)
    if per_world <= 0:  # padding can hide the difference: charge the whole probe to its worlds
        per_world = b2 / n2
    method = ("cuda: peak torch.cuda.max_memory_allocated over build + %d steps" % PROBE_STEPS
              if device.type == "cuda" else
              "cpu: live tensor storage after build + %d steps (via gc) x %g for step temporaries"
              % (PROBE_STEPS, CPU_TRANSIENT_FACTOR))
    p = MemoryProbe(float(per_world), float(max(b1 - per_world * n1, 0.0)), method)
    _PROBES[key] = p
    return p


# --- the plan -------------------------------------------------------------------------------------
def check_compute(cfg: DictConfig) -> None:
    """Compute settings that can be rejected before anything is built."""
    c = cfg.compute
    cap = c.get("max_worlds_per_chunk", None)
    if cap is not None and (not isinstance(cap, int) or cap < 1):
        raise ConfigError("compute.max_worlds_per_chunk", cap, "an integer >= 1, or null to size chunks to memory")
    frac = float(c.get("memory_fraction", 0.8))
    if not 0 < frac <= 1:
        raise ConfigError("compute.memory_fraction", frac, "a fraction in (0, 1], e.g. 0.8")
    workers = c.get("workers", None)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError("compute.workers", workers, "an integer >= 1, or null for every worker the backend has")
    backend = str(c.get("backend", "local"))
    if backend not in ("local", "ray"):
        from twins.core.errors import suggest

        raise ConfigError("compute.backend", backend, "local or ray", suggest(backend, ["local", "ray"]))
    if backend == "ray":  # the cluster's devices count, not this machine's: checked on connecting
        check_device_spec(c.device)
    else:
        resolve_devices(c.device)


def measure_here(job: Job, devices) -> tuple[MemoryProbe, float | None]:
    """The probe on the first of ``devices`` (in this process), and the least free memory among them."""
    devices = [torch.device(d) for d in devices]
    mp = probe_memory(job, devices[0])
    frees = [free_bytes(d) for d in devices]
    return mp, (min(f for f in frees if f is not None) if any(f is not None for f in frees) else None)


def targets(cfg: DictConfig):
    """``(devices, measure)``: the devices chunks are dealt to, and ``measure(job, devices) -> (probe, free
    bytes)`` for them — this machine's (``compute=local``), or the Ray cluster's (``compute=ray``, where the
    probe runs on a worker when this machine lacks the device: :func:`twins.compute.ray_backend.measure`)."""
    if str(cfg.compute.get("backend", "local")) == "ray":
        from . import ray_backend

        return ray_backend.plan_devices(cfg), ray_backend.measure
    return [str(d) for d in resolve_devices(cfg.compute.device)], measure_here


def worlds_that_fit(probe: MemoryProbe, free: float | None, fraction: float) -> int | None:
    if free is None:
        return None
    return int((fraction * free - probe.fixed_bytes) // max(probe.bytes_per_world, 1.0))


def make_plan(job: Job, parallel: int | None = None, probe: bool = True) -> ComputePlan:
    """Split ``job``'s worlds into chunks (see the module docstring). ``parallel``: chunks that can run
    at once (default: one per device)."""
    cfg = job.cfg
    check_compute(cfg)
    devices, measure = targets(cfg)
    W = job.W
    cap = cfg.compute.get("max_worlds_per_chunk", None)
    size, reason, mp, free = W, "all worlds fit" if W > max(PROBE_WORLDS) else "not probed: a small run", None, None
    if probe and W > max(PROBE_WORLDS):  # a smaller run costs no more than the probe itself
        mp, free = measure(job, devices)
        if free is None:
            reason = "free memory unknown (see memory_method): not sized to memory"
        fit = worlds_that_fit(mp, free, float(cfg.compute.get("memory_fraction", 0.8)))
        if fit is not None and fit < size:
            if fit < 1:
                log.warning("compute: one world needs ~%.0f MB, more than %.0f%% of the %.0f MB free on %s; "
                            "trying one world per chunk", mp.bytes_per_world / 1e6,
                            100 * float(cfg.compute.get("memory_fraction", 0.8)), free / 1e6, devices[0])
            size, reason = max(fit, 1), "device memory"
    if cap is not None and cap < size:
        size, reason = int(cap), "compute.max_worlds_per_chunk"
    slots = parallel if parallel is not None else len(devices)
    n = max(math.ceil(W / size), min(W, max(int(slots), 1)))
    if n > math.ceil(W / size) and reason not in ("device memory", "compute.max_worlds_per_chunk"):
        reason = "one chunk per parallel worker" + (" (free memory unknown)" if mp is not None and free is None else "")
    parts = np.array_split(np.arange(W), n)
    chunks = [Chunk(i, tuple(int(x) for x in p), str(devices[i % len(devices)])) for i, p in enumerate(parts)]
    return ComputePlan(chunks, [str(d) for d in devices], max(len(p) for p in parts), mp, free, reason)


def search_batch(cfg: DictConfig, replications: int, budget: int) -> int:
    """Candidates per search ask when ``search.batch`` is null: as many as fit one chunk on the device next
    to the baseline arm (``(K + 1) × replications`` worlds), leaving the sampler at least
    :data:`MIN_SEARCH_ROUNDS` rounds of its budget."""
    check_compute(cfg)
    devices, measure = targets(cfg)
    mp, free = measure(Job(cfg, WorldBatch.replications(cfg.seed, replications), []), devices)
    fit = worlds_that_fit(mp, free, float(cfg.compute.get("memory_fraction", 0.8)))
    cap = cfg.compute.get("max_worlds_per_chunk", None)
    if cap is not None:
        fit = cap if fit is None else min(fit, cap)
    k_mem = max(1, (fit // max(replications, 1)) - 1) if fit is not None else budget
    k = max(1, min(k_mem, math.ceil(budget / MIN_SEARCH_ROUNDS), budget))
    log.info("search: batch %d candidates (memory allows %d; budget %d in >= %d rounds)", k, k_mem, budget,
             MIN_SEARCH_ROUNDS)
    return k
