"""Running a plan: each chunk builds its own twin on its worlds, runs, and the results are
reassembled in world order with the global world index.

Backends: ``local`` (in this process; several GPUs run their chunks in parallel
threads) and ``ray`` (:mod:`twins.compute.ray_backend`). Either way the finished
chunks are kept by chunk id, so an interruption (Ctrl-C, a crash) leaves them
readable (:meth:`Execution.partial`), and a retried chunk is counted once.
"""
from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from twins.core.twin import LazyTables, RunResult, pending_table

from .accounting import RunMeter, Usage, measure
from .plan import Chunk, ComputePlan, Job, build_chunk_twin

log = logging.getLogger("twins")


@dataclass
class ChunkResult:
    chunk: int
    result: RunResult  # world columns already global
    usage: Usage
    steps_done: int


class Cancelled(Exception):
    """A chunk stopped because the run was interrupted elsewhere."""


def _global_worlds(df, index: np.ndarray):
    """``df`` with its local ``world`` numbers replaced by the global ones ``index[world]`` (a copy)."""
    if df is None or "world" not in df:
        return df
    df = df.copy()
    df["world"] = index[df["world"].to_numpy(dtype=np.int64)]
    return df


def _then(fix, build, *args):
    """A builder: ``fix(build(), *args)``, run when the table is read."""
    return lambda: fix(build(), *args)


def remap(result: RunResult, index) -> RunResult:
    """``result`` of a chunk twin with its local ``world`` numbers replaced by the global ones. A table not built
    yet (:class:`LazyTables`, such as the trips) stays pending: it is built and renumbered when read."""
    index = np.asarray(index, dtype=np.int64)
    tables = LazyTables()
    for k in list(result.tables):
        build = pending_table(result.tables, k)
        if build is not None:
            tables.lazy(k, _then(_global_worlds, build, index))
        else:
            tables[k] = _global_worlds(result.tables[k], index)
    return RunResult(worlds=_global_worlds(result.worlds, index), metrics=list(result.metrics), tables=tables,
                     groups=_global_worlds(result.groups, index), complete=result.complete)


def _cat(dfs):
    """Chunk tables (global world numbers; None where a chunk has none) → one table in world order (a stable
    sort, so each world's rows keep their order)."""
    dfs = [d for d in dfs if d is not None]
    if not dfs:
        return None
    nonempty = [d for d in dfs if len(d.columns)]
    if not nonempty:
        return dfs[0]
    # a chunk with no rows (e.g. no bus docked in its worlds) carries untyped columns: concatenating it
    # would turn every column into `object`, unlike the one-batch table
    nonempty = [d for d in nonempty if len(d)] or nonempty[:1]
    df = pd.concat(nonempty, ignore_index=True) if len(nonempty) > 1 else nonempty[0].reset_index(drop=True)
    if "world" in df:
        df = df.sort_values("world", kind="stable").reset_index(drop=True)
    return df


def _cat_table(parts: list[RunResult], name: str):
    """Table ``name`` of every part, concatenated (:func:`_cat`); a part's pending table is built for this
    without being kept in the part (the merged table holds the rows once)."""
    return _cat([p.tables.peek(name) if isinstance(p.tables, LazyTables) else p.tables.get(name)
                 for p in parts])


def merge(parts: list[RunResult]) -> RunResult:
    """Chunk results (global world numbers) → one result; every table in world order (a stable
    sort, so each world's rows keep their order), whatever the chunking. A table that some chunk has not
    built yet stays pending: the chunks' parts are built and concatenated when it is read."""
    names = list(dict.fromkeys(k for p in parts for k in p.tables))
    tables = LazyTables()
    for k in names:
        if any(pending_table(p.tables, k) is not None for p in parts):
            tables.lazy(k, functools.partial(_cat_table, list(parts), k))
        else:
            tables[k] = _cat([p.tables.get(k) for p in parts])
    return RunResult(worlds=_cat([p.worlds for p in parts]), metrics=list(parts[0].metrics), tables=tables,
                     groups=_cat([p.groups for p in parts]), complete=all(p.complete for p in parts))


def step_to_end(twin, stop: threading.Event | None = None, tick=None) -> None:
    while twin.step_index < twin.n_steps:
        if stop is not None and stop.is_set():
            raise Cancelled()
        twin.step()
        if tick is not None:
            tick()


def run_chunk(job: Job, chunk: Chunk, device: str | None = None) -> ChunkResult:
    """Build ``chunk``'s twin, run it to the horizon, return its result with global world numbers.
    (What a Ray task runs; the local backend does the same with progress and interrupts.)"""
    dev = torch.device(device or chunk.device)
    with measure(dev) as usage:
        twin = build_chunk_twin(job, chunk.index, dev)
        step_to_end(twin)
        result = remap(twin.results(), chunk.index)
    return ChunkResult(chunk.id, result, usage, twin.step_index)


