"""``compute=ray``: each chunk of a plan runs as a Ray task.

``compute.address``: ``local`` starts a Ray instance on this machine
(``compute.num_cpus`` CPUs; null: all), ``auto`` joins the running cluster
(``ray start --head`` / the ``RAY_ADDRESS`` variable), ``ray://host:port`` or
``host:port`` a given one. A process that already called ``ray.init`` keeps its
connection. Tasks take one CPU each, and one GPU when the plan is on CUDA (Ray
then shows the task its GPU as ``cuda:0``). The worker machines must be able to
import ``twins`` (install it there, or start the workers from a checkout).

The devices are the cluster's, not this machine's (:func:`plan_devices`):
``compute.device=cuda`` (or ``auto`` on a cluster with GPUs) runs every chunk on
a cluster GPU even when the driver has none; the memory probe then runs as a Ray
task on a GPU worker, as it does whenever the cluster is not this machine
(``compute.address`` other than ``local``: :func:`measure`).

A task whose worker dies (killed, out of memory) is retried up to
``compute.max_retries`` times; results are kept by chunk id, so a retried
chunk is never counted twice and none is lost. An exception raised by the
simulation itself is not retried (it would fail again): it propagates.
"""
from __future__ import annotations

import logging
import os
import re
import socket

from twins.core.errors import ConfigError

log = logging.getLogger("twins")

VALID_ADDRESSES = ("local (start Ray on this machine), auto (the running cluster: `ray start --head` or "
                   "RAY_ADDRESS), ray://HOST:PORT (Ray Client) or HOST:PORT (a head node)")


def _host_port(address: str) -> tuple[str, int] | None:
    m = re.fullmatch(r"(?:ray://)?\[?([\w.\-:]+?)\]?:(\d+)", address)
    return (m.group(1), int(m.group(2))) if m else None


def check_address(address: str) -> None:
    """A clear error for an address of the wrong form, or one nothing answers at."""
    if address in ("local", "auto"):
        return
    hp = _host_port(address)
    if hp is None:
        raise ConfigError("compute.address", address, VALID_ADDRESSES)
    try:
        with socket.create_connection(hp, timeout=3.0):
            pass
    except OSError as e:
        raise ConfigError("compute.address", address, VALID_ADDRESSES,
                          f"Nothing answers at {hp[0]}:{hp[1]} ({e.strerror or e}). Start the cluster "
                          "(`ray start --head`) or use compute.address=local.") from None


def connect(cfg) -> None:
    """``ray.init`` for ``cfg.compute`` (once per process)."""
    import ray

    c = cfg.compute
    address = str(c.get("address", "local"))
    check_address(address)
    if ray.is_initialized():
        return
    kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address == "local":
        num_cpus = c.get("num_cpus", None)
        if num_cpus is not None and int(num_cpus) < 1:
            raise ConfigError("compute.num_cpus", num_cpus, "an integer >= 1, or null for all CPUs")
        ray.init(address="local", num_cpus=int(num_cpus) if num_cpus else os.cpu_count(), **kw)
        return
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
        hint = "No running Ray cluster was found: start one with `ray start --head`, " \
               "or use compute.address=local." if address == "auto" else f"Ray could not connect: {e}"
        raise ConfigError("compute.address", address, VALID_ADDRESSES, hint) from None


def plan_devices(cfg) -> list[str]:
    """The device of every chunk under Ray: the cluster's, not this machine's. ``cuda`` (each task is given
    one GPU, which it sees as ``cuda:0``) for ``compute.device=cuda``, or ``auto`` on a cluster with GPUs;
    otherwise ``cpu``."""
    import ray

    from .device import check_device_spec

    spec = check_device_spec(cfg.compute.device)
    connect(cfg)
    res = ray.cluster_resources()
    gpus = float(res.get("GPU", 0))
    if spec == "cpu" or (spec == "auto" and gpus <= 0):
        return ["cpu"]
    if spec.startswith("cuda:"):
        raise ConfigError("compute.device", cfg.compute.device, "cuda, auto or cpu with compute=ray",
                          "Ray gives each task its own GPU (the task sees it as cuda:0): a GPU cannot be "
                          "picked by number.")
    if gpus <= 0:
        raise ConfigError("compute.device", cfg.compute.device, "auto or cpu on this Ray cluster",
                          f"The cluster has no GPU (resources: {int(res.get('CPU', 0))} CPUs). Add GPU "
                          "workers (`ray start --num-gpus=N`) or use compute.device=auto.")
    return ["cuda"]


