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

Length (debt, issue 21): storage and resume, the ask/tell loop, confirmation on held-out replications, the
equity pick and the outputs still share this module; the twin's evaluation already lives in ``_evaluate.py``.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from twins.core.errors import ConfigError
from twins.core.stats import paired_effect

from ._evaluate import Outcomes, values_of
from .base import Parameter

log = logging.getLogger("twins")

SAMPLERS = ("tpe", "cmaes", "nsga2", "random", "grid")
DIRECTIONS = ("minimize", "maximize")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str = "minimize"

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ConfigError("search.objectives.direction", self.direction, "minimize or maximize")


@dataclass(frozen=True)
class Constraint:
    """A limit on a candidate's mean effect: feasible when ``min <= effect <= max``.

    With ``group_kind`` (e.g. ``approach``, ``origin``, ``mode``, ``cell``) the limit holds for every group of
    that kind (or just ``group``): an equity constraint. During the search it is judged on each group's mean
    effect; at confirmation on the unfavourable end of each group's 95% interval, as the equity gate does.

    ``max_rel`` / ``min_rel`` are limits relative to the baseline's mean (of the network, or of each group):
    feasible when ``effect <= max_rel · |baseline|`` (and ``>= min_rel · |baseline|``), e.g. ``max_rel: 0.25``:
    no group's delay may grow by more than 25 % of its own baseline delay (the equity gate's ``max_rel``). Where
    the baseline is not known (NaN) the relative limit is not applied, as in the gate.
    """

    metric: str
    max: float | None = None
    min: float | None = None
    group_kind: str | None = None
    group: str | None = None
    max_rel: float | None = None
    min_rel: float | None = None

    @property
    def label(self) -> str:
        where = f"[{self.group_kind}{'=' + self.group if self.group else ''}]" if self.group_kind else ""
        rel = "".join(f" {k} {v:g}x baseline" for k, v in (("<=", self.max_rel), (">=", self.min_rel))
                      if v is not None)
        return f"{self.metric}{where}{rel}"

    @property
    def relative(self) -> bool:
        return self.max_rel is not None or self.min_rel is not None

    def _excess(self, low: float, high: float, base: float | None = None) -> float:
        """How far ``[low, high]`` (the mean twice, or an interval) goes past the limits (<= 0: inside);
        ``base``: the baseline's mean, for the relative limits."""
        v = -math.inf
        if self.max is not None:
            v = max(v, high - self.max)
        if self.min is not None:
            v = max(v, self.min - low)
        if base is not None and math.isfinite(base):
            if self.max_rel is not None:
                v = max(v, high - self.max_rel * abs(base))
            if self.min_rel is not None:
                v = max(v, self.min_rel * abs(base) - low)
        return v

    def violation(self, effects: dict, group_effects: dict | None = None, baselines: dict | None = None,
                  group_baselines: dict | None = None) -> float:
        """Largest excess over the limits (> 0: infeasible). ``effects``: {metric: mean effect};
        ``group_effects``: {(group_kind, group): {metric: mean effect or (low, high)}}; ``baselines`` /
        ``group_baselines``: the baseline's means in the same shapes (needed by ``max_rel`` / ``min_rel``)."""
        if self.group_kind is None:
            x = effects.get(self.metric, math.nan)
            if x is None or not math.isfinite(x):
                return math.inf
            v = self._excess(x, x, (baselines or {}).get(self.metric))
            return v if v != -math.inf else 0.0
        vals = [(m.get(self.metric), ((group_baselines or {}).get((kind, name)) or {}).get(self.metric))
                for (kind, name), m in (group_effects or {}).items()
                if kind == self.group_kind and (self.group is None or name == self.group)]
        vals = [(v if isinstance(v, tuple) else (v, v), b) for v, b in vals if v is not None]
        vals = [(lo, hi, b) for (lo, hi), b in vals if not (math.isnan(lo) or math.isnan(hi))]  # NaN: no data there
        if not vals:
            return math.inf  # the groups the limit names are not reported: cannot be shown feasible
        # an unbounded interval end (one replication) is an unbounded excess: not shown feasible
        v = max(self._excess(lo, hi, b) for lo, hi, b in vals)
        return v if v != -math.inf else 0.0

    def as_dict(self) -> dict:
        d = {"metric": self.metric, "max": self.max, "min": self.min}
        if self.relative:
            d.update(max_rel=self.max_rel, min_rel=self.min_rel)
        if self.group_kind is not None:
            d.update(group_kind=self.group_kind, group=self.group)
        return d


def _has_set_constraint() -> bool:
    try:
        import optuna

        return hasattr(optuna.trial.Trial, "set_constraint")
    except ImportError:  # pragma: no cover
        return False


_HAS_SET_CONSTRAINT = _has_set_constraint()


def constraints_of_trial(trial) -> list[float]:
    """Optuna ``constraints_func``: the violations stored on the trial before it was told."""
    return list(trial.user_attrs.get("constraints", []))


