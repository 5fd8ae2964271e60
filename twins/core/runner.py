"""The ``run`` task: config → worlds → twin → outcomes → run folder.

Partial results survive an interruption: on Ctrl-C or a crash inside the
simulation the outcomes so far are written and the folder is marked
incomplete in ``manifest.json`` before the error propagates.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from twins.compute.device import resolve_device, resolve_dtype

from . import io
from .config import validate_common
from .worlds import WorldBatch

log = logging.getLogger("twins")


def make_twin(cfg: DictConfig, worlds: WorldBatch | None = None):
    """Validate ``cfg`` and build its twin (no stepping yet)."""
    import scenarios

    validate_common(cfg)
    device = resolve_device(cfg.compute.device)
    dtype = resolve_dtype(cfg.compute.dtype)
    worlds = worlds or WorldBatch.replications(cfg.seed, cfg.replications)
    return scenarios.build_twin(cfg, worlds, device, dtype)


def run(cfg: DictConfig, outdir: str | Path) -> dict:
    """Run ``cfg`` and write its folder; returns the metric summary."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    twin = make_twin(cfg)
    io.write_config(outdir, cfg)
    complete = False
    try:
        result = twin.run(progress=cfg.progress, desc=f"{cfg.scenario.name} ({twin.W} worlds)")
        complete = True
    except BaseException:
        # keep what was simulated: outcomes up to the current step, marked incomplete
        try:
            partial = twin.results()
            partial.complete = False
            io.write_tables(outdir, partial)
            io.write_json(outdir / "metrics.json", io.summarize(partial.worlds, partial.metrics))
            io.write_json(outdir / "manifest.json", io.manifest(
                cfg, twin.device, twin.dtype, started, False, steps_done=twin.step_index, steps=twin.n_steps))
            log.error("run interrupted at step %d/%d; partial results in %s", twin.step_index, twin.n_steps, outdir)
        except Exception as e:  # pragma: no cover - best effort
            log.error("could not save partial results: %s", e)
        raise
    summary = io.summarize(result.worlds, result.metrics)
    io.write_tables(outdir, result)
    io.write_json(outdir / "metrics.json", summary)
    figures = []
    if cfg.output.figures:
        figdir = outdir / "figures"
        figdir.mkdir(exist_ok=True)
        figures = twin.write_figures(result, figdir)
    io.write_json(outdir / "manifest.json", io.manifest(
        cfg, twin.device, twin.dtype, started, complete, steps_done=twin.step_index, steps=twin.n_steps,
        worlds=twin.W, figures=figures))
    log.info("wrote %s", outdir)
    return summary
