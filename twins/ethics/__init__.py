"""Ethics review: gates on held-out evidence, review records, a hash-chained audit log, signed approvals,
and guarded export (docs/architecture.md §8).

The run and search tasks call :func:`review_run` / :func:`review_search` after their effects or
confirmation; the search adds :func:`search_constraints` (the hard gates as search constraints).
``python -m twins review ...`` and ``python -m twins export ...`` are :mod:`twins.ethics.cli`.

Modules: ``config`` (schema, impact tier, hashes), ``evidence`` (runs the twin for the gates),
``gates`` (pure decisions over evidence), ``audit`` (the chain), ``signing`` (ssh-keygen -Y),
``review`` (records, approve/reject/show), ``export``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from twins.core.errors import ConfigError

from .config import EthicsConfig, as_config  # noqa: F401

log = logging.getLogger("twins")


def search_constraints(ethics_cfg) -> list[dict]:
    """The hard gates the search can honour while it searches, as ``search.constraints`` entries: each required
    equity rule becomes ``{metric, group_kind, max, max_rel}`` on the group's effect (``min: -max``, ``min_rel:
    -max_rel`` for a ``maximize`` metric); ``max_rel`` is judged against each group's baseline mean, as the gate
    does. (An optional rule's groups may not exist — the search counts a missing group as infeasible — so the
    gates check those, and re-check everything after confirmation.)"""
    e = as_config(ethics_cfg)
    out = []
    for k, r in enumerate(e.equity):
        if (r.max is None and r.get("max_rel", None) is None) or not r.required:
            continue
        c = {"metric": str(r.metric), "group_kind": str(r.group_kind)}
        if r.direction == "minimize":
            if r.max is not None:
                c["max"] = float(r.max)
            if r.max_rel is not None:
                c["max_rel"] = float(r.max_rel)
        elif r.direction == "maximize":
            if r.max is not None:
                c["min"] = -float(r.max)
            if r.max_rel is not None:
                c["min_rel"] = -float(r.max_rel)
        else:  # never guess which way is worse
            raise ConfigError(f"ethics.equity[{k}].direction", r.direction, "minimize or maximize")
        out.append(c)
    return out


def pedestrian_green_s(ethics_cfg) -> float:
    """The shortest green a pedestrian crossing needs: width / walking speed + walk interval."""
    s = as_config(ethics_cfg).safety.traffic
    return float(s.crossing_width_m) / float(s.walking_speed_mps) + float(s.walk_s)


def with_search_constraints(cfg):
    """``cfg`` for the search, with the hard gates it can honour: :func:`search_constraints` appended to
    ``search.constraints`` (when the search supports group constraints), and an intervention's
    greens that serve a pedestrian crossing floored at the crossing time (signal_timing's ``pedestrian_green_s``;
    an intervention without it: its ``min_green_s``), so no searched plan is unsafe to cross."""
    from omegaconf import OmegaConf, open_dict

    from twins.core.config import ConstraintConfig

    e = as_config(cfg.get("ethics"))
    iv = cfg.get("intervention") or {}
    need = round(pedestrian_green_s(e), 6)
    if e.enabled and "pedestrian_green_s" in iv:  # signal_timing: a floor on the greens that serve a crossing
        named = dict(e.safety.traffic.get("pedestrian_phases") or {})
        if iv.pedestrian_green_s is None or float(iv.pedestrian_green_s) < need or named:
            cfg = cfg.copy()
            cfg.intervention.pedestrian_green_s = max(need, float(iv.pedestrian_green_s or 0.0))
            cfg.intervention.pedestrian_phases = {**named, **dict(iv.get("pedestrian_phases") or {})}
            log.info("ethics: greens that serve a pedestrian crossing kept >= %.2f s (crossing time)%s",
                     cfg.intervention.pedestrian_green_s, f"; named phases {named}" if named else "")
    rng = (e.validity.get("validated_range") or {}).get("cycle_s") if e.enabled else None
    if rng is not None and "min_cycle_s" in iv:  # search only the cycles the twin was validated for
        cfg = cfg.copy()
        lo, hi = rng
        if lo is not None:
            cfg.intervention.min_cycle_s = max(float(lo), float(iv.min_cycle_s or 0.0))
        if hi is not None:
            cfg.intervention.max_cycle_s = min(float(hi), float(iv.max_cycle_s))
        log.info("ethics: cycle_s searched within the validated range %s", list(rng))
    if e.enabled and "pedestrian_green_s" not in iv and iv.get("min_green_s", None) is not None \
            and float(iv.min_green_s) < need:  # e.g. max_pressure: its one minimum green
        cfg = cfg.copy()
        cfg.intervention.min_green_s = need
        log.info("ethics: intervention.min_green_s raised to the pedestrian crossing time, %.2f s",
                 cfg.intervention.min_green_s)
    extra = search_constraints(e) if e.enabled else []
    if not extra or not hasattr(ConstraintConfig, "group_kind") or cfg.get("search") is None:
        if extra:
            log.warning("ethics: this search does not support group constraints; equity is checked by the gates only")
        return cfg
    have = [OmegaConf.to_container(c) for c in (cfg.search.get("constraints") or [])]
    new = [c for c in extra if not any(h.get("metric") == c["metric"] and h.get("group_kind") == c["group_kind"]
                                       for h in have)]
    if new:
        cfg = cfg.copy()
        with open_dict(cfg):
            for c in new:
                cfg.search.constraints.append(OmegaConf.merge(OmegaConf.structured(ConstraintConfig), c))
        log.info("ethics: search constraints from the equity gates: %s", new)
    return cfg


def review_run(cfg, outdir) -> dict | None:
    """After a run with an intervention: gather held-out evidence for its policy, evaluate the gates, write
    ``gates.json`` / ``review.json`` / ``review.md`` and append the audit entry."""
    import interventions

    from . import review
    from .config import validate

    e = as_config(cfg.get("ethics"))
    validate(e)

    iv = interventions.get(cfg.get("intervention", None))
    policy = iv.config_values()
    est = _run_estimate(outdir, cfg, e)
    ev = _gather(cfg, outdir, e, policy, "run", est)
    rec = review.create(cfg, outdir, ev, "run")
    _log_status(rec)
    return rec


def review_search(cfg, outdir, res) -> dict | None:
    """After a search's confirmation: the same for the winning policy (``res.best``)."""
    from . import evidence, review
    from .config import validate

    e = as_config(cfg.get("ethics"))
    validate(e)
    best = getattr(res, "best", None)
    if not best or best.get("recommendation") == "baseline":
        # no feasible candidate, or none that beats the baseline on held-out replications: the recommendation is
        # the baseline. That outcome is recorded (and logged): review show and export then say there is no plan
        summary = dict(getattr(res, "summary", None) or {})
        reason = (best or {}).get("reason") or summary.get("reason") or "no candidate was feasible"
        if best:
            summary["best_candidate"] = {"trial": best.get("trial"), "params": best.get("params"),
                                         "confirmed": best.get("best_candidate")}
        rec = review.create(cfg, outdir, no_plan_evidence(cfg, e, reason, summary), "search")
        log.warning("ethics: the search recommends no plan (%s): the review records that the baseline stays and "
                    "there is nothing to approve or export", reason)
        _log_status(rec)
        return rec
    metric, _ = evidence.objective_of(cfg, e)
    conf = (best.get("confirmed") or {}).get(metric) or {}
    est = conf.get("search_effect")
    pareto = getattr(res, "pareto", None)
    cols = [c for c in (pareto.columns if pareto is not None else [])
            if c == "trial" or c.startswith(("param:", "objective:", "confirmed:"))]
    extra = {"search": {"trial": best.get("trial"), "confirmed": conf,
                        "replications": best.get("replications"), "constraints": best.get("constraints"),
                        "pareto": pareto[cols].to_dict("records") if cols else []}}
    ev = _gather(cfg, outdir, e, dict(best["params"]), "search", est, extra)
    rec = review.create(cfg, outdir, ev, "search")
    _log_status(rec)
    return rec


