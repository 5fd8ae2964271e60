"""Counterfactual policy search: ask/tell over an intervention's parameter space (Optuna).

The search sees only ``evaluate(params[K, P], replications) -> Outcomes`` (see
``interventions/_evaluate.py``; :class:`~interventions._evaluate.TwinEvaluator`
is the adapter onto a twin) and the parameter space (a list of
:class:`~interventions.base.Parameter`). Each round asks the sampler for a
batch of K candidates and evaluates them as K arms × R replications in one
world batch next to the baseline arm; the objectives are the candidates' mean
paired effects (treated − baseline on the same replications).

- **objectives**: one or several ``(metric, direction)``; several give a
  Pareto front (NSGA-II, or TPE's multi-objective mode);
- **constraints**: ``{metric, max, min}`` on a mean effect (``max_rel``/``min_rel``:
  relative to the baseline's mean; ``group_kind``: on every group of that kind),
  passed to the sampler as ``constraints_func`` (violation > 0 is infeasible) and
  honoured when picking the Pareto front and the winner;
- **the baseline as a candidate**: the first trial is the scenario's own plan
  (every parameter at its ``baseline``; ``start_from_baseline``), so a search whose
  candidates are all worse ends with the baseline as its best confirmed candidate;
- **storage**: an Optuna RDB (SQLite file ``study.db`` in the run folder by
  default); ``resume=True`` continues the study: finished trials are never
  re-evaluated, an interrupted batch's trials are marked failed (``orphaned``)
  and their parameters re-queued;
- **confirmation**: the top candidates and every Pareto point are re-evaluated
  on held-out replications (ids from ``confirm_offset``, never used in the
  search), paired against the baseline; each gets its search estimate, the
  confirmed estimate with a 95% interval, and the gap (winner's curse).

Outputs (with ``outdir``): ``candidates.parquet`` (every evaluation; ``invalid``
names why the intervention refused a plan), ``pareto.parquet``, ``confirmed.parquet``,
``best_policy.json``, ``figures/{convergence,pareto,confirmed}.png``.

``best_policy.json`` describes the best confirmed candidate (``params``,
``confirmed``) and says whether to apply it: ``recommendation`` is
``"candidate"`` only when its held-out 95% interval on the first objective lies
entirely on the better side of 0; otherwise ``"baseline"`` (its point estimate
is worse, or the interval includes 0), with the ``reason``, the candidate's
confirmed effect under ``best_candidate`` for reference and
``recommended_params: {}``. ``candidates`` counts the invalid plans (also in
``manifest.json`` as ``search_summary`` and on the console).

This module holds the loop; its parts live next to it: ``search_objectives`` (objectives, constraints,
target checks), ``search_space`` (distributions, grid, baseline point, samplers, Pareto mask),
``search_study`` (the Optuna study: storage, resume, what a trial records), ``search_confirm`` (held-out
confirmation, pick, recommendation), ``search_outputs`` (tables, ``best_policy.json``, figures) and
``search_config`` (``search_from_config``, ``check_resume``, the manifest).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from twins.core.errors import ConfigError

from ._evaluate import Outcomes, values_of
from .base import Parameter
from .search_confirm import Confirmation, invalid_summary
from .search_objectives import Constraint, Objective
from .search_outputs import compute_per_policy, write_figures, write_tables
from .search_space import SAMPLERS, baseline_point, distributions, encode, grid_size, pareto_mask
from .search_study import StudyStore, default_storage, finished

log = logging.getLogger("twins")


@dataclass
class SearchResult:
    study: object
    candidates: pd.DataFrame
    pareto: pd.DataFrame
    confirmed: pd.DataFrame
    best: dict | None
    outdir: Path | None = None
    summary: dict | None = None  # invalid plans and the recommendation with its reason (manifest: search_summary)


class Search:
    """An ask/tell policy search whose evaluations are batches of worlds."""

    def __init__(self, evaluate: Callable[[np.ndarray, Sequence[int]], Outcomes], space: Sequence[Parameter],
                 objectives: Sequence[Objective] = (Objective("mean_delay_s"),),
                 constraints: Sequence[Constraint] = (), sampler: str = "tpe", budget: int = 32, batch: int = 8,
                 replications: int = 8, seed: int = 0, storage: str | None = None,
                 study_name: str = "twins-search", resume: bool = False, outdir: str | Path | None = None,
                 confirm_top: int = 3, confirm_replications: int | None = None, confirm_offset: int = 10_000,
                 grid_points: int = 5, progress: bool | None = True, figures: bool = True,
                 label: str = "", meta: dict | None = None, confirm_during_search: bool = True,
                 start_from_baseline: bool = True):
        if sampler not in SAMPLERS:
            from twins.core.errors import suggest

            raise ConfigError("search.sampler", sampler, " | ".join(SAMPLERS), suggest(sampler, SAMPLERS))
        if budget < 1:
            raise ConfigError("search.budget", budget, "an integer >= 1")
        if batch < 1:
            raise ConfigError("search.batch", batch, "an integer >= 1")
        if not objectives:
            raise ConfigError("search.objectives", [], "at least one {metric, direction}")
        if not space:
            raise ConfigError("search.params", [], "at least one parameter to search")
        self.evaluate, self.space = evaluate, list(space)
        self.objectives, self.constraints = list(objectives), list(constraints)
        self.sampler_name, self.budget, self.batch = sampler, int(budget), int(batch)
        self.R, self.seed = int(replications), int(seed)
        self.confirm_top, self.confirm_offset = int(confirm_top), int(confirm_offset)
        self.confirm_R = int(confirm_replications or 2 * self.R)
        if self.confirm_offset < self.R:
            raise ConfigError("search.confirm.replication_offset", confirm_offset,
                              f">= search replications ({self.R}): held-out ids must never be used in the search")
        self.grid_points, self.progress, self.figures = int(grid_points), progress, figures
        self.outdir = Path(outdir) if outdir is not None else None
        if storage is None:
            storage = default_storage(self.outdir)
        self.storage, self.study_name, self.resume = storage, study_name, bool(resume)
        self.store = StudyStore(storage, study_name, resume, self.space, self.objectives, self.constraints, sampler)
        self.confirmation = Confirmation(evaluate, self.space, self.objectives, self.constraints, self.confirm_top,
                                         self.confirm_offset, self.confirm_R)
        self.label, self.meta = label, dict(meta or {})
        self.confirm_during_search = bool(confirm_during_search)
        self._confirmed_text: str | None = None
        self.summary: dict | None = None  # after finish(): invalid plans and the recommendation
        # the scenario's own plan as the first trial (None, with the reason, where it is not a point of the space)
        self.start_point, self.start_skipped = (baseline_point(self.space) if start_from_baseline
                                                else (None, "search.start_from_baseline=false"))
        if sampler == "grid":
            n = grid_size(self.space, self.grid_points, self.start_point)
            if n < self.budget:
                log.info("search: grid has %d points; budget %d -> %d", n, self.budget, n)
                self.budget = n

    @property
    def storage_url(self) -> str:
        return self.store.storage_url

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def confirmed_groups(self) -> pd.DataFrame:
        """Per trial × group × group metric: the held-out effects of the confirmed candidates."""
        return self.confirmation.groups

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        from tqdm.auto import tqdm

        study = self.store.open(self.seed, self.batch, self.grid_points, self.R, self.start_point,
                                self.start_skipped)
        dists = distributions(self.space)
        done = sum(1 for t in study.get_trials(deepcopy=False) if finished(t))
        batch_no = 1 + max([int(t.user_attrs.get("batch", -1)) for t in study.get_trials(deepcopy=False)] + [-1])
        reps = list(range(0, self.R))
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc=f"search {self.label}".strip(),
                   disable=self.progress is False, leave=True)
        self._postfix(bar, study)
        try:
            while done < self.budget:
                k = min(self.batch, self.budget - done)
                trials = [study.ask(dists) for _ in range(k)]
                X = np.array([[encode(p, t.params[p.name]) for p in self.space] for t in trials], float)
                out = self.confirmation.evaluate_batch(X, reps)
                eff = out.effects.mean(axis=1)  # [K, M]
                for i, t in enumerate(trials):
                    self.store.tell(study, t, out, eff[i], i, batch_no)
                done += k
                batch_no += 1
                bar.update(k)
                self._postfix(bar, study, confirm=True)
                if self.outdir is not None:
                    self.candidates(study).to_parquet(self.outdir / "candidates.parquet", index=False)
        finally:
            bar.close()
        return self.finish(study)

    def _postfix(self, bar, study, confirm: bool = False) -> None:
        """Best search estimate so far and, after each batch, the best confirmed-so-far value (the leader is
        re-run on held-out replications whenever it changes, with the next batch where there is one; the final
        confirmation reuses those runs)."""
        df = self.candidates(study)
        ok = df[df["state"] == "COMPLETE"] if len(df) else df
        if len(ok):
            o = self.objectives[0]
            col = f"effect:{o.metric}"
            feas = ok[ok["feasible"]]
            best = (feas if len(feas) else ok)[col]
            post = {f"best {o.metric}": f"{best.min() if o.direction == 'minimize' else best.max():+.3f}"}
            if confirm and self.confirm_during_search and self.progress is not False:
                self._confirmed_text = self.confirmation.incumbent(df)
            if self._confirmed_text is not None:
                post["confirmed"] = self._confirmed_text
            bar.set_postfix(post)

    # --- tables ---------------------------------------------------------------------------------
    def candidates(self, study) -> pd.DataFrame:
        """One row per finished or interrupted trial: parameters, effects, objective values, feasibility."""
        return self.store.candidates(study)

    def pareto(self, cand: pd.DataFrame) -> pd.DataFrame:
        """Feasible completed candidates that no other feasible candidate dominates (all objectives)."""
        ok = cand[(cand["state"] == "COMPLETE") & cand["feasible"]] if len(cand) else cand
        if not len(ok):
            return ok.copy()
        cols = [f"objective:{o.metric}" for o in self.objectives]
        mask = pareto_mask(ok[cols].to_numpy(float), self.directions)
        return ok[mask].sort_values(cols[0], ascending=self.directions[0] == "minimize").reset_index(drop=True)

    # --- the result -----------------------------------------------------------------------------
    def finish(self, study) -> SearchResult:
        """Confirm the chosen candidates on held-out replications, pick the winner and say whether to apply it."""
        from twins.core import io

        conf = self.confirmation
        cand = self.candidates(study)
        pareto = self.pareto(cand)
        confirmed = conf.confirm(cand, pareto)
        best_trial = conf.pick(confirmed)
        best = None
        if best_trial is not None:
            t = study.trials[best_trial]
            sub = confirmed[confirmed["trial"] == best_trial]
            best = {"trial": best_trial, "params": values_of(self.space, [encode(p, t.params[p.name])
                                                                         for p in self.space]),
                    "objectives": [{"metric": o.metric, "direction": o.direction} for o in self.objectives],
                    "constraints": [c.as_dict() for c in self.constraints],
                    "confirmed": {r.metric: io.jsonable({"search_effect": r.search_effect,
                                                    "effect": r.confirmed_effect, "ci_low": r.ci_low,
                                                    "ci_high": r.ci_high, "n": int(r.n), "gap": r.gap,
                                                    "baseline_mean": r.baseline_mean,
                                                    "treated_mean": r.treated_mean})
                                  for r in sub.itertuples()},
                    "replications": {"search": [0, self.R],
                                     "confirm": [self.confirm_offset, self.confirm_R]},
                    "pareto_trials": [int(x) for x in pareto["trial"]] if len(pareto) else [],
                    "sampler": self.sampler_name, "budget": self.budget, "batch": self.batch,
                    "storage": self.storage_url, "study_name": self.study_name, **self.meta}
            best["compute"] = compute_per_policy(self.evaluate, confirmed)
            best["is_baseline"] = bool(t.user_attrs.get("baseline", False))
            best.update(conf.recommendation(confirmed, best_trial, best["params"], best["is_baseline"]))
        self.summary = {**invalid_summary(cand), "recommendation": (best or {}).get("recommendation", "baseline"),
                        "reason": (best or {}).get("reason") or conf.infeasible_reason(cand, confirmed)}
        if best is not None:
            best["candidates"] = invalid_summary(cand)
        if len(pareto) and len(confirmed):
            c = confirmed.pivot_table(index="trial", columns="metric",
                                      values=["confirmed_effect", "ci_low", "ci_high", "gap"])
            c.columns = [f"confirmed:{m}" if v == "confirmed_effect" else f"{v}:{m}" for v, m in c.columns]
            pareto = pareto.merge(c.reset_index(), on="trial", how="left")
        res = SearchResult(study, cand, pareto, confirmed, best, self.outdir, self.summary)
        if self.outdir is not None:
            self.write(res)
        return res

    # --- outputs --------------------------------------------------------------------------------
    def write(self, res: SearchResult) -> None:
        write_tables(self.outdir, res.candidates, res.pareto, res.confirmed, self.confirmed_groups, res.best)
        if self.figures:
            self.write_figures(res)

    def write_figures(self, res: SearchResult) -> tuple[list[str], list[str]]:
        """``figures/``; ``(written, errors)``: a figure that fails is a warning, never a lost search."""
        return write_figures(self.outdir, res.candidates, res.pareto, res.confirmed, self.objectives, self.label)


__all__ = ["Search", "SearchResult"]
