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

Length: the memory probe (CPU and CUDA), the chunk sizing and the checks of every compute setting; one
reason to change: how worlds are split over devices.
"""
from __future__ import annotations

import dataclasses
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


def _is_tensor(o) -> bool:
    try:
        return isinstance(o, torch.Tensor)
    except ReferenceError:  # a dead weakref.proxy (torch.compile leaves some among the collector's objects)
        return False


def _live_tensor_bytes(device_type: str) -> dict[int, int]:
    import warnings

    out = {}
    with warnings.catch_warnings():  # isinstance() on some torch module objects warns of deprecations
        warnings.simplefilter("ignore")
        tensors = [o for o in gc.get_objects() if _is_tensor(o)]
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


def probe_key(job: Job, device: torch.device) -> tuple:
    c = job.cfg
    parts = [OmegaConf.to_yaml(c.scenario, resolve=True), OmegaConf.to_yaml(c.get("intervention") or {}, resolve=True),
             c.horizon_s, c.dt_s, c.compute.dtype, str(device), c.get("output") and OmegaConf.to_yaml(c.output)]
    return tuple(str(p) for p in parts)


def probe_memory(job: Job, device: torch.device) -> MemoryProbe:
    """Bytes per world and fixed bytes of ``job``'s twin on ``device`` (cached per scenario and device)."""
    key = probe_key(job, device)
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
def installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


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
    gb = c.get("max_memory_gb", None)
    if gb is not None and not (isinstance(gb, (int, float)) and math.isfinite(gb) and gb > 0):
        raise ConfigError("compute.max_memory_gb", gb, "a positive number of GB, or null for "
                          "compute.memory_fraction of the free memory")
    if backend == "ray":  # the cluster's devices count, not this machine's: checked on connecting
        if not installed("ray"):
            raise ConfigError("compute", "ray", "a backend that is installed: local, or ray with its extra",
                              'Ray is not installed: pip install -e ".[ray]" (or run with compute=local).')
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