@dataclass
class SearchResult:
    study: object
    candidates: pd.DataFrame
    pareto: pd.DataFrame
    confirmed: pd.DataFrame
    best: dict | None
    outdir: Path | None = None
    summary: dict | None = None  # invalid plans and the recommendation with its reason (manifest: search_summary)


def _distributions(space: Sequence[Parameter]):
    import optuna.distributions as d

    out = {}
    for p in space:
        if p.kind == "categorical":
            out[p.name] = d.CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            out[p.name] = d.IntDistribution(int(p.low), int(p.high))
        else:
            out[p.name] = d.FloatDistribution(float(p.low), float(p.high))
    return out


def _grid(space: Sequence[Parameter], points: int) -> dict:
    g = {}
    for p in space:
        if p.kind == "categorical":
            g[p.name] = list(p.choices)
        elif p.kind == "int":
            g[p.name] = sorted({int(round(x)) for x in np.linspace(p.low, p.high, points)})
        else:
            g[p.name] = [float(x) for x in np.linspace(p.low, p.high, points)]
    return g


def baseline_point(space: Sequence[Parameter]) -> tuple[dict | None, str | None]:
    """The scenario's own plan as a point of the search space, ``({name: baseline}, None)``, or ``(None, why)``
    when a searched parameter has no single baseline value (e.g. the junctions' cycles differ) or its baseline
    lies outside the searched bounds."""
    missing = [p.name for p in space if p.baseline is None]
    if missing:
        return None, (f"the scenario has no single value of {', '.join(missing)} (its junctions differ), so its own "
                      "plan is not a point of the search space")
    out = {}
    for p in space:
        try:
            out[p.name] = p.check(p.baseline, "search.params.")
        except ConfigError:
            return None, f"the scenario's {p.name}={p.baseline!r} lies outside the searched bounds ({p.valid})"
    return out, None


def _grid_index(g: dict, point: dict) -> tuple | None:
    """The grid point (a tuple in ``g``'s key order) equal to ``point`` (floats to 1e-9 of their range), if any."""
    out = []
    for k, vals in g.items():
        x = point[k]
        hit = [v for v in vals if v == x or (isinstance(v, float) and isinstance(x, (int, float))
                                               and abs(v - x) <= 1e-9 * max(1.0, abs(vals[-1] - vals[0])))]
        if not hit:
            return None
        out.append(hit[0])
    return tuple(out)


