"""The ``run`` task: config → worlds → twin → outcomes → run folder.

With an intervention other than ``none`` the run is a counterfactual: arm 0
(the scenario's baseline) and arm 1 (the intervention's parameter vector from
the config) run on the same ``replications`` in one world batch, and the folder
adds ``arms.json``, ``effects.parquet`` / ``effects.json`` (paired effects with
intervals, per metric and per group) and ``figures/effects.png``.

The worlds run through the compute plan (``twins/compute/``): split into
chunks that fit the device, on this process or on Ray, reassembled in world
order; ``manifest.json`` records the plan and the compute/energy account.

Partial results survive an interruption: on Ctrl-C or a crash inside the
simulation the finished chunks and the running one's outcomes so far are
written and the folder is marked incomplete in ``manifest.json`` before the
error propagates.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from twins.compute.device import manifest_devices

from . import io
from .pipeline import make_counterfactual, make_twin, plan_counterfactual  # noqa: F401  (the run's own steps)

log = logging.getLogger("twins")


def _compute_account(exe) -> dict:
    """Manifest fields: the plan (chunks, devices, memory probe), chunk status, and the compute/energy account."""
    return {"compute": {"backend": exe.backend, **exe.plan.describe(), **exe.status()},
            "accounting": exe.meter.summary()}


def _manifest(cfg, exe, twin, started: float, complete: bool, **extra) -> dict:
    """The run's manifest: ``device`` is where its worlds ran (the plan's devices), ``driver_device`` this
    process's where different (under compute=ray a driver without a GPU runs its chunks on the cluster's)."""
    if getattr(twin, "kernel", None):  # which traffic kernels ran (compute.compile)
        extra = {"kernel": twin.kernel, **extra}
    man = io.manifest(cfg, twin.device, twin.dtype, started, complete, steps_done=exe.steps_done,
                      steps=exe.n_steps, **extra, **_compute_account(exe))
    return {**man, **manifest_devices(cfg, twin.device, exe.plan.devices)}


def run(cfg: DictConfig, outdir: str | Path) -> dict:
    """Run ``cfg`` and write its folder; returns the metric summary."""
    from interventions import counterfactual as cf

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    plan = plan_counterfactual(cfg)
    arms, exe, twin = plan.arms, plan.exe, plan.twin
    counterfactual = len(arms) > 1
    io.write_config(outdir, cfg)
    if counterfactual:
        io.write_json(outdir / "arms.json", [{"arm": a.index, "label": a.label, "values": a.values,
                                              "worlds": int((exe.job.worlds.arm == a.index).sum())} for a in arms])
    complete = False
    try:
        result = plan.run(progress=cfg.progress, desc=f"{cfg.scenario.name} ({exe.job.W} worlds)")
        complete = True
    except BaseException:
        # keep what was simulated: finished chunks, and the running ones up to their current step
        try:
            partial = exe.partial()
            if partial is not None:
                io.write_tables(outdir, partial)
                io.write_json(outdir / "metrics.json", io.summarize(partial.worlds, partial.metrics))
            io.write_json(outdir / "manifest.json", _manifest(cfg, exe, twin, started, False))
            log.error("run interrupted at step %d/%d (%d of %d chunks finished); partial results in %s",
                      exe.steps_done, exe.n_steps, len(exe.done), len(exe.plan.chunks), outdir)
        except Exception as e:  # pragma: no cover - best effort
            log.error("could not save partial results: %s", e)
        raise
    io.write_tables(outdir, result)
    if counterfactual:
        summary = cf.arm_summary(result.worlds, result.metrics, arms)
        eff = cf.effects(result.worlds, result.metrics, arms, plan.groups(result))
        eff.to_parquet(outdir / "effects.parquet", index=False)
        io.write_json(outdir / "effects.json", cf.effects_json(eff, arms))
        _log_effects(eff)
    else:
        summary = io.summarize(result.worlds, result.metrics)
    io.write_json(outdir / "metrics.json", summary)

    def manifest(**extra):
        io.write_json(outdir / "manifest.json", _manifest(cfg, exe, twin, started, complete, worlds=exe.job.W,
                                                          arms=len(arms), **extra))

    # the tables are the run: the manifest marks them complete before any figure is drawn, so a figure that
    # fails (a read-only figures/, a plotting error) costs a warning and that figure, never the run
    manifest(figures=[])
    if cfg.output.figures:
        figures, failed = _write_figures(outdir / "figures", twin, result, arms, eff if counterfactual else None,
                                         cfg)
        manifest(figures=figures, **({"figure_errors": failed} if failed else {}))
    if counterfactual:  # ethics gates on held-out evidence -> gates.json, review.json, audit entry
        from twins import ethics

        ethics.review_run(cfg, outdir)
    log.info("wrote %s", outdir)
    return summary


def _write_figures(figdir: Path, twin, result, arms, eff, cfg) -> tuple[list[str], list[str]]:
    """Draw the run's figures; ``(written, errors)``: a failure is logged as a warning and recorded."""
    figures, failed = [], []

    def attempt(name: str, draw) -> None:
        try:
            out = draw()
            figures.extend(out if isinstance(out, list) else [name])
        except Exception as e:  # noqa: BLE001  (any plotting or file error: the tables are written already)
            failed.append(f"{name}: {type(e).__name__}: {e}")
            log.warning("figure %s not written (%s: %s); the run's tables and manifest are complete",
                        name, type(e).__name__, e)

    try:
        figdir.mkdir(exist_ok=True)
    except OSError as e:
        failed.append(f"figures/: {type(e).__name__}: {e}")
        log.warning("figures not written: %s", e)
        return figures, failed
    if eff is not None:
        from twins import plots

        attempt("effects.png", lambda: plots.save(
            plots.effects(eff, title=f"{cfg.scenario.get('name', '')}: {arms[1].label} − baseline"),
            figdir / "effects.png"))
        for a in arms:  # each arm's own figures, on its worlds only
            def arm_figures(a=a):
                sub = figdir / f"arm{a.index}"
                sub.mkdir(exist_ok=True)
                return [f"arm{a.index}/{f}" for f in twin.write_figures(_arm_result(result, a.index), sub)]

            attempt(f"arm{a.index}/", arm_figures)
    else:
        attempt("figures", lambda: list(twin.write_figures(result, figdir)))
    return figures, failed


def _arm_result(result, arm: int):
    """The part of ``result`` that belongs to one arm's worlds (tables filtered by ``world``)."""
    from .twin import RunResult

    ws = set(result.worlds.loc[result.worlds["arm"] == arm, "world"].tolist())

    def keep(df):
        return df[df["world"].isin(ws)] if df is not None and "world" in df else df

    return RunResult(worlds=keep(result.worlds), metrics=result.metrics,
                     tables={k: keep(v) for k, v in result.tables.items()}, groups=keep(result.groups),
                     complete=result.complete)


def _log_effects(eff) -> None:
    net = eff[eff["scope"] == "network"]
    for r in net.itertuples():
        log.info("effect %-28s %+10.3f  paired 95%% CI [%+.3f, %+.3f]  unpaired [%+.3f, %+.3f]  n=%d",
                 r.metric, r.effect, r.ci_low, r.ci_high, r.unpaired_ci_low, r.unpaired_ci_high, r.n)