class Execution:
    """Runs a :class:`ComputePlan` for a :class:`Job`; keeps finished chunks by id."""

    def __init__(self, job: Job, plan: ComputePlan, meter: RunMeter | None = None, n_steps: int | None = None):
        self.job, self.plan = job, plan
        self._n_steps = n_steps  # the twin's own (a scenario may set its own dt and horizon)
        self.meter = meter or RunMeter(float(job.cfg.compute.get("cpu_watts_per_core", 4.4)))
        self.done: dict[int, ChunkResult] = {}
        self.running: dict[int, object] = {}  # chunk id -> twin (local backend)
        self.backend = str(job.cfg.compute.get("backend", "local"))

    @property
    def n_steps(self) -> int:
        return int(self._n_steps if self._n_steps is not None else self.job.n_steps)

    @property
    def steps_done(self) -> int:
        """Steps reached by the least advanced chunk (n_steps when all finished)."""
        if len(self.done) == len(self.plan.chunks):
            return self.n_steps
        running = [int(t.step_index) for t in self.running.values()]
        return min(running) if running else 0

    def run(self, progress: bool | None = None, desc: str | None = None) -> RunResult:
        self.meter.start()
        try:
            if self.backend == "ray":
                from .ray_backend import run_plan

                run_plan(self, progress=progress, desc=desc)
            else:
                self._run_local(progress, desc)
        finally:
            self.meter.stop()
        return merge([self.done[c.id].result for c in self.plan.chunks])

    def finish(self, cr: ChunkResult) -> None:
        if cr.chunk in self.done:  # a retried chunk is counted once
            return
        self.done[cr.chunk] = cr
        self.meter.add(cr.usage)

    def _run_local(self, progress, desc) -> None:
        from tqdm.auto import tqdm

        chunks = [c for c in self.plan.chunks if c.id not in self.done]
        total = sum(self.n_steps for _ in chunks)
        disable = (not progress) if progress is not None else False
        n = len(self.plan.chunks)
        label = (desc or "run") + (f" [{n} chunks]" if n > 1 else "")
        stop = threading.Event()
        lock = threading.Lock()
        with tqdm(total=total, desc=label, unit="step", disable=disable, mininterval=2.0,
                  delay=3.0 if progress is None else 0.0, leave=False) as bar:
            def tick():
                with lock:
                    bar.update(1)

            def work(chunk: Chunk) -> None:
                dev = torch.device(chunk.device)
                with measure(dev) as usage:
                    twin = build_chunk_twin(self.job, chunk.index, dev)
                    self._n_steps = twin.n_steps
                    self.running[chunk.id] = twin
                    step_to_end(twin, stop, tick)
                    result = remap(twin.results(), chunk.index)
                self.finish(ChunkResult(chunk.id, result, usage, twin.step_index))
                self.running.pop(chunk.id, None)

            devices = list(dict.fromkeys(c.device for c in chunks))
            if len(devices) <= 1:
                for c in chunks:
                    work(c)
                return
            # one thread per GPU, each running its device's chunks in turn
            def lane(dev):
                for c in chunks:
                    if c.device == dev:
                        work(c)

            with ThreadPoolExecutor(len(devices)) as pool:
                futures = [pool.submit(lane, d) for d in devices]
                try:
                    for f in futures:
                        f.result()
                except BaseException:
                    stop.set()
                    raise

    def partial(self) -> RunResult | None:
        """Finished chunks plus what the running ones simulated so far (local backend), in world order."""
        parts = [self.done[k].result for k in sorted(self.done)]
        for cid, twin in sorted(self.running.items()):
            if cid in self.done:
                continue
            try:
                r = remap(twin.results(), next(c for c in self.plan.chunks if c.id == cid).index)
                r.complete = False
                parts.append(r)
            except Exception as e:  # pragma: no cover - best effort
                log.warning("could not read chunk %d's partial results: %s", cid, e)
        if not parts:
            return None
        out = merge(parts)
        out.complete = False
        return out

    def status(self) -> dict:
        """Chunk bookkeeping for the manifest."""
        return {"chunks_done": sorted(self.done), "chunks_total": len(self.plan.chunks),
                "worlds_complete": int(sum(len(self.plan.chunks[k].index) for k in self.done))}


def execution_for(job: Job, meter: RunMeter | None = None, n_steps: int | None = None) -> Execution:
    """Plan ``job`` for its config's backend (``compute.backend``: local or ray) and wrap it to run."""
    from .plan import check_compute, make_plan

    check_compute(job.cfg)
    parallel = None
    if str(job.cfg.compute.get("backend", "local")) == "ray":
        from .ray_backend import parallel_slots

        parallel = parallel_slots(job.cfg)
    return Execution(job, make_plan(job, parallel), meter, n_steps)