def parallel_slots(cfg) -> int:
    """Chunks that can run at once: ``compute.workers``, else the cluster's GPUs (on CUDA) or CPUs."""
    import ray

    connect(cfg)
    w = cfg.compute.get("workers", None)
    if w:
        return int(w)
    res = ray.cluster_resources()
    return max(1, int(res.get("GPU" if plan_devices(cfg)[0] == "cuda" else "CPU", 1)))


# --- the memory probe where the chunks will run --------------------------------------------------------
#: how long the driver waits for a Ray worker to run the memory probe, or to read its free memory, before it
#: falls back (see measure): a worker starts in seconds, so longer means no worker with the device is free
PROBE_TIMEOUT_S = 120.0
_WORKER_PROBES: dict[tuple, tuple] = {}  # (cluster, probe key) -> (probe, measured on a worker?)


def _on_worker(fn, device_type: str, timeout_s: float, *args):
    """``fn(*args)`` as a Ray task holding what a chunk holds (one CPU; one GPU on CUDA); cancelled if it is not
    done within ``timeout_s``."""
    import ray

    task = ray.remote(num_cpus=1, num_gpus=1 if device_type == "cuda" else 0, max_retries=1)(fn)
    ref = task.remote(*args)
    try:
        return ray.get(ref, timeout=timeout_s)
    except BaseException:
        _cancel_unfinished([ref])
        raise


def _worker_device(device_type: str):
    import torch

    torch.set_num_threads(1)
    return torch.device("cuda:0" if device_type == "cuda" else "cpu")  # Ray shows a task its GPU as cuda:0


def _probe_task(job, device_type: str):
    from .plan import probe_memory

    return probe_memory(job, _worker_device(device_type))


def _free_task(device_type: str):
    from .plan import free_bytes

    return free_bytes(_worker_device(device_type))


def probe_on_worker(job, device_type: str, timeout_s: float = PROBE_TIMEOUT_S):
    """The memory probe (:func:`twins.compute.plan.probe_memory`) of ``job``'s scenario, run on a Ray worker
    with the chunks' device."""
    from .plan import PROBE_WORLDS, Job, MemoryProbe
    from twins.core.worlds import WorldBatch

    small = Job(job.cfg, WorldBatch.replications(job.worlds.seed, max(PROBE_WORLDS)), [])
    p = _on_worker(_probe_task, device_type, timeout_s, small, device_type)
    return MemoryProbe(p.bytes_per_world, p.fixed_bytes, f"{p.method}, on a Ray worker")


def free_on_worker(device_type: str, timeout_s: float = PROBE_TIMEOUT_S) -> float | None:
    """Free memory (bytes) of the device a Ray worker gives a chunk, read now."""
    return _on_worker(_free_task, device_type, timeout_s, device_type)


def _cluster() -> tuple:
    """Which Ray cluster this process is connected to (for the probe cache)."""
    import ray

    try:
        ctx = ray.get_runtime_context()
        return str(ctx.gcs_address), str(ctx.get_session_name())
    except Exception:  # Ray Client may not say
        return ("?",)


def _why(e: BaseException) -> str:
    cause = getattr(e, "cause", None) or e
    text = str(cause).strip()
    return f"{type(cause).__name__}: {text.splitlines()[-1] if text else ''}"


