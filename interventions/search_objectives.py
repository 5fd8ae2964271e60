"""What a search optimizes and limits: objectives, constraints, and whether the twin reports them.

:class:`Objective` (a metric and its direction) and :class:`Constraint` (limits on a mean effect, of the
network or of every group of a kind, absolute or relative to the baseline) with its violation;
``objectives_from`` / ``constraints_from`` read them from ``cfg.search``; ``group_means`` turns a batch's
group outcomes into the shape the constraints read; ``outcome_targets`` / ``check_targets`` check, before a
search starts, that the twin reports every metric and group kind they name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from twins.core.errors import ConfigError

from ._evaluate import Outcomes

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


def group_means(out: Outcomes, k: int) -> tuple[dict | None, dict | None]:
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
    """``(metrics, {group_kind: group metrics})`` a search on ``twin`` can optimize or limit: the twin's
    :meth:`~twins.core.twin.Twin.outcome_targets` (a test pins that these are the groups a run reports:
    tests/test_bad_input_config.py)."""
    return twin.outcome_targets()


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


__all__ = ["DIRECTIONS", "Objective", "Constraint", "group_means", "objectives_from", "constraints_from",
           "outcome_targets", "check_targets"]