def no_plan_evidence(cfg, e, reason: str, summary: dict | None = None) -> dict:
    """The evidence of a search that recommends no plan (no candidate was feasible, or none beat the baseline on
    held-out replications): what was asked, by whom, and why nothing came of it. Its only gate,
    ``recommendation``, fails: the baseline stays, and there is nothing to approve or export."""
    import interventions
    from omegaconf import OmegaConf

    from . import evidence
    from .config import controls_for, impact_tier, objective_spec, sha256

    iv = interventions.get(cfg.get("intervention", None))
    spec = objective_spec(cfg)
    tier = impact_tier(e.impact)
    return {"kind": evidence.twin_kind(cfg), "source": "search", "policy": None, "no_plan": reason,
            "scenario": str(cfg.scenario.get("name", cfg.scenario.get("kind"))), "intervention": iv.name,
            "label": "no plan: the baseline stays",
            "provenance": {**OmegaConf.to_container(e.objective, resolve=True), "objective": spec,
                           "objective_hash": sha256(spec)},
            "tier": tier, "controls": controls_for(e, tier["tier"]),
            "search": {"summary": summary or {}, "recommendation": "baseline", "reason": reason}}


def _gather(cfg, outdir, e, policy, source, est, extra=None) -> dict:
    """The evidence dict; without evidence (ethics disabled, or gathering it failed) a stub saying why."""
    import interventions

    from . import evidence

    failed = None
    if e.enabled:
        try:
            return evidence.gather(cfg, outdir, policy, source=source, estimate=est, extra=extra)
        except ConfigError:
            raise
        except Exception as err:  # the run itself is done: keep it, and record why it cannot be reviewed
            log.exception("ethics: gathering the evidence failed")
            failed = f"{type(err).__name__}: {err}"
    iv = interventions.get(cfg.get("intervention", None))
    return {"kind": evidence.twin_kind(cfg), "source": source, "policy": policy, "disabled": failed is None,
            "failed": failed, "scenario": str(cfg.scenario.get("name", cfg.scenario.get("kind"))),
            "intervention": iv.name, "label": iv.describe(policy)}


def _run_estimate(outdir, cfg, e) -> float | None:
    import pandas as pd

    from .evidence import objective_of

    p = Path(outdir) / "effects.parquet"
    metric, _ = objective_of(cfg, e)
    if not p.exists() or metric is None:
        return None
    eff = pd.read_parquet(p)
    row = eff[(eff["scope"] == "network") & (eff["metric"] == metric)]
    x = float(row["effect"].iloc[0]) if len(row) else math.nan
    return x if math.isfinite(x) else None


def _log_status(rec: dict) -> None:
    for g in rec["gates"]:
        log.info("gate %-28s %-11s %s", g["gate"], g["status"], g["reason"])
    log.info("ethics review: %s (python -m twins review show %s)", rec["status"].upper(), rec["run"])


__all__ = ["search_constraints", "with_search_constraints", "pedestrian_green_s", "review_run", "review_search",
           "no_plan_evidence", "EthicsConfig"]
