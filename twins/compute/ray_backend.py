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
task on a GPU worker (:func:`measure`).

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
#: how long the driver waits for a GPU worker to run the memory probe before it falls back (see measure)
PROBE_TIMEOUT_S = 600.0
_WORKER_PROBES: dict[tuple, tuple] = {}  # probe key -> (probe, free bytes) from a GPU worker


def _probe_task(job, device_type: str):
    """In a Ray worker: the memory probe on the task's device and that device's free memory."""
    import torch

    from .plan import free_bytes, probe_memory

    torch.set_num_threads(1)
    device = torch.device("cuda:0" if device_type == "cuda" else "cpu")
    return probe_memory(job, device), free_bytes(device)


def probe_on_worker(job, device_type: str, timeout_s: float = PROBE_TIMEOUT_S):
    """``(probe, free bytes)`` measured by a Ray task holding what a chunk holds (one CPU; one GPU on CUDA)."""
    import ray

    from .plan import PROBE_WORLDS, Job, MemoryProbe
    from twins.core.worlds import WorldBatch

    small = Job(job.cfg, WorldBatch.replications(job.worlds.seed, max(PROBE_WORLDS)), [])
    task = ray.remote(num_cpus=1, num_gpus=1 if device_type == "cuda" else 0, max_retries=1)(_probe_task)
    ref = task.remote(small, device_type)
    try:
        p, free = ray.get(ref, timeout=timeout_s)
    except BaseException:
        _cancel_unfinished([ref])
        raise
    return MemoryProbe(p.bytes_per_world, p.fixed_bytes, f"{p.method}, on a Ray worker"), free


def measure(job, devices: list[str]):
    """``(probe, free bytes)`` for a Ray plan (:func:`twins.compute.plan.targets`). The probe runs in this
    process when it has the chunks' device (a CPU plan, or a driver with a GPU); otherwise on a Ray worker with
    a GPU. Should that fail (no GPU worker within :data:`PROBE_TIMEOUT_S`, an error there), the CPU probe here
    stands in — bytes per world of the same tensors, measured on the CPU — with the GPU's free memory unknown,
    so chunks are not sized to memory; the plan record (``memory_method``) says so."""
    import torch

    from .plan import MemoryProbe, _probe_key, measure_here, probe_memory

    kind = torch.device(devices[0]).type
    if kind == "cpu" or torch.cuda.is_available():
        return measure_here(job, ["cuda:0" if d == "cuda" else d for d in devices])
    key = _probe_key(job, "cuda (ray worker)")
    if key in _WORKER_PROBES:
        return _WORKER_PROBES[key]
    try:
        out = probe_on_worker(job, "cuda")
    except Exception as e:  # no GPU worker came, or the probe failed there
        cause = getattr(e, "cause", None) or e
        why = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
        log.warning("compute: the memory probe on a Ray GPU worker failed (%s); using the CPU probe on this "
                    "machine, and chunks are not sized to GPU memory: set compute.max_worlds_per_chunk", why)
        p = probe_memory(job, torch.device("cpu"))
        return MemoryProbe(p.bytes_per_world, p.fixed_bytes,
                           f"{p.method}; a stand-in for cuda (the probe on a Ray GPU worker failed: {why}), "
                           "the GPU's free memory unknown"), None
    _WORKER_PROBES[key] = out
    return out


def _task(fn, job, chunk):
    """One chunk in a Ray worker (Ray shows a task its GPU as cuda:0)."""
    import torch

    device = "cuda:0" if chunk.device.startswith("cuda") else "cpu"
    torch.set_num_threads(1)  # one CPU per task: torch's thread pool would oversubscribe the node
    return fn(job, chunk, device)


def run_plan(execution, progress=None, desc=None) -> None:
    """Run the chunks of ``execution`` not yet done as Ray tasks; finished ones go to ``execution._finish``."""
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
                        execution._finish(ray.get(ref))
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