def worlds_that_fit(probe: MemoryProbe, free: float | None, fraction: float, cap_bytes: float | None = None
                    ) -> int | None:
    """Worlds a chunk may hold: ``fraction`` of ``free``, and no more than ``cap_bytes``
    (``compute.max_memory_gb``) where set."""
    budget = None if free is None else fraction * free
    if cap_bytes is not None:
        budget = cap_bytes if budget is None else min(budget, cap_bytes)
    if budget is None:
        return None
    return int((budget - probe.fixed_bytes) // max(probe.bytes_per_world, 1.0))


def _cap_bytes(cfg: DictConfig) -> float | None:
    gb = cfg.compute.get("max_memory_gb", None)
    return None if gb is None else float(gb) * 1e9


def make_plan(job: Job, parallel: int | None = None, probe: bool = True) -> ComputePlan:
    """Split ``job``'s worlds into chunks (see the module docstring). ``parallel``: chunks that can run
    at once (default: one per device)."""
    cfg = job.cfg
    check_compute(cfg)
    devices, measure = targets(cfg)
    W = job.W
    cap = cfg.compute.get("max_worlds_per_chunk", None)
    # one world, from the config, before the probe builds anything (the whole run's and a search batch's
    # results are checked by their callers: cli.precheck, pipeline.plan_counterfactual)
    check_memory(cfg, 1, "one world of this batch", results=False)
    size, reason, mp, free = W, "all worlds fit" if W > max(PROBE_WORLDS) else "not probed: a small run", None, None
    if probe and W > max(PROBE_WORLDS):  # a smaller run costs no more than the probe itself
        mp, free = measure(job, devices)
        if free is None:
            reason = "free memory unknown (see memory_method): not sized to memory"
        frac = float(cfg.compute.get("memory_fraction", 0.8))
        fit = worlds_that_fit(mp, free, frac, _cap_bytes(cfg))
        if fit is not None and fit < size:
            if fit < 1:
                one = mp.fixed_bytes + mp.bytes_per_world
                gb = cfg.compute.get("max_memory_gb", None)
                limit, src = ((float(gb) * 1e9, f"compute.max_memory_gb={float(gb):g}") if gb is not None else
                              (frac * free, f"compute.memory_fraction={frac:g} of the {_fmt_bytes(free)} free "
                                            f"on {devices[0]}"))
                if one > limit:  # measured: even a chunk of one world does not fit
                    raise MemoryLimitError(
                        f"replications={cfg.replications!r}: one world of this run needs {_fmt_bytes(one)} on "
                        f"{devices[0]} (measured by the probe), above the limit of {_fmt_bytes(limit)} ({src}). "
                        f"Make a world smaller (fewer vehicles or particles, a smaller network, a shorter "
                        f"horizon), or set compute.max_memory_gb={math.ceil(one / 1e9):d} to run it anyway.",
                        "compute.max_memory_gb", gb)
                log.warning("compute: one world needs ~%.0f MB, more than %.0f%% of the %.0f MB free on %s; "
                            "trying one world per chunk", mp.bytes_per_world / 1e6, 100 * frac, free / 1e6,
                            devices[0])
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
    check_memory(cfg, 1, "one world of a search batch", results=False)  # before the probe builds anything
    devices, measure = targets(cfg)
    mp, free = measure(Job(cfg, WorldBatch.replications(cfg.seed, replications), []), devices)
    fit = worlds_that_fit(mp, free, float(cfg.compute.get("memory_fraction", 0.8)), _cap_bytes(cfg))
    cap = cfg.compute.get("max_worlds_per_chunk", None)
    if cap is not None:
        fit = cap if fit is None else min(fit, cap)
    k_mem = max(1, (fit // max(replications, 1)) - 1) if fit is not None else budget
    k = max(1, min(k_mem, math.ceil(budget / MIN_SEARCH_ROUNDS), budget))
    log.info("search: batch %d candidates (memory allows %d; budget %d in >= %d rounds)", k, k_mem, budget,
             MIN_SEARCH_ROUNDS)
    return k


# --- the resource estimate: from the config alone, before anything is allocated --------------------------
# The probe above measures, but it builds the twin: a typo such as replications=1e9, a flow of 1e9 veh/h or a
# 1000x1000 grid must be refused before that. The figures below are per entity, from peak-RSS measurements of
# CPU runs (figures off), rounded up; the estimate is meant as an upper bound within a few times the real peak.
#: a vehicle slot on the compute device: state, parameters, a step's temporaries (the probe: 290-370 B at float32)
VEHICLE_STATE_BYTES = 400
#: a vehicle's trips row on this machine, with the copies made merging chunks and writing Parquet
VEHICLE_RESULT_BYTES = 600
#: a particle slot (molecular twins; the probe: 75-110 B) and its share of the neighbour search
PARTICLE_STATE_BYTES = 512
#: per lane, recording interval and world: detector rows and interval records (4x4 grid: ~1.1 KB measured)
LANE_INTERVAL_BYTES = 1_200
#: per lane and world on the device: accumulators and per-lane step temporaries
LANE_STATE_BYTES = 200
#: per lane, shared by all worlds: the network's objects, Mesa agents and compiled tables (measured 5-9 KB)
LANE_FIXED_BYTES = 10_000
#: molecular: one time-series record of one world (a few species counts per group)
RECORD_BYTES = 400
#: per world: its outcome rows and bookkeeping (a 22-vehicle ring: ~18 KB per world all told)
WORLD_BYTES = 8_000
#: float64 state: the float columns double
FLOAT64_FACTOR = 1.4


class MemoryLimitError(ConfigError):
    """A run, search batch or chunk whose estimated memory is above the limit (one line: the estimate,
    the limit, what to change, and the override)."""

    def __init__(self, message: str, field: str, value):
        self.field, self.value, self.valid = field, value, "an estimate within the memory limit"
        ValueError.__init__(self, message)


@dataclass(frozen=True)
class MemoryEstimate:
    """Upper-bound memory of ``worlds`` worlds of a config, in three causes: the worlds themselves, the
    vehicles/particles of each world, and the network (shared, plus its per-world records)."""

    worlds: int
    entities: float  # vehicles/particles per world (an upper bound)
    noun: str  # "vehicles" | "particles"
    entity_field: tuple[str, object]  # the setting that sets ``entities`` (its key and value)
    entity_source: str  # in words, e.g. "scenario.flows_veh_h over horizon_s=3600"
    entity_state: float  # bytes on the device per entity and world
    entity_result: float  # bytes of results on this machine per entity and world
    network_fixed: float  # bytes shared by all worlds (network, route tables)
    network_state: float  # bytes on the device per world for the network (per-lane accumulators)
    network_result: float  # bytes of per-world records on this machine (detectors, time series)
    network_field: tuple[str, object] | None  # e.g. ("scenario.rows", 1000)
    network_source: str

    def device_bytes(self, at_once: int = 1) -> float:
        """The compute device: the network and ``at_once`` worlds' state (chunks can be one world)."""
        return self.network_fixed + at_once * (self.entities * self.entity_state + self.network_state)

    def result_bytes(self) -> float:
        """This machine: every world's results, held until the run folder is written."""
        return self.worlds * (WORLD_BYTES + self.entities * self.entity_result + self.network_result)

    def causes(self) -> dict[str, float]:
        """Bytes by cause (device for one world + results), for naming the setting to change."""
        W = self.worlds
        return {"worlds": W * WORLD_BYTES,
                "entities": self.entities * (self.entity_state + W * self.entity_result),
                "network": self.network_fixed + self.network_state + W * self.network_result}


def _finite(key: str, v) -> float:
    v = float(v)
    if not math.isfinite(v):
        raise ConfigError(key, v, "a finite number")
    return max(v, 0.0)


def _poisson_cap(n: float, flows: int) -> float:
    """A bound on the slots of ``flows`` Poisson flows carrying ``n`` expected vehicles in all (each flow:
    mean + 10 sd + 21, as ``Flow.capacity``; the sum of square roots is at most sqrt(flows * n))."""
    return n + 10.0 * math.sqrt(flows * n) + 21.0 * flows


def _traffic_bound(cfg) -> dict:
    """Vehicles per world, lanes, edges, route table size and lane length of a traffic scenario, from its
    settings (mirrors scenarios/traffic.py's generators without building anything)."""
    s, kind = cfg.scenario, str(cfg.scenario.kind)
    H = _finite("horizon_s", cfg.horizon_s)
    hours = H / 3600.0
    scale = _finite("scenario.demand_scale", s.get("demand_scale", 1.0))
    if kind in ("grid", "arterial"):
        rows, cols = int(_finite("scenario.rows", s.rows)), int(_finite("scenario.cols", s.cols))
        lew = int(_finite("scenario.lanes", s.lanes))
        lns = int(_finite("scenario.lanes_ns", s.get("lanes_ns", 0))) or lew
        block, appr = _finite("scenario.block_m", s.block_m), _finite("scenario.approach_m", s.approach_m)
        ew_in, ew_out = 2 * rows * max(cols - 1, 0), 4 * rows
        ns_in, ns_out = 2 * cols * max(rows - 1, 0), 4 * cols
        edges = ew_in + ew_out + ns_in + ns_out
        lanes = (ew_in + ew_out) * lew + (ns_in + ns_out) * lns
        length = (ew_in * block + ew_out * appr) * lew + (ns_in * block + ns_out * appr) * lns
        q = _finite("scenario.entry_flow_veh_h", s.entry_flow_veh_h) * scale
        peak = max(1.0, _finite("scenario.off_peak_factor", s.get("off_peak_factor", 0.6)))
        side = _finite("scenario.side_flow_factor", s.get("side_flow_factor", 1.0))
        per_entry = [q * peak * hours] * (2 * rows) + [q * side * peak * hours] * (2 * cols)
        vehicles = sum(_poisson_cap(n, 3) for n in per_entry)
        flows, route_len = 3 * len(per_entry), rows + cols + 3
        field = ("scenario.entry_flow_veh_h", s.entry_flow_veh_h)
        source = f"scenario.entry_flow_veh_h from {len(per_entry)} entries over horizon_s={H:g}"
        net_field = ("scenario.rows", rows)
        net_source = f"scenario.rows={rows} x scenario.cols={cols} junctions, {lanes:,} lanes"
    elif kind == "junction":
        ln = int(_finite("scenario.lanes", s.lanes))
        edges, lanes = 8, 8 * ln
        length = 8 * _finite("scenario.approach_m", s.approach_m) * ln
        flows_cfg = {str(k): _finite(f"scenario.flows_veh_h.{k}", v) for k, v in s.flows_veh_h.items()}
        periodic = str(s.get("arrivals", "poisson")) == "periodic"
        vehicles = sum((q * scale * hours + 6) if periodic else _poisson_cap(q * scale * hours, 3)
                       for q in flows_cfg.values())
        flows, route_len = 3 * len(flows_cfg), 2
        top = max(flows_cfg, key=flows_cfg.get) if flows_cfg else "N"
        field = (f"scenario.flows_veh_h.{top}", s.flows_veh_h.get(top) if flows_cfg else None)
        source = f"scenario.flows_veh_h over horizon_s={H:g}"
        net_field, net_source = ("scenario.lanes", ln), f"one junction, {lanes} lanes"
    elif kind == "ring":
        seg = int(_finite("scenario.segments", s.segments))
        circ = _finite("scenario.circumference_m", s.circumference_m)
        edges = lanes = seg
        length = circ
        vehicles = _finite("scenario.vehicles", s.vehicles)
        vmax = _finite("scenario.vehicle.max_speed", s.vehicle.max_speed)
        flows, route_len = seg, (math.ceil(H * vmax / max(circ, 1e-9)) + 2) * seg
        field, source = ("scenario.vehicles", s.vehicles), "scenario.vehicles"
        net_field, net_source = ("scenario.segments", seg), f"a ring of {seg} segments"
    else:
        return {}
    for i, line in enumerate(s.get("bus_lines") or []):  # a bus every headway, plus one
        hw = _finite(f"scenario.bus_lines[{i}].headway_s", line.get("headway_s", 600.0))
        vehicles += H / max(hw, 1e-9) + 2
        flows += 1
    # slots are padded to a multiple of 16
    return {"vehicles": vehicles + 16, "lanes": lanes, "edges": edges, "length_m": length,
            "route_cells": (flows + 1) * route_len, "field": field, "source": source, "net_field": net_field,
            "net_source": net_source}


def estimate_memory(cfg: DictConfig, worlds: int) -> MemoryEstimate | None:
    """Upper-bound memory of ``worlds`` worlds of ``cfg`` from its settings alone (no twin is built).
    None for a scenario whose size is only known from its files (sumo): the probe sizes those."""
    kind = str(cfg.scenario.get("kind", ""))
    f64 = str(cfg.compute.get("dtype", "float32")) == "float64"
    k = FLOAT64_FACTOR if f64 else 1.0
    if kind in ("grid", "arterial", "junction", "ring"):
        b = _traffic_bound(cfg)
        H, dt = _finite("horizon_s", cfg.horizon_s), _finite("dt_s", cfg.dt_s) or 1.0
        n_steps = H / dt
        out = cfg.get("output") or {}
        interval = _finite("output.timeseries_interval_s", out.get("timeseries_interval_s", 60.0) or 60.0)
        intervals = math.ceil(n_steps / max(1, round(max(interval, dt) / dt)))
        per_world_records = b["lanes"] * intervals * LANE_INTERVAL_BYTES
        every = int(out.get("trajectory_every", 0) or 0)
        if every > 0:  # one row per running vehicle per snapshot; running vehicles fit the lanes at jam density
            v = cfg.scenario.vehicle
            jam = b["length_m"] / max(_finite("scenario.vehicle.length", v.length) + float(v.min_gap), 1.0)
            per_world_records += (n_steps // every) * min(b["vehicles"], jam) * 100
        return MemoryEstimate(
            worlds=int(worlds), entities=float(b["vehicles"]), noun="vehicles", entity_field=b["field"],
            entity_source=b["source"], entity_state=VEHICLE_STATE_BYTES * k, entity_result=VEHICLE_RESULT_BYTES,
            network_fixed=b["lanes"] * LANE_FIXED_BYTES + b["route_cells"] * 16.0,
            network_state=b["lanes"] * LANE_STATE_BYTES, network_result=per_world_records,
            network_field=b["net_field"], network_source=b["net_source"])
    if kind in ("molecular", "lj_fluid"):
        s = cfg.scenario
        dt = _finite("scenario.dt", s.dt if s.get("dt") is not None else cfg.dt_s) or 1.0
        H = _finite("scenario.horizon", s.horizon if s.get("horizon") is not None else cfg.horizon_s)
        records = (H / dt) / max(int(s.get("record_every", 10) or 10), 1)
        if kind == "lj_fluid":
            n = _finite("scenario.n_particles", s.n_particles)
            field, source = ("scenario.n_particles", s.n_particles), "scenario.n_particles"
        else:
            iv = cfg.get("intervention") or {}
            dose = max(_finite("scenario.dose", s.dose), _finite("intervention.dose", iv.get("dose") or 0.0))
            dose = max(dose, _finite("scenario.max_dose", s.get("max_dose") or 0.0))
            first = _finite("scenario.first_dose", s.first_dose)
            gap = _finite("scenario.dosing_interval", s.dosing_interval) or H
            n_doses = int(_finite("scenario.n_doses", s.n_doses)) or (math.floor(max(H - first, 0) / gap) + 1)
            n_doses = max(n_doses, int(_finite("intervention.n_doses", iv.get("n_doses") or 0)))
            receptors = sum(_finite("scenario.cells.receptors", c.receptors) for c in s.cells)
            n = receptors + _finite("scenario.n_offtarget", s.n_offtarget) + n_doses * dose
            field, source = ("scenario.dose", s.dose), f"scenario.dose x {n_doses} doses, receptors, off-targets"
        return MemoryEstimate(
            worlds=int(worlds), entities=float(n), noun="particles", entity_field=field, entity_source=source,
            entity_state=PARTICLE_STATE_BYTES * k, entity_result=0.0, network_fixed=0.0, network_state=0.0,
            network_result=records * RECORD_BYTES, network_field=None, network_source="")
    return None


def _fmt_bytes(b: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= size:
            return f"{b / size:.3g} {unit}"
    return f"{b / 1e6:.2g} MB"


def memory_limits(cfg: DictConfig) -> tuple[tuple[float | None, str], tuple[float | None, str], bool]:
    """``((device limit, its description), (this machine's limit, ...), device is this machine's memory)``:
    ``compute.max_memory_gb`` where set, else ``compute.memory_fraction`` of the free memory."""
    c = cfg.compute
    gb = c.get("max_memory_gb", None)
    frac = float(c.get("memory_fraction", 0.8))
    host_free = free_bytes(torch.device("cpu"))
    if str(c.get("backend", "local")) == "ray":  # the workers' memory is the cluster's: not known here
        devices, same = [], False
    else:
        devices = resolve_devices(c.device)
        same = all(d.type == "cpu" for d in devices)
    if gb is not None:
        lim = (float(gb) * 1e9, f"compute.max_memory_gb={float(gb):g}")
        return lim, lim, same
    host = ((frac * host_free, f"compute.memory_fraction={frac:g} of the {_fmt_bytes(host_free)} free on this "
             "machine") if host_free is not None else (None, "free memory unknown"))
    if same or not devices:
        return host if devices else (None, "the Ray cluster's"), host, same
    frees = [free_bytes(d) for d in devices]
    dev_free = min(f for f in frees if f is not None) if any(f is not None for f in frees) else None
    dev = ((frac * dev_free, f"compute.memory_fraction={frac:g} of the {_fmt_bytes(dev_free)} free on "
            f"{devices[0]}") if dev_free is not None else (None, "free memory unknown"))
    return dev, host, same


def check_memory(cfg: DictConfig, worlds: int, what: str = "this run", results: bool = True
                 ) -> MemoryEstimate | None:
    """Refuse ``worlds`` worlds of ``cfg`` when their estimated memory (:func:`estimate_memory`; one world per
    chunk on the device, every world's results on this machine) is above the limit (:func:`memory_limits`).
    ``results=False``: only a chunk of one world (what the compute plan can still shrink to).
    Raises :class:`MemoryLimitError` naming the estimate, the limit, the setting to change and the override."""
    est = estimate_memory(cfg, worlds if results else 1)
    if est is None:
        return None
    (dev_lim, dev_src), (host_lim, host_src), same = memory_limits(cfg)
    def need(e: MemoryEstimate) -> tuple[float, float | None, str]:
        """(estimate, limit, limit's description) of the pool that is over, or of this machine's when none is"""
        if not results:
            return e.device_bytes(), (host_lim if same else dev_lim), (host_src if same else dev_src)
        if same:  # one pool: the device is this machine's memory
            return e.device_bytes() + e.result_bytes(), host_lim, host_src
        if dev_lim is not None and e.device_bytes() > dev_lim:
            return e.device_bytes(), dev_lim, dev_src
        return e.result_bytes(), host_lim, host_src

    total, lim, src = need(est)
    if lim is None or total <= lim:
        return est
    W = est.worlds
    one = dataclasses.replace(est, worlds=1)
    one_need = need(one)[0]
    detail = (f"{W:,} worlds x up to {est.entities:,.0f} {est.noun} each ({est.entity_source})"
              + (f"; {est.network_source}" if est.network_source else ""))
    if one_need <= lim:  # one world fits: there are too many of them
        per = (total - one_need) / max(W - 1, 1)
        fit = 1 + max(int((lim - one_need) // per), 0) if per > 0 else W
        field, value = "replications", cfg.replications
        fix = f"Use fewer worlds (about {fit:,} fit: fewer replications, or a smaller search batch)"
    else:  # one world alone is too big: its vehicles/particles, or its network
        net = one.network_fixed + one.network_state + one.network_result
        ent = one.entities * (one.entity_state + one.entity_result)
        if ent >= net:
            per = ent / max(one.entities, 1.0)
            fit = max(int((lim - (one_need - ent)) // per), 0) if per > 0 else 0
            field, value = est.entity_field
            fix = f"Lower {est.entity_source} (about {fit:,} {est.noun} per world fit)"
        else:
            field, value = est.network_field or ("scenario", str(cfg.scenario.get("name", "")))
            fix = f"Use a smaller network (here {est.network_source})"
    raise MemoryLimitError(
        f"{field}={value!r}: {what} needs an estimated {_fmt_bytes(total)} of memory ({detail}), above the limit "
        f"of {_fmt_bytes(lim)} ({src}). {fix}, or set compute.max_memory_gb={math.ceil(total / 1e9):d} to run it "
        "anyway if you know it fits.", field, value)
