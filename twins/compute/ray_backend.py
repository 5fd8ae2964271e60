"""``compute=ray``: each chunk of a plan runs as a Ray task.

``compute.address``: ``local`` starts a Ray instance on this machine
(``compute.num_cpus`` CPUs; null: all), ``auto`` joins the running cluster
(``ray start --head`` / the ``RAY_ADDRESS`` variable), ``ray://host:port`` or
``host:port`` a given one. A process that already called ``ray.init`` keeps its
connection. Tasks take one CPU each, and one GPU when the plan is on CUDA (Ray
then shows the task its GPU as ``cuda:0``). The worker machines must be able to
import ``twins`` (install it there, or start the workers from a checkout).

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


def parallel_slots(cfg) -> int:
    """Chunks that can run at once: ``compute.workers``, else the cluster's GPUs (on CUDA) or CPUs."""
    import ray

    connect(cfg)
    w = cfg.compute.get("workers", None)
    if w:
        return int(w)
    res = ray.cluster_resources()
    on_gpu = str(cfg.compute.device).startswith("cuda") or (str(cfg.compute.device) == "auto" and res.get("GPU", 0) > 0)
    return max(1, int(res.get("GPU" if on_gpu else "CPU", 1)))


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
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
