"""Confirmation on held-out replications, and the winner and recommendation read from it.

The top candidates and every Pareto point are re-evaluated on held-out replications (ids from
``confirm_offset``, never used in the search), paired against the baseline: each gets its search estimate,
the confirmed estimate with a 95% interval, and the gap (winner's curse). Each trial's held-out runs are
evaluated once and cached, so the leader confirmed during the search (with the next batch where the evaluator
has ``evaluate_many``) is not run again at the end. :meth:`Confirmation.pick` takes the best candidate
feasible on held-out data (group limits on the unfavourable end of each group's interval, as the equity gate
does); :meth:`Confirmation.recommendation` says whether it should replace the baseline, and why not.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from twins.core.stats import paired_effect

from ._evaluate import Outcomes
from .base import Parameter
from .search_objectives import Constraint, Objective
from .search_space import encode


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


class Confirmation:
    """Held-out re-evaluation of a search's chosen candidates, and the pick among them.

    ``groups``: per trial × group × group metric, the held-out effects of the last :meth:`confirm`."""

    def __init__(self, evaluate: Callable[[np.ndarray, Sequence[int]], Outcomes], space: Sequence[Parameter],
                 objectives: Sequence[Objective], constraints: Sequence[Constraint], top: int, offset: int,
                 replications: int):
        self.evaluate, self.space = evaluate, list(space)
        self.objectives, self.constraints = list(objectives), list(constraints)
        self.top, self.offset, self.R = int(top), int(offset), int(replications)
        self._held: dict = {}  # trial -> (held-out Outcomes, row): confirmations are evaluated once
        # a leader whose held-out confirmation rides along with the next batch: (trial, params row)
        self._pending: tuple[int, np.ndarray] | None = None
        self.groups = pd.DataFrame()

    def replications(self) -> list[int]:
        return list(range(self.offset, self.offset + self.R))

    def evaluate_batch(self, X: np.ndarray, reps: list[int]):
        """One batch of candidates on the search replications. A leader waiting for its held-out confirmation
        runs in the same world batch (evaluators with ``evaluate_many``, e.g. the twin's): a world's numbers do
        not depend on its batch, so its held-out outcomes equal a separate evaluation's, one batch fewer."""
        pend, self._pending = self._pending, None
        many = getattr(self.evaluate, "evaluate_many", None)
        if pend is None or many is None or pend[0] in self._held:
            return self.evaluate(X, reps)
        out, held = many([(X, reps), (pend[1][None], self.replications())])
        self._held[pend[0]] = (held, 0)
        return out

    def _params_of(self, trials: Sequence[int], cand: pd.DataFrame) -> np.ndarray:
        """The encoded parameter rows of ``trials`` (from the candidates table)."""
        sel = cand.set_index("trial").loc[list(trials)]
        X = sel[[f"param:{p.name}" for p in self.space]].to_numpy(object)
        return np.array([[encode(p, v) for p, v in zip(self.space, row)] for row in X], float)

    def _held_out(self, trials: Sequence[int], cand: pd.DataFrame) -> dict:
        """Held-out outcomes per trial (evaluated once, in one batch, then cached: the same parameters on the
        same held-out replications give the same numbers, so the final confirmation reuses the ones shown
        during the search)."""
        todo = [int(t) for t in dict.fromkeys(trials) if int(t) not in self._held]
        if todo:
            out = self.evaluate(self._params_of(todo, cand), self.replications())
            for i, tr in enumerate(todo):
                self._held[tr] = (out, i)
        return {int(t): self._held[int(t)] for t in trials}

    def confirm(self, cand: pd.DataFrame, pareto: pd.DataFrame) -> pd.DataFrame:
        """Re-evaluate the top candidates and every Pareto point on held-out replications."""
        ok = cand[(cand["state"] == "COMPLETE") & cand["feasible"]] if len(cand) else cand
        if not len(ok):
            self.groups = pd.DataFrame()
            return pd.DataFrame()
        o = self.objectives[0]
        top = ok.sort_values(f"objective:{o.metric}", ascending=o.direction == "minimize").head(self.top)
        chosen = list(dict.fromkeys(list(top["trial"]) + list(pareto["trial"])))
        held = self._held_out(chosen, ok)
        rows = self._rows(held, ok, set(pareto["trial"]), set(top["trial"]))
        self.groups = self._group_rows(held)
        return rows

    def _rows(self, held: dict, cand: pd.DataFrame, pareto_ids=(), top_ids=()) -> pd.DataFrame:
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
    def _group_rows(held: dict) -> pd.DataFrame:
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

    def _feasible(self, confirmed: pd.DataFrame, groups: pd.DataFrame) -> list[int]:
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
        groups = self.groups if groups is None else groups
        feas = self._feasible(confirmed, groups if groups is not None else pd.DataFrame())
        if not feas:
            return None
        wide = confirmed.pivot_table(index="trial", columns="metric", values="confirmed_effect")
        o = self.objectives[0]
        s = wide.loc[feas, o.metric]
        return int(s.idxmin() if o.direction == "minimize" else s.idxmax())

    def incumbent(self, cand: pd.DataFrame) -> str | None:
        """Confirm the current search leader on held-out replications (cached) and return the best
        confirmed-so-far value for the progress display. An evaluator with ``evaluate_many`` (the twin's) runs
        a new leader's held-out replications with the next batch, or after the last batch with the final
        confirmation, instead of in a batch of their own; the display then shows it one batch later."""
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
        conf = self._rows(held, ok)
        best = self.pick(conf, self._group_rows(held))
        if best is None:
            return "none feasible"
        r = conf[(conf["trial"] == best) & (conf["metric"] == o.metric)].iloc[0]
        return f"{r.confirmed_effect:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"

    def infeasible_reason(self, cand: pd.DataFrame, confirmed: pd.DataFrame) -> str:
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
        eff, geff, base, gbase = self._held_out_limits(confirmed, self.groups, tr)
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
        lim = self._held_out_limits(confirmed, self.groups, tr)
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


__all__ = ["Confirmation", "invalid_summary"]