def measure(job, devices: list[str]):
    """``(probe, free bytes)`` for a Ray plan (:func:`twins.compute.plan.targets`).

    The probe runs in this process when this machine is the cluster (``compute.address=local``) and has the
    chunks' device; otherwise — a cluster elsewhere, or a driver without the GPU — on a Ray worker with the
    device. A worker's probe is cached per cluster and scenario; the free memory is read on a worker at every
    plan (it changes). Should the probe fail there (no worker within :data:`PROBE_TIMEOUT_S`, an error there),
    the CPU probe here stands in — bytes per world of the same tensors, measured on this machine's CPU — with
    the free memory unknown, so chunks are not sized to memory; that fallback is cached too (set
    compute.max_worlds_per_chunk). The plan record (``memory_method``) says which it was."""
    import torch

    from .plan import MemoryProbe, probe_key, measure_here, probe_memory

    kind = torch.device(devices[0]).type
    local = str(job.cfg.compute.get("address", "local")) == "local"
    if local and (kind == "cpu" or torch.cuda.is_available()):
        return measure_here(job, ["cuda:0" if d == "cuda" else d for d in devices])
    key = (_cluster(), probe_key(job, f"{kind} (ray worker)"))
    if key not in _WORKER_PROBES:
        try:
            _WORKER_PROBES[key] = probe_on_worker(job, kind), True
        except Exception as e:  # no worker with the device came, or the probe failed there
            why = _why(e)
            log.warning("compute: the memory probe on a Ray %s worker failed (%s); using the CPU probe on this "
                        "machine, and chunks are not sized to memory: set compute.max_worlds_per_chunk",
                        kind, why)
            p = probe_memory(job, torch.device("cpu"))
            stand_in = "a stand-in for cuda" if kind == "cuda" else "measured on the driver"
            _WORKER_PROBES[key] = MemoryProbe(
                p.bytes_per_world, p.fixed_bytes,
                f"{p.method}; {stand_in} (the probe on a Ray worker failed: {why}), the workers' free memory "
                "unknown"), False
    probe, on_worker = _WORKER_PROBES[key]
    if not on_worker:
        return probe, None
    try:
        return probe, free_on_worker(kind)
    except Exception as e:
        why = _why(e)
        log.warning("compute: could not read the free memory of a Ray %s worker (%s): chunks are not sized to "
                    "memory this time", kind, why)
        return MemoryProbe(probe.bytes_per_world, probe.fixed_bytes,
                           f"{probe.method}; the worker's free memory unknown (reading it failed: {why})"), None


def _task(fn, job, chunk):
    """One chunk in a Ray worker (Ray shows a task its GPU as cuda:0)."""
    import torch

    device = "cuda:0" if chunk.device.startswith("cuda") else "cpu"
    torch.set_num_threads(1)  # one CPU per task: torch's thread pool would oversubscribe the node
    return fn(job, chunk, device)


def run_plan(execution, progress=None, desc=None) -> None:
    """Run the chunks of ``execution`` not yet done as Ray tasks; finished ones go to ``execution.finish``."""
    import ray
    from tqdm.auto import tqdm

    from .execute import run_chunk

    cfg = execution.job.cfg
    connect(cfg)
    fn = getattr(execution, "chunk_fn", None) or run_chunk
    on_gpu = any(c.device.startswith("cuda") for c in execution.plan.chunks)
    retries = int(cfg.compute.get("max_retries", 3))
    remote = ray.remote(num_cpus=1, num_gpus=1 if on_gpu else 0, max_retries=retries,
                        retry_exceptions=False)(_task)
    todo = [c for c in execution.plan.chunks if c.id not in execution.done]
    window = int(cfg.compute.get("workers", None) or len(todo) or 1)
    job_ref = ray.put(execution.job)
    pending: dict = {}
    disable = (not progress) if progress is not None else False
    with tqdm(total=len(todo), desc=f"{desc or 'run'} [ray, {len(todo)} chunks]", unit="chunk", disable=disable,
              leave=False) as bar:
        try:
            while todo or pending:
                while todo and len(pending) < window:
                    c = todo.pop(0)
                    pending[remote.remote(fn, job_ref, c)] = c.id
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    pending.pop(ref)
                    try:
                        execution.finish(ray.get(ref))
                    except ray.exceptions.RayTaskError as e:  # the simulation's own error, as raised
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, Exception) else e) from None
                    bar.update(1)
        except BaseException:
            _cancel_unfinished(list(pending))
            raise


def _cancel_unfinished(refs) -> None:
    """Cancel the tasks of ``refs`` that have not finished (cancelling a finished, failed task trips an
    internal check in Ray that ends this process)."""
    import ray

    if not refs:
        return
    _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
    for ref in running:
        ray.cancel(ref, force=True)
