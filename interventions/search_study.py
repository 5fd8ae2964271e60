"""A search's Optuna study: its storage, opening or resuming it, and what each trial records.

:meth:`StudyStore.open` creates the study (trial 0 the scenario's own plan, a grid's points enqueued) or, with
``resume``, continues a stored one: finished trials are never re-evaluated, a killed batch's trials are marked
failed (``orphaned``) and their parameters re-queued. :meth:`StudyStore.tell` writes a trial's effects,
constraint violations and invalid plan onto it; :meth:`StudyStore.candidates` reads the trials back as the
candidates table. The storage is an Optuna RDB (SQLite ``study.db`` in the run folder by default).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from twins.core.errors import ConfigError

from ._evaluate import Outcomes
from .base import Parameter
from .search_objectives import Constraint, Objective, group_means
from .search_space import HAS_SET_CONSTRAINT, grid, grid_index, make_sampler

log = logging.getLogger("twins")


def default_storage(outdir: Path | None):
    """``study.db`` in ``outdir`` (created), or an in-memory storage without a run folder."""
    if outdir is None:
        import optuna

        return optuna.storages.InMemoryStorage()
    outdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(outdir / 'study.db').resolve()}"


def finished(t) -> bool:
    """A finished evaluation: completed, or failed as invalid (not orphaned by a kill)."""
    from optuna.trial import TrialState

    return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and bool(t.user_attrs.get("evaluated")))


class StudyStore:
    """One search's study in its storage, and the record each of its trials keeps."""

    def __init__(self, storage, study_name: str, resume: bool, space: Sequence[Parameter],
                 objectives: Sequence[Objective], constraints: Sequence[Constraint], sampler_name: str):
        self.storage, self.study_name, self.resume = storage, study_name, bool(resume)
        self.space, self.objectives, self.constraints = list(space), list(objectives), list(constraints)
        self.sampler_name = sampler_name

    @property
    def storage_url(self) -> str:
        return self.storage if isinstance(self.storage, str) else "in-memory"

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def open(self, seed: int, batch: int, grid_points: int, replications: int, start_point: dict | None,
             start_skipped: str | None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        names = optuna.study.get_all_study_names(self.storage)
        exists = self.study_name in names
        if exists and not self.resume:
            raise ConfigError("search.resume", False, f"true to continue study {self.study_name!r} in "
                              f"{self.storage_url}", "Or pick a new search.storage / search.study_name.")
        n_done = 0
        if exists:
            old = optuna.load_study(study_name=self.study_name, storage=self.storage)
            if [d.name.lower() for d in old.directions] != self.directions:
                raise ConfigError("search.objectives", [o.metric for o in self.objectives],
                                  f"the objectives of the stored study ({[d.name.lower() for d in old.directions]})")
            n_done = sum(1 for t in old.get_trials(deepcopy=False) if finished(t))
        # a resumed sampler must not replay the proposals it made before the kill
        sampler = make_sampler(self.sampler_name, seed + n_done, self.space, len(self.objectives),
                               bool(self.constraints), batch, grid_points)
        study = optuna.create_study(storage=self.storage, study_name=self.study_name, sampler=sampler,
                                    directions=self.directions, load_if_exists=True)
        if not exists and start_point is not None:
            study.enqueue_trial(dict(start_point), user_attrs={"baseline": True})
            log.info("search: trial 0 is the scenario's own plan (%s)",
                     ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in start_point.items()))
        elif not exists:
            log.info("search: the scenario's own plan is not a trial: %s", start_skipped)
        if self.sampler_name == "grid":
            import itertools

            g = grid(self.space, grid_points)
            points = list(itertools.product(*g.values()))
            order = np.random.default_rng(seed).permutation(len(points))
            done_params = {tuple(t.params.get(k) for k in g) for t in study.get_trials(deepcopy=False)}
            base = grid_index(g, start_point) if start_point is not None else None
            for i in order:
                if tuple(points[i]) not in done_params and tuple(points[i]) != base:  # the baseline stands for it
                    study.enqueue_trial(dict(zip(g, points[i])))
        if not exists:
            study.set_user_attr("objectives", [[o.metric, o.direction] for o in self.objectives])
            study.set_user_attr("replications", [0, replications])
            study.set_user_attr("sampler", self.sampler_name)
        else:
            self.recover(study)
        return study

    def recover(self, study) -> None:
        """Trials left RUNNING by a killed batch: mark them failed (orphaned) and re-queue their parameters."""
        import optuna
        from optuna.trial import TrialState

        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
            if t.state == TrialState.WAITING:
                continue
            optuna.trial.Trial(study, t._trial_id).set_user_attr("orphaned", True)
            study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number,
                                                      **({"baseline": True} if t.user_attrs.get("baseline") else {})})
            log.info("search: trial %d was interrupted; re-queued", t.number)

    def tell(self, study, trial, out: Outcomes, eff: np.ndarray, idx: int, batch_no: int) -> None:
        """Candidate ``idx`` of ``out`` (mean effects ``eff``) onto its trial: completed with its objective
        values, or failed as an invalid plan (or a non-finite objective)."""
        from optuna.trial import TrialState

        effects = {m: float(x) for m, x in zip(out.metrics, eff)}
        trial.set_user_attr("batch", batch_no)
        trial.set_user_attr("evaluated", True)
        trial.set_user_attr("replications", [int(out.replications[0]), int(len(out.replications))])
        trial.set_user_attr("effects", {m: (x if math.isfinite(x) else None) for m, x in effects.items()})
        trial.set_user_attr("baseline_mean", {m: float(np.nanmean(out.baseline[:, j]))
                                              for j, m in enumerate(out.metrics)})
        geff, gbase = group_means(out, idx) if any(c.group_kind for c in self.constraints) else (None, None)
        base = {m: float(np.nanmean(out.baseline[:, j])) for j, m in enumerate(out.metrics)}
        viol = [c.violation(effects, geff, base, gbase) for c in self.constraints]
        viol = [v if math.isfinite(v) else 1e30 for v in viol]
        trial.set_user_attr("constraints", viol)
        if HAS_SET_CONSTRAINT and self.sampler_name != "cmaes":
            for j, (c, v) in enumerate(zip(self.constraints, viol)):
                trial.set_constraint(f"c{j}:{c.label}", v)
        why = out.invalid[idx] if out.invalid is not None else None
        values = [effects.get(o.metric, math.nan) for o in self.objectives]
        missing = [o.metric for o in self.objectives if o.metric not in out.metrics]
        if missing:
            raise ConfigError("search.objectives.metric", missing[0], "an outcome metric: " + ", ".join(out.metrics))
        if why is not None or not all(math.isfinite(v) for v in values):
            trial.set_user_attr("invalid", why or "non-finite objective")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, values)

    def candidates(self, study) -> pd.DataFrame:
        """One row per finished or interrupted trial: parameters, effects, objective values, feasibility."""
        rows = []
        for t in study.get_trials(deepcopy=False):
            if t.state.name in ("RUNNING", "WAITING"):
                continue
            ua = t.user_attrs
            r = {"trial": t.number, "batch": ua.get("batch", -1), "state": t.state.name,
                 "orphaned": bool(ua.get("orphaned", False)), "invalid": ua.get("invalid"),
                 "baseline": bool(ua.get("baseline", False))}
            for p in self.space:
                r[f"param:{p.name}"] = t.params.get(p.name)
            for m, x in (ua.get("effects") or {}).items():
                r[f"effect:{m}"] = math.nan if x is None else x
            for j, o in enumerate(self.objectives):
                r[f"objective:{o.metric}"] = t.values[j] if t.values is not None else math.nan
            viol = ua.get("constraints", [])
            r["max_violation"] = max(viol) if viol else 0.0
            r["feasible"] = bool(t.state.name == "COMPLETE" and (not viol or max(viol) <= 0))
            r["replication_first"], r["replications"] = (ua.get("replications") or [None, None])
            rows.append(r)
        return pd.DataFrame(rows)


__all__ = ["StudyStore", "default_storage", "finished"]