def make_sampler(name: str, seed: int, space: Sequence[Parameter], n_objectives: int, constrained: bool,
                 batch: int, grid_points: int = 5):
    import optuna

    # Optuna >= 5 reads constraints set on the trial (Trial.set_constraint); older ones take constraints_func
    cf = constraints_of_trial if constrained and not _HAS_SET_CONSTRAINT else None
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, constant_liar=True,
                                          n_startup_trials=max(batch, 8), multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=cf, population_size=max(batch, 4))
    if name == "cmaes":
        if n_objectives > 1:
            raise ConfigError("search.sampler", name, "tpe, nsga2 or random for several objectives",
                              "CMA-ES optimizes one objective.")
        try:
            import cmaes  # noqa: F401  (optuna needs it for CmaEsSampler)
        except ImportError:
            raise ConfigError("search.sampler", name, "a sampler whose package is installed",
                              "CMA-ES needs the 'cmaes' package: pip install cmaes.") from None
        if constrained:
            log.warning("search: CMA-ES ignores constraints while sampling; they still filter the winner")
        return optuna.samplers.CmaEsSampler(seed=seed, popsize=max(batch, 4), n_startup_trials=0,
                                            warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":  # the grid points are enqueued by the search (GridSampler cannot run ask/tell batches)
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError("search.sampler", name, " | ".join(SAMPLERS))


def pareto_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rows of ``values[N, M]`` that no other row dominates (signs follow ``directions``)."""
    v = np.asarray(values, dtype=float) * np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        dom = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        if dom.any():
            keep[i] = False
    # identical points: keep the first only
    _, first = np.unique(v, axis=0, return_index=True) if n else (None, np.array([], int))
    dup = np.ones(n, dtype=bool)
    dup[first] = False
    return keep & ~dup


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
            if self.outdir is None:
                import optuna

                storage = optuna.storages.InMemoryStorage()
            else:
                self.outdir.mkdir(parents=True, exist_ok=True)
                storage = f"sqlite:///{(self.outdir / 'study.db').resolve()}"
        self.storage, self.study_name, self.resume = storage, study_name, bool(resume)
        self.label, self.meta = label, dict(meta or {})
        self.confirm_during_search = bool(confirm_during_search)
        self._held: dict = {}  # trial -> (held-out Outcomes, row): confirmations are evaluated once
        # a leader whose held-out confirmation rides along with the next batch: (trial, params row)
        self._pending: tuple[int, np.ndarray] | None = None
        self._confirmed_text: str | None = None
        self.summary: dict | None = None  # after finish(): invalid plans and the recommendation
        self.confirmed_groups = pd.DataFrame()
        # the scenario's own plan as the first trial (None, with the reason, where it is not a point of the space)
        self.start_point, self.start_skipped = (baseline_point(self.space) if start_from_baseline
                                                else (None, "search.start_from_baseline=false"))
        if sampler == "grid":
            g = _grid(self.space, self.grid_points)
            n = int(np.prod([len(v) for v in g.values()]))
            if self.start_point is not None and _grid_index(g, self.start_point) is None:
                n += 1  # the baseline is not a grid point: it is evaluated as well
            if n < self.budget:
                log.info("search: grid has %d points; budget %d -> %d", n, self.budget, n)
                self.budget = n

    @property
    def storage_url(self) -> str:
        return self.storage if isinstance(self.storage, str) else "in-memory"

    # --- the study ------------------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def _open_study(self):
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
            n_done = sum(1 for t in old.get_trials(deepcopy=False) if self._counts(t))
        # a resumed sampler must not replay the proposals it made before the kill
        sampler = make_sampler(self.sampler_name, self.seed + n_done, self.space, len(self.objectives),
                               bool(self.constraints), self.batch, self.grid_points)
        study = optuna.create_study(storage=self.storage, study_name=self.study_name, sampler=sampler,
                                    directions=self.directions, load_if_exists=True)
        if not exists and self.start_point is not None:
            study.enqueue_trial(dict(self.start_point), user_attrs={"baseline": True})
            log.info("search: trial 0 is the scenario's own plan (%s)",
                     ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in self.start_point.items()))
        elif not exists:
            log.info("search: the scenario's own plan is not a trial: %s", self.start_skipped)
        if self.sampler_name == "grid":
            import itertools

            g = _grid(self.space, self.grid_points)
            points = list(itertools.product(*g.values()))
            order = np.random.default_rng(self.seed).permutation(len(points))
            done_params = {tuple(t.params.get(k) for k in g) for t in study.get_trials(deepcopy=False)}
            base = _grid_index(g, self.start_point) if self.start_point is not None else None
            for i in order:
                if tuple(points[i]) not in done_params and tuple(points[i]) != base:  # the baseline stands for it
                    study.enqueue_trial(dict(zip(g, points[i])))
        if not exists:
            study.set_user_attr("objectives", [[o.metric, o.direction] for o in self.objectives])
            study.set_user_attr("replications", [0, self.R])
            study.set_user_attr("sampler", self.sampler_name)
        else:
            self._recover(study)
        return study

    @staticmethod
    def _counts(t) -> bool:
        """A finished evaluation: completed, or failed as invalid (not orphaned by a kill)."""
        from optuna.trial import TrialState

        return t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and bool(t.user_attrs.get("evaluated")))

    def _recover(self, study) -> None:
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

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        from tqdm.auto import tqdm

        study = self._open_study()
        dists = _distributions(self.space)
        done = sum(1 for t in study.get_trials(deepcopy=False) if self._counts(t))
        batch_no = 1 + max([int(t.user_attrs.get("batch", -1)) for t in study.get_trials(deepcopy=False)] + [-1])
        reps = list(range(0, self.R))
        bar = tqdm(total=self.budget, initial=min(done, self.budget), desc=f"search {self.label}".strip(),
                   disable=self.progress is False, leave=True)
        self._postfix(bar, study)
        try:
            while done < self.budget:
                k = min(self.batch, self.budget - done)
                trials = [study.ask(dists) for _ in range(k)]
                X = np.array([[self._encode(p, t.params[p.name]) for p in self.space] for t in trials], float)
                out = self._evaluate_batch(X, reps)
                eff = out.effects.mean(axis=1)  # [K, M]
                for i, t in enumerate(trials):
                    self._tell(study, t, out, eff[i], i, batch_no)
                done += k
                batch_no += 1
                bar.update(k)
                self._postfix(bar, study, confirm=True)
                if self.outdir is not None:
                    self.candidates(study).to_parquet(self.outdir / "candidates.parquet", index=False)
        finally:
            bar.close()
        return self.finish(study)

    def _evaluate_batch(self, X: np.ndarray, reps: list[int]):
        """One batch of candidates on the search replications. A leader waiting for its held-out confirmation
        runs in the same world batch (evaluators with ``evaluate_many``, e.g. the twin's): a world's numbers do
        not depend on its batch, so its held-out outcomes equal a separate evaluation's, one batch fewer."""
        pend, self._pending = self._pending, None
        many = getattr(self.evaluate, "evaluate_many", None)
        if pend is None or many is None or pend[0] in self._held:
            return self.evaluate(X, reps)
        out, held = many([(X, reps), (pend[1][None], self._confirm_reps())])
        self._held[pend[0]] = (held, 0)
        return out

    def _confirm_reps(self) -> list[int]:
        return list(range(self.confirm_offset, self.confirm_offset + self.confirm_R))

    def _params_of(self, trials: Sequence[int], cand: pd.DataFrame) -> np.ndarray:
        """The encoded parameter rows of ``trials`` (from the candidates table)."""
        sel = cand.set_index("trial").loc[list(trials)]
        X = sel[[f"param:{p.name}" for p in self.space]].to_numpy(object)
        return np.array([[self._encode(p, v) for p, v in zip(self.space, row)] for row in X], float)

    def _encode(self, p: Parameter, v):
        return p.choices.index(v) if p.kind == "categorical" else float(v)

    def _tell(self, study, trial, out: Outcomes, eff: np.ndarray, idx: int, batch_no: int) -> None:
        from optuna.trial import TrialState

        effects = {m: float(x) for m, x in zip(out.metrics, eff)}
        trial.set_user_attr("batch", batch_no)
        trial.set_user_attr("evaluated", True)
        trial.set_user_attr("replications", [int(out.replications[0]), int(len(out.replications))])
        trial.set_user_attr("effects", {m: (x if math.isfinite(x) else None) for m, x in effects.items()})
        trial.set_user_attr("baseline_mean", {m: float(np.nanmean(out.baseline[:, j]))
                                              for j, m in enumerate(out.metrics)})
        geff, gbase = _group_means(out, idx) if any(c.group_kind for c in self.constraints) else (None, None)
        base = {m: float(np.nanmean(out.baseline[:, j])) for j, m in enumerate(out.metrics)}
        viol = [c.violation(effects, geff, base, gbase) for c in self.constraints]
        viol = [v if math.isfinite(v) else 1e30 for v in viol]
        trial.set_user_attr("constraints", viol)
        if _HAS_SET_CONSTRAINT and self.sampler_name != "cmaes":
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
                self._confirmed_text = self._confirm_incumbent(study)
            if self._confirmed_text is not None:
                post["confirmed"] = self._confirmed_text
            bar.set_postfix(post)

    # --- tables ---------------------------------------------------------------------------------
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

    def pareto(self, cand: pd.DataFrame) -> pd.DataFrame:
        """Feasible completed candidates that no other feasible candidate dominates (all objectives)."""
        ok = cand[(cand["state"] == "COMPLETE") & cand["feasible"]] if len(cand) else cand
        if not len(ok):
            return ok.copy()
        cols = [f"objective:{o.metric}" for o in self.objectives]
        mask = pareto_mask(ok[cols].to_numpy(float), self.directions)
        return ok[mask].sort_values(cols[0], ascending=self.directions[0] == "minimize").reset_index(drop=True)

    # --- confirmation ---------------------------------------------------------------------------
    def _held_out(self, trials: Sequence[int], cand: pd.DataFrame) -> dict:
        """Held-out outcomes per trial (evaluated once, in one batch, then cached: the same parameters on the
        same held-out replications give the same numbers, so the final confirmation reuses the ones shown
        during the search)."""
        todo = [int(t) for t in dict.fromkeys(trials) if int(t) not in self._held]
        if todo:
            out = self.evaluate(self._params_of(todo, cand), self._confirm_reps())
            for i, tr in enumerate(todo):
                self._held[tr] = (out, i)
        return {int(t): self._held[int(t)] for t in trials}

    def confirm(self, cand: pd.DataFrame, pareto: pd.DataFrame) -> pd.DataFrame:
        """Re-evaluate the top candidates and every Pareto point on held-out replications."""
        ok = cand[(cand["state"] == "COMPLETE") & cand["feasible"]] if len(cand) else cand
        if not len(ok):
            self.confirmed_groups = pd.DataFrame()
            return pd.DataFrame()
        o = self.objectives[0]
        top = ok.sort_values(f"objective:{o.metric}", ascending=o.direction == "minimize").head(self.confirm_top)
        chosen = list(dict.fromkeys(list(top["trial"]) + list(pareto["trial"])))
        held = self._held_out(chosen, ok)
        rows = self._confirmed_rows(held, ok, set(pareto["trial"]), set(top["trial"]))
        self.confirmed_groups = self._confirmed_group_rows(held)
        return rows

    def _confirmed_rows(self, held: dict, cand: pd.DataFrame, pareto_ids=(), top_ids=()) -> pd.DataFrame:
        sel = cand.set_index("trial")
        rows = []
        for tr, (out, i) in held.items():
            for j, m in enumerate(out.metrics):
                e = paired_effect(out.treated[i, :, j], out.baseline[:, j])
                s = sel.loc[tr].get(f"effect:{m}", math.nan) if tr in sel.index else math.nan
                rows.append({"trial": int(tr), "metric": m, "search_effect": float(s),
                             "confirmed_effect": e["effect"], "ci_low": e["ci_low"], "ci_high": e["ci_high"],
                             "n": e["n"], "gap": float(s) - e["effect"],
                             "baseline_mean": float(np.nanmean(out.baseline[:, j])),
                             "treated_mean": float(np.nanmean(out.treated[i, :, j])),
                             "pareto": tr in pareto_ids, "top": tr in top_ids,
                             "invalid": (out.invalid[i] if out.invalid else None)})
        return pd.DataFrame(rows)

    @staticmethod
    def _confirmed_group_rows(held: dict) -> pd.DataFrame:
        """Per trial × group × group metric: the held-out paired effect and its 95% interval."""
        rows = []
        for tr, (out, i) in held.items():
            if out.group_treated is None:
                continue
            for g, (kind, name) in enumerate(out.groups):
                for j, m in enumerate(out.group_metrics):
                    e = paired_effect(out.group_treated[i, :, g, j], out.group_baseline[:, g, j])
                    if e["n"] == 0:  # a metric this kind of group does not report
                        continue
                    b = out.group_baseline[:, g, j]
                    b = b[np.isfinite(b)]
                    rows.append({"trial": int(tr), "group_kind": kind, "group": name, "metric": m,
                                 "confirmed_effect": e["effect"], "ci_low": e["ci_low"], "ci_high": e["ci_high"],
                                 "n": e["n"], "baseline_mean": float(b.mean()) if len(b) else math.nan})
        return pd.DataFrame(rows, columns=["trial", "group_kind", "group", "metric", "confirmed_effect",
                                           "ci_low", "ci_high", "n", "baseline_mean"])

    @staticmethod
    def _held_out_limits(confirmed: pd.DataFrame, groups: pd.DataFrame, tr: int) -> tuple:
        """Trial ``tr``'s held-out effects as the constraints read them: ``(effects, group intervals, baselines,
        group baselines)``."""
        sub = confirmed[confirmed["trial"] == tr]
        eff = dict(zip(sub["metric"], sub["confirmed_effect"]))
        base = dict(zip(sub["metric"], sub["baseline_mean"])) if "baseline_mean" in sub else {}
        geff, gbase = None, None
        if groups is not None and len(groups):
            geff, gbase = {}, {}
            for r in groups[groups["trial"] == tr].itertuples():
                geff.setdefault((r.group_kind, r.group), {})[r.metric] = (r.ci_low, r.ci_high)
                gbase.setdefault((r.group_kind, r.group), {})[r.metric] = getattr(r, "baseline_mean", math.nan)
        return eff, geff, base, gbase

    def _feasible_confirmed(self, confirmed: pd.DataFrame, groups: pd.DataFrame) -> list[int]:
        """Trials feasible on held-out data: network limits on the mean effect, group (equity) limits on the
        unfavourable end of every group's interval."""
        feas = []
        for tr in dict.fromkeys(confirmed["trial"]):
            lim = self._held_out_limits(confirmed, groups, int(tr))
            if all(c.violation(*lim) <= 0 for c in self.constraints):
                feas.append(int(tr))
        return feas

    def pick(self, confirmed: pd.DataFrame, groups: pd.DataFrame | None = None) -> int | None:
        """The confirmed candidate best on the first objective among those feasible on confirmed effects."""
        if not len(confirmed):
            return None
        groups = self.confirmed_groups if groups is None else groups
        feas = self._feasible_confirmed(confirmed, groups if groups is not None else pd.DataFrame())
        if not feas:
            return None
        wide = confirmed.pivot_table(index="trial", columns="metric", values="confirmed_effect")
        o = self.objectives[0]
        s = wide.loc[feas, o.metric]
        return int(s.idxmin() if o.direction == "minimize" else s.idxmax())

    def _confirm_incumbent(self, study) -> str | None:
        """Confirm the current search leader on held-out replications (cached) and return the best
        confirmed-so-far value for the progress display. An evaluator with ``evaluate_many`` (the twin's) runs
        a new leader's held-out replications with the next batch, or after the last batch with the final
        confirmation, instead of in a batch of their own; the display then shows it one batch later."""
        cand = self.candidates(study)
        ok = cand[(cand["state"] == "COMPLETE") & cand["feasible"]] if len(cand) else cand
        if not len(ok):
            return None
        o = self.objectives[0]
        lead = int(ok.sort_values(f"objective:{o.metric}", ascending=o.direction == "minimize")["trial"].iloc[0])
        if lead not in self._held:
            if hasattr(self.evaluate, "evaluate_many"):  # with the next batch, or with the final confirmation
                self._pending = (lead, self._params_of([lead], ok)[0])
            else:
                self._held_out([lead], ok)
        held = {t: v for t, v in self._held.items() if t in set(ok["trial"])}
        if not held:
            return None  # the first leader's held-out runs go with the next batch
        conf = self._confirmed_rows(held, ok)
        best = self.pick(conf, self._confirmed_group_rows(held))
        if best is None:
            return "none feasible"
        r = conf[(conf["trial"] == best) & (conf["metric"] == o.metric)].iloc[0]
        return f"{r.confirmed_effect:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"

    def finish(self, study) -> SearchResult:
        from twins.core import io

        cand = self.candidates(study)
        pareto = self.pareto(cand)
        confirmed = self.confirm(cand, pareto)
        best_trial = self.pick(confirmed)
        best = None
        if best_trial is not None:
            t = study.trials[best_trial]
            sub = confirmed[confirmed["trial"] == best_trial]
            best = {"trial": best_trial, "params": values_of(self.space, [self._encode(p, t.params[p.name])
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
            best["compute"] = _compute_per_policy(self.evaluate, confirmed)
            best["is_baseline"] = bool(t.user_attrs.get("baseline", False))
            best.update(self.recommendation(confirmed, best_trial, best["params"], best["is_baseline"]))
        self.summary = {**invalid_summary(cand), "recommendation": (best or {}).get("recommendation", "baseline"),
                        "reason": (best or {}).get("reason") or self._infeasible_reason(cand, confirmed)}
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

    def _infeasible_reason(self, cand: pd.DataFrame, confirmed: pd.DataFrame) -> str:
        """Why no candidate is recommended when none is feasible: none evaluated, none feasible while searching,
        or the limits the best confirmed candidate breaks on the held-out replications."""
        ok = cand[cand["state"] == "COMPLETE"] if len(cand) else cand
        if not len(ok):
            return "no candidate could be evaluated (every one was invalid or failed)"
        if not len(confirmed):
            return (f"no candidate was feasible while searching ({len(ok)} evaluated): every one broke "
                    + ", ".join(c.label for c in self.constraints))
        o = self.objectives[0]
        wide = confirmed.pivot_table(index="trial", columns="metric", values="confirmed_effect")
        tr = int(wide[o.metric].idxmin() if o.direction == "minimize" else wide[o.metric].idxmax())
        eff, geff, base, gbase = self._held_out_limits(confirmed, self.confirmed_groups, tr)
        broken = []
        for c in self.constraints:
            v = c.violation(eff, geff or None, base, gbase or None)
            if v > 0:
                broken.append(f"{c.label} (by up to {v:.3g}" + (" on the unfavourable end of a group's 95% interval"
                                                                 if c.group_kind else "") + ")")
        return (f"no candidate was feasible on the held-out replications: the best (trial {tr}, {o.metric} "
                f"{wide.loc[tr, o.metric]:+.4g}) breaks " + ("; ".join(broken) or "a constraint"))

    def _best_other(self, confirmed: pd.DataFrame) -> str:
        """The best confirmed candidate on the first objective, with the limits it breaks on held-out data."""
        o = self.objectives[0]
        row = confirmed[confirmed["metric"] == o.metric]
        r = row.loc[row["confirmed_effect"].idxmin() if o.direction == "minimize" else row["confirmed_effect"].idxmax()]
        tr = int(r["trial"])
        lim = self._held_out_limits(confirmed, self.confirmed_groups, tr)
        broken = [f"{c.label} (by up to {v:.3g})" for c in self.constraints
                  if (v := c.violation(lim[0], lim[1] or None, lim[2], lim[3] or None)) > 0]
        txt = f"the best other candidate (trial {tr}) changes {o.metric} {r['confirmed_effect']:+.4g} " \
              f"[{r['ci_low']:+.4g}, {r['ci_high']:+.4g}]"
        return txt + (" but breaks " + "; ".join(broken) + " on held-out replications" if broken else "")

    def recommendation(self, confirmed: pd.DataFrame, trial: int, params: dict, is_baseline: bool = False) -> dict:
        """Whether the best confirmed candidate should replace the baseline. It is recommended only when its
        held-out 95% interval on the first objective lies entirely on the better side of 0 (``ci_high < 0``
        when minimizing, ``ci_low > 0`` when maximizing): the baseline stays when the candidate's point
        estimate is worse than (or equal to) the baseline, or when the interval includes 0 (not significantly
        better), or is not finite. ``params``/``confirmed`` keep describing the best candidate (for reference);
        ``recommended_params`` is what to apply ({} = the scenario's own plan)."""
        o = self.objectives[0]
        row = confirmed[(confirmed["trial"] == trial) & (confirmed["metric"] == o.metric)]
        eff, lo, hi = (float(row[c].iloc[0]) if len(row) else math.nan for c in ("confirmed_effect", "ci_low",
                                                                                  "ci_high"))
        sign = -1.0 if o.direction == "minimize" else 1.0  # gain = sign · effect
        ref = {"trial": int(trial), "metric": o.metric, "direction": o.direction, "effect": _json_num(eff),
               "ci_low": _json_num(lo), "ci_high": _json_num(hi), "n": int(row["n"].iloc[0]) if len(row) else 0}
        txt = f"{o.metric} {eff:+.4g} [{lo:+.4g}, {hi:+.4g}]"
        worst_gain = sign * (hi if sign < 0 else lo)  # the gain at the interval's unfavourable end
        if is_baseline:  # the scenario's own plan (the first trial) is the best feasible candidate confirmed
            others = confirmed[confirmed["trial"] != trial]
            why = (f"no candidate beats the scenario's own plan on held-out replications: the best feasible "
                   f"candidate is the baseline itself (trial {trial}, {txt})")
            if len(others):
                why += "; " + self._best_other(others)
            return {"recommendation": "baseline", "recommended_params": {}, "best_candidate": ref, "reason": why}
        if not (math.isfinite(eff) and math.isfinite(lo) and math.isfinite(hi)):
            why = f"the best candidate's held-out effect is not finite ({txt}, n={ref['n']})"
        elif not sign * eff > 0:
            why = (f"no candidate beats the baseline on held-out replications: the best (trial {trial}) changes "
                   f"{txt}, {'worse than' if sign * eff < 0 else 'the same as'} the baseline ({o.direction})")
        elif not worst_gain > 0:
            why = (f"no candidate beats the baseline significantly on held-out replications: the best (trial "
                   f"{trial}) changes {txt}; its 95% interval includes 0")
        else:
            return {"recommendation": "candidate", "recommended_params": dict(params), "best_candidate": ref,
                    "reason": f"trial {trial} beats the baseline on held-out replications: {txt} (95% interval "
                              f"{'below' if sign < 0 else 'above'} 0)"}
        return {"recommendation": "baseline", "recommended_params": {}, "best_candidate": ref, "reason": why}

    # --- outputs --------------------------------------------------------------------------------
    def write(self, res: SearchResult) -> None:
        from twins.core import io

        out = self.outdir
        res.candidates.to_parquet(out / "candidates.parquet", index=False)
        res.pareto.to_parquet(out / "pareto.parquet", index=False)
        res.confirmed.to_parquet(out / "confirmed.parquet", index=False)
        self.confirmed_groups.to_parquet(out / "confirmed_groups.parquet", index=False)
        io.write_json(out / "best_policy.json", res.best)
        if self.figures:
            self.write_figures(res)

    def write_figures(self, res: SearchResult) -> tuple[list[str], list[str]]:
        """``figures/``; ``(written, errors)``: a figure that fails is a warning, never a lost search."""
        from twins import plots

        fig_dir = self.outdir / "figures"
        o = self.objectives[0]
        todo = [("convergence.png", lambda: plots.search_convergence(res.candidates, f"objective:{o.metric}",
                                                                     o.direction, title=self.label))]
        if len(self.objectives) >= 2:
            a, b = self.objectives[:2]
            todo.append(("pareto.png", lambda: plots.pareto_front(res.candidates, res.pareto, f"objective:{a.metric}",
                                                                  f"objective:{b.metric}")))
        if len(res.confirmed):
            todo.append(("confirmed.png", lambda: plots.confirmed_effects(res.confirmed,
                                                                          [o.metric for o in self.objectives])))
        written, failed = [], []
        for name, draw in todo:
            try:
                fig_dir.mkdir(exist_ok=True)
                plots.save(draw(), fig_dir / name)
                written.append(name)
            except Exception as e:  # noqa: BLE001  (plotting or file errors: the tables are written already)
                failed.append(f"{name}: {type(e).__name__}: {e}")
                log.warning("figure %s not written (%s: %s); the search's tables are complete", name,
                            type(e).__name__, e)
        return written, failed


def _group_means(out: Outcomes, k: int) -> tuple[dict | None, dict | None]:
    """Candidate ``k``'s mean paired effect per group and group metric, {(kind, group): {metric: effect}}, and
    the baseline's mean in the same shape (for relative limits); ``(None, None)`` without groups."""
    ge = out.group_effects
    if ge is None:
        return None, None
    import warnings

    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: a group with no arrivals
        mean = np.nanmean(ge[k], axis=0)  # [G, Mg]
        base = np.nanmean(out.group_baseline, axis=0)  # [G, Mg]

    def table(a):
        return {key: {m: float(a[g, j]) for j, m in enumerate(out.group_metrics) if math.isfinite(a[g, j])}
                for g, key in enumerate(out.groups)}

    return table(mean), table(base)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _json_num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def invalid_summary(cand: pd.DataFrame) -> dict:
    """How many evaluated candidates the intervention refused as invalid plans, and for which parameter
    (the field its message names first), e.g. ``{"evaluated": 32, "invalid": 1, "invalid_share": 0.031,
    "invalid_by": {"intervention.cycle_s": 1}}``."""
    if not len(cand):
        return {"evaluated": 0, "invalid": 0, "invalid_share": 0.0, "invalid_by": {}}
    done = cand[~cand["orphaned"].astype(bool)] if "orphaned" in cand else cand
    why = done["invalid"] if "invalid" in done else pd.Series([], dtype=object)
    # a rejected plan (the intervention's message); "non-finite objective" is a run that produced no number
    bad = why[why.notna() & (why != "non-finite objective")].astype(str)
    by: dict[str, int] = {}
    for w in bad:
        key = w.split("=", 1)[0].strip() if "=" in w.split(" ", 1)[0] else w.split(":", 1)[0][:60]
        by[key] = by.get(key, 0) + 1
    n = int(len(done))
    return {"evaluated": n, "invalid": int(len(bad)), "invalid_share": round(len(bad) / n, 4) if n else 0.0,
            "invalid_by": dict(sorted(by.items(), key=lambda kv: -kv[1]))}


def _compute_per_policy(evaluate, confirmed: pd.DataFrame) -> dict | None:
    """The search's compute account (every evaluation, confirmation included) and its energy per
    confirmed policy; None when ``evaluate`` keeps no account (``compute_account()``, e.g. TwinEvaluator)."""
    account = getattr(evaluate, "compute_account", None)
    if not callable(account):
        return None
    acc = account()
    n = int(confirmed["trial"].nunique()) if len(confirmed) else 0
    return {**acc, "confirmed_policies": n,
            "energy_per_confirmed_policy_j": round(acc["energy_total_j"] / n, 3) if n else None}


# --- from config -------------------------------------------------------------------------------
def objectives_from(cfg_search) -> list[Objective]:
    objs = cfg_search.get("objectives") or []
    return [Objective(str(o["metric"]), str(o.get("direction", "minimize"))) for o in objs]


def constraints_from(cfg_search) -> list[Constraint]:
    out = []
    limits = ("max", "min", "max_rel", "min_rel")
    for c in cfg_search.get("constraints") or []:
        if all(c.get(k, None) is None for k in limits):
            raise ConfigError("search.constraints", dict(c), "{metric: ..., max: ...} and/or min, max_rel, min_rel")
        unknown = set(c.keys()) - {"metric", *limits, "group_kind", "group"}
        if unknown:
            raise ConfigError("search.constraints", sorted(unknown)[0],
                              "keys metric, max, min, max_rel, min_rel, group_kind, group")

        def num(k):
            return None if c.get(k, None) is None else float(c[k])

        out.append(Constraint(str(c["metric"]), num("max"), num("min"),
                              None if c.get("group_kind") is None else str(c["group_kind"]),
                              None if c.get("group") is None else str(c["group"]), num("max_rel"), num("min_rel")))
    return out


# --- checks before a search starts ----------------------------------------------------------------
def outcome_targets(twin) -> tuple[list[str], dict[str, list[str]]]:
    """``(metrics, {group_kind: group metrics})`` a search on ``twin`` can optimize or limit. A twin may
    declare them (``twin.outcome_groups``: {kind: [metrics]}); else they follow from the twin's outcomes
    (``TrafficTwin.results``, ``MolecularTwin.results``, ``counterfactual.approach_groups``; a test pins
    that these are the groups a run reports: tests/test_bad_input_config.py)."""
    metrics = list(getattr(twin, "metrics", ()) or ())
    declared = getattr(twin, "outcome_groups", None)
    if declared is not None:
        return metrics, {k: list(v) for k, v in declared.items()}
    groups: dict[str, list[str]] = {}
    net = getattr(getattr(twin, "scenario", None), "network", None)
    if net is not None:  # traffic
        groups["origin"] = ["mean_travel_time_s", "mean_delay_s", "throughput_veh"]
        if any(getattr(j, "tl", None) for j in net.junctions.values()):
            groups["approach"] = ["delay_veh_h"]
        if getattr(twin, "bus_lines", None):
            from twins.traffic.outcomes import BUS_METRICS

            metrics += [m for m in BUS_METRICS if m not in metrics]
            groups["mode"] = ["mean_travel_time_s", "mean_delay_s", "mean_wait_s"]
            groups["bus_line"] = ["mean_wait_s", "bus_travel_time_s"]
    elif getattr(twin, "group_names", None) is not None:  # molecular: receptor expression levels
        groups["expression"] = ["n_receptors", "target_occupancy_mean", "time_in_window"]
    return metrics, groups


def check_targets(objectives: Sequence[Objective], constraints: Sequence[Constraint], twin, scenario: str) -> None:
    """Every objective and constraint names a metric (and group kind) the twin reports: otherwise the
    whole search would run and end with no feasible policy."""
    from twins.core.errors import suggest

    metrics, groups = outcome_targets(twin)
    if not metrics:
        return  # a twin that declares nothing: judged on its outcomes
    for i, o in enumerate(objectives):
        if o.metric not in metrics:
            raise ConfigError(f"search.objectives[{i}].metric", o.metric, f"a metric of scenario={scenario}",
                              suggest(o.metric, metrics))
    for i, c in enumerate(constraints):
        if c.group_kind is None:
            if c.metric not in metrics:
                kinds = [k for k, ms in groups.items() if c.metric in ms]
                hint = (f"{c.metric} is reported per group: add group_kind ({', '.join(kinds)})." if kinds
                        else suggest(c.metric, metrics))
                raise ConfigError(f"search.constraints[{i}].metric", c.metric, f"a metric of scenario={scenario}",
                                  hint)
            continue
        if c.group_kind not in groups:
            kinds = ", ".join(groups) or "none (it reports no groups)"
            raise ConfigError(f"search.constraints[{i}].group_kind", c.group_kind,
                              f"a group kind of scenario={scenario}: {kinds}",
                              "Or drop group_kind for a limit on the network effect.")
        if c.metric not in groups[c.group_kind]:
            raise ConfigError(f"search.constraints[{i}].metric", c.metric,
                              f"a metric of the {c.group_kind!r} groups: {', '.join(groups[c.group_kind])}")


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
    check_targets(objectives_from(s), constraints_from(s), ev._probe, str(cfg.scenario.get("name", "")))
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
        man = io.manifest(cfg, ev._probe.device, ev._probe.dtype, started, complete, task="search", accounting=acc,
                          **extra)
        io.write_json(outdir / "manifest.json", {**man, **manifest_devices(cfg, ev._probe.device)})

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


__all__ = ["Search", "SearchResult", "Objective", "Constraint", "pareto_mask", "make_sampler",
           "search_from_config", "SAMPLERS", "check_targets", "check_resume", "outcome_targets"]
