"""``python -m twins search`` from a config: the checks before the search starts, the search, its manifest.

``check_resume``: ``search.resume=true`` needs a stored study to continue (checked before anything is written);
``search_from_config``: the twin's evaluator (:class:`~interventions._evaluate.TwinEvaluator`), the checks of
objectives and constraints against the twin (``check_targets``), the :class:`~interventions.search.Search`
with its settings from ``cfg.search``, ``manifest.json`` (also for an interrupted search, marked incomplete)
and the figures after it.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from twins.core.errors import ConfigError

from .search import Search, SearchResult
from .search_confirm import invalid_summary
from .search_objectives import check_targets, constraints_from, objectives_from

log = logging.getLogger("twins")


def _num(x) -> float:
    return math.nan if x is None else float(x)


def check_resume(s, outdir: str | Path) -> None:
    """``search.resume=true`` needs the study to continue: refused (before anything is written) when the
    storage has no study of that name."""
    if not s.get("resume"):
        return
    study = str(s.get("study_name") or "twins-search")
    storage = s.get("storage") or None
    new = ("Start a new search without search.resume (or set search.storage / hydra.run.dir to the "
           "killed search's).")
    if storage is None:
        db = Path(outdir) / "study.db"
        if not db.exists():  # do not let Optuna create an empty database while checking
            raise ConfigError("search.resume", True, f"a run folder with a search to continue ({db} does not exist)",
                              new)
        storage = f"sqlite:///{db.resolve()}"
    elif storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise ConfigError("search.resume", True, f"a storage with a study to continue ({storage} does not exist)",
                          new)
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as e:  # noqa: BLE001  (a URL Optuna cannot open)
        raise ConfigError("search.storage", storage, "an Optuna storage URL that opens",
                          f"{type(e).__name__}: {e}") from None
    if study not in names:
        raise ConfigError("search.resume", True, f"a stored study named {study!r} in {storage}",
                          (f"It has {', '.join(map(repr, names))}: set search.study_name. " if names else "") + new)


def search_from_config(cfg, outdir: str | Path) -> SearchResult:
    """``python -m twins search``: the twin adapter, the search and its outputs in ``outdir``."""
    from twins.core import io

    from twins.compute.plan import search_batch

    from ._evaluate import TwinEvaluator

    started = time.time()
    s = cfg.search
    outdir = Path(outdir)
    check_resume(s, outdir)  # before anything is written into the folder
    ev = TwinEvaluator(cfg, list(s.params) if s.get("params") else None)
    check_targets(objectives_from(s), constraints_from(s), ev.probe, str(cfg.scenario.get("name", "")))
    outdir.mkdir(parents=True, exist_ok=True)
    io.write_config(outdir, cfg)
    conf = s.get("confirm") or {}
    srch = Search(ev, ev.space, objectives_from(s), constraints_from(s), sampler=str(s.sampler),
                  budget=int(s.budget), replications=int(cfg.replications),
                  batch=int(s.batch) if s.get("batch") is not None else search_batch(cfg, int(cfg.replications),
                                                                                      int(s.budget)),
                  seed=int(cfg.seed if s.get("seed") is None else s.seed),
                  storage=s.get("storage") or None, study_name=str(s.get("study_name") or "twins-search"),
                  resume=bool(s.resume), outdir=outdir, confirm_top=int(conf.get("top", 3)),
                  confirm_replications=conf.get("replications"),
                  confirm_offset=int(conf.get("replication_offset", 10_000)), grid_points=int(s.grid_points),
                  progress=cfg.get("progress", None) is not False, figures=False,  # after the manifest
                  label=f"{cfg.scenario.get('name', '')}/{ev.iv.name}",
                  confirm_during_search=bool(conf.get("during_search", True)),
                  start_from_baseline=bool(s.get("start_from_baseline", True)),
                  meta={"intervention": ev.iv.name, "scenario": str(cfg.scenario.get("name", "")),
                        "horizon_s": float(cfg.horizon_s), "seed": int(cfg.seed)})
    from twins.compute.device import manifest_devices

    def manifest(complete: bool, **extra) -> None:
        # the search's compute and energy account (twins.compute.accounting); device: where the evaluations
        # ran (the plan's devices; under compute=ray the cluster's), not the driver's
        acc = ev.compute_account()
        man = io.manifest(cfg, ev.probe.device, ev.probe.dtype, started, complete, task="search", accounting=acc,
                          **extra)
        io.write_json(outdir / "manifest.json", {**man, **manifest_devices(cfg, ev.probe.device)})

    try:
        res = srch.run()
    except BaseException as e:  # Ctrl-C or a crash: the evaluations so far are in candidates.parquet / study.db
        try:
            manifest(False, interrupted=f"{type(e).__name__}: {e}".strip(": "),
                     resume="search.resume=true with the same hydra.run.dir continues the study")
            log.error("search interrupted; the evaluations so far are in %s (manifest: complete = false)", outdir)
        except Exception as e2:  # noqa: BLE001  (best effort: the original error matters more)
            log.error("could not write the interrupted search's manifest: %s", e2)
        raise
    if res.best:
        for m, e in res.best["confirmed"].items():
            if m in [o.metric for o in srch.objectives]:
                log.info("best (trial %d) %s: search %+.3f, confirmed %+.3f [%+.3f, %+.3f] (gap %+.3f)",
                         res.best["trial"], m, e["search_effect"], e["effect"], _num(e["ci_low"]),
                         _num(e["ci_high"]), _num(e["gap"]))
    summary = getattr(srch, "summary", None) or invalid_summary(res.candidates)
    log.info("search: %d candidate(s) evaluated, %d invalid plan(s) (%.0f %%)%s", summary["evaluated"],
             summary["invalid"], 100 * summary["invalid_share"],
             (": " + ", ".join(f"{k} {v}" for k, v in summary["invalid_by"].items())) if summary["invalid"] else "")
    if summary.get("recommendation") == "baseline":
        log.warning("recommendation: keep the baseline: %s", summary["reason"])
    elif res.best:
        log.info("recommendation: trial %d (%s)", res.best["trial"], summary.get("reason", ""))
    energy = (res.best or {}).get("compute", {}).get("energy_per_confirmed_policy_j")
    extra = {"search_summary": summary}
    manifest(True, energy_per_confirmed_policy_j=energy, figures=[], **extra)  # before the figures: they may fail
    if cfg.output.figures:
        figures, failed = srch.write_figures(res)
        manifest(True, energy_per_confirmed_policy_j=energy, figures=figures, **extra,
                 **({"figure_errors": failed} if failed else {}))
    acc = ev.compute_account()
    log.info("search energy: %.1f J in all%s (%s)", acc["energy_total_j"],
             "" if not res.best else f", {res.best['compute']['energy_per_confirmed_policy_j']} J per confirmed policy",
             "estimate" if acc["energy_is_estimate"] else "measured")
    log.info("wrote %s", outdir)
    return res


__all__ = ["check_resume", "search_from_config"]
