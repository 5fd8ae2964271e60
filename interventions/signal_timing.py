"""``signal_timing``: retime fixed-time signal programs — cycle length, green splits, offsets.

The baseline is the scenario's own programs. A parameter vector changes, at
the chosen junctions (``junctions``; default: every signalized junction):

- ``cycle_s`` — the cycle length. Yellow and all-red phases keep their
  durations (the lost time); the green phases share what remains (the
  *effective green* G = cycle − lost), in the baseline's proportions unless a
  split is set;
- ``cycle_scale`` — instead of ``cycle_s``: each program's *own* cycle times
  this (1: the file's cycles, bit for bit), so junctions with different cycles
  keep their ratio; bounded by ``min_cycle_scale`` (0.5) .. ``max_cycle_scale``
  (2), by ``min_cycle_s`` / ``max_cycle_s`` and by every chosen program's green
  bounds (below), so a searched scale is feasible at every junction;
- ``green_split`` — two-phase programs: the share of G given to the first green
  phase (north–south in the generated scenarios);
- ``green_split_shift`` — instead of ``green_split``: each two-phase program's
  own split s becomes σ(logit(s) + shift) (0: the file's splits; bounds ±3);
- ``share{K}_{i}`` (i = 1..K−1) — programs with K ≥ 3 green phases: the green
  shares s_1..s_K of G (g_k = s_k·G, Σ g_k = G) as K−1 coordinates in the box
  [0, 1]^(K−1). The map is a stick-breaking that sends the uniform box onto
  the uniform simplex, so any sampler's box covers every split exactly once::

      b_i = 1 − (1 − v_i)^(1/(K−i)),  s_i = b_i · (1 − s_1 − … − s_{i−1}),  s_K = the rest

  (for K = 2 it is ``green_split``: s_1 = v_1). Shared coordinates apply to
  every chosen program with K greens; ``J.share_{i}`` to junction J alone. In a
  config, ``green_shares: [0.4, 0.1, 0.4, 0.1]`` (per phase, normalised) is
  turned into these coordinates;
- ``offset_s`` / ``offset_step_s`` — the offset of the first chosen junction and
  the increment per further junction in the order of ``junctions`` (a green
  wave along a corridor when the step is the travel time between them).

**Green bounds.** Each green phase k stays within [lo_k, hi_k]:

- lo_k: a user-set ``min_green_s`` (> 0) for every green phase; by default (0:
  not set) the phase's own ``minDur`` from the network file, and where it has none
  ``default_min_green_s`` (7 s) — never above the phase's baseline green, so the
  scenario's own program is always inside its bounds; raised to
  ``pedestrian_green_s`` (the ethics review's crossing time) on phases that
  serve a pedestrian crossing: SUMO crossing links shown green
  (``SignalProgram.crossing_links``), phases named in ``pedestrian_phases``,
  or every green phase of a program whose network does not say (generated
  scenarios: each green carries the crossing parallel to it);
- hi_k: a user-set ``max_green_s``; by default the phase's ``maxDur`` (none:
  no limit), never below its baseline green nor below lo_k.

A cycle outside [lost + Σ lo, lost + Σ hi] is refused naming the cycle (or
``min_green_s`` when the scenario's own cycle is too short for it); the
``cycle_s`` parameter's bounds are that interval over the chosen junctions, so
a searched cycle is always feasible. Greens from shares (or from the
baseline's proportions at a new cycle) that leave their bounds are **repaired**
(``repair: true``): projected onto the feasible set {lo ≤ g ≤ hi, Σ g = G} in
the Euclidean sense, g_k = clip(t_k + λ, lo_k, hi_k) with the one λ that
makes them sum to G (every phase gains or loses the same seconds, bounds
permitting); with ``repair: false`` they are refused naming the share. A
two-phase ``green_split`` outside the range its cycle allows is repaired the
same way on programs whose phases carry minDur/maxDur (real programs from a
network file), and refused with that range on the others (generated
scenarios, as before); ``repair_green_split: true/false`` decides for all.

**Absolute or relative.** The shared space (what a search explores by default)
holds ``cycle_s`` and ``green_split`` or, when ``relative_timing`` is true, their
relative forms ``cycle_scale`` and ``green_split_shift``. ``relative_timing:
null`` (the default) chooses relative exactly where the chosen programs' cycles
or two-phase splits differ (RESCO's cologne8: 72 s and 90 s cycles, splits 0.5
and 0.93), where no absolute value is the scenario's own plan and every
candidate would force one cycle on all junctions; elsewhere (the generated
scenarios, single-junction networks) the absolute form, as before. A run may set
either form (not both: refused naming both fields); the relative forms at 1 and
0 are the baseline, so a relative search's first trial is the scenario's plan.

Each parameter may be set shared (``cycle_s=90``) or per junction
(``J0_2.cycle_s=90`` in a parameter vector, ``per_junction: {J0_2: {cycle_s: 90}}``
in config). A parameter equal to the baseline leaves the program bit-identical.

Writes ``signal_durations`` [W, P, K] and ``signal_offsets`` [W, P] (seconds)
into ``twin.worlds.params``, which the traffic twin reads per world.

Length: one intervention with its parameter space (cycle, per-phase green shares on a simplex, offsets,
per-junction variants), its repair/validation messages and Webster's delay formula its tests compare
against; one reason to change: retiming.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from .base import Intervention, Parameter, register

SHARED = ("cycle_s", "cycle_scale", "green_split", "green_split_shift", "offset_s", "offset_step_s")
PER_JUNCTION = ("cycle_s", "cycle_scale", "green_split", "offset_s")
RELATIVE = {"cycle_s": "cycle_scale", "green_split": "green_split_shift"}  # absolute -> relative shared form
SHIFT_MAX = 3.0  # |green_split_shift| in logit units: a 0.5 split reaches 0.05 / 0.95
_SIG_GREEN, _SIG_YELLOW, _SIG_GREEN_MINOR = 0, 1, 3  # twins.traffic.tables codes
_JSHARE = re.compile(r"^share_(\d+)$")  # per-junction: J.share_{i}
_TOL = 1e-9


@dataclass
class SignalTimingConfig:
    name: str = "signal_timing"
    junctions: Optional[List[str]] = None  # signal program ids to retime; null: all signalized junctions
    cycle_s: Optional[float] = None  # null: keep each junction's cycle
    cycle_scale: Optional[float] = None  # each junction's own cycle × this (instead of cycle_s); null: keep it
    green_split: Optional[float] = None  # two-phase programs: share of effective green for the first green phase
    green_split_shift: Optional[float] = None  # two-phase programs: logit(own split) + this (instead of green_split)
    relative_timing: Optional[bool] = None  # search cycle_scale/green_split_shift; null: where the junctions differ
    green_shares: Optional[List[float]] = None  # programs with len(...) greens: share of effective green per phase
    offset_s: Optional[float] = None  # offset of the first chosen junction; null (and no step): keep offsets
    offset_step_s: Optional[float] = None  # added per further junction (green wave); null: 0 when offset_s set
    per_junction: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # {J0_1: {cycle_s: 90}}
    min_green_s: float = 0.0  # > 0: every green's minimum (overrides minDur); 0: each phase's own minimum
    default_min_green_s: float = 7.0  # for phases without minDur (capped at the phase's baseline green)
    max_green_s: Optional[float] = None  # every green <= this; null: each phase's maxDur (none: no limit)
    pedestrian_green_s: Optional[float] = None  # floor on the greens that serve a pedestrian crossing
    pedestrian_phases: Dict[str, Any] = field(default_factory=dict)  # {program or junction id: [phase idx] | all}
    repair: bool = True  # shares/proportional greens outside their bounds: projected onto them (false: refused)
    repair_green_split: Optional[bool] = None  # null: repair a two-phase split only on programs with minDur/maxDur
    max_cycle_s: float = 180.0  # upper bound of the cycle parameter
    min_cycle_s: float = 0.0  # lower bound of the cycle parameter (the greens' minimums may ask for more)
    min_cycle_scale: float = 0.5  # bounds of cycle_scale (within min/max_cycle_s and the greens' bounds)
    max_cycle_scale: float = 2.0


# --- the simplex map ----------------------------------------------------------------------------
def shares_from_coords(v: Sequence[float]) -> list[float]:
    """K−1 coordinates in [0, 1] -> K shares >= 0 summing to 1 (uniform box -> uniform simplex)."""
    K = len(v) + 1
    rem, out = 1.0, []
    for i, x in enumerate(v, start=1):
        x = min(max(float(x), 0.0), 1.0)
        b = 1.0 - (1.0 - x) ** (1.0 / (K - i))
        s = rem * b
        out.append(s)
        rem = max(rem - s, 0.0)
    return out + [rem]


def coords_from_shares(s: Sequence[float]) -> list[float]:
    """The inverse of :func:`shares_from_coords` (``s`` is normalised first)."""
    tot = float(sum(s))
    if not tot > 0 or any(x < 0 for x in s):
        raise ValueError(f"green shares {list(s)}: expected numbers >= 0 with a positive sum")
    s = [float(x) / tot for x in s]
    K, rem, out = len(s), 1.0, []
    for i in range(1, K):
        b = min(max(s[i - 1] / rem, 0.0), 1.0) if rem > 1e-15 else 0.0
        out.append(1.0 - (1.0 - b) ** (K - i))
        rem -= s[i - 1]
    return out


def project(target: Sequence[float], lo: Sequence[float], hi: Sequence[float], total: float) -> list[float]:
    """The Euclidean projection of ``target`` onto {lo <= g <= hi, Σ g = total}: g = clip(target + λ, lo, hi)
    with the one λ that sums to ``total`` (exact: piecewise linear in λ). Needs Σ lo <= total <= Σ hi."""
    t, lo, hi = [float(x) for x in target], [float(x) for x in lo], [float(x) for x in hi]

    def g(lam):
        return [min(max(a + lam, l), h) for a, l, h in zip(t, lo, hi)]

    pts = sorted({l - a for a, l in zip(t, lo)} | {h - a for a, h in zip(t, hi) if math.isfinite(h)})
    vals = [sum(g(p)) for p in pts]
    if total <= vals[0]:
        lam = pts[0]
    elif total >= vals[-1]:  # only reachable with an unbounded phase: it takes the rest
        lam = pts[-1] + (total - vals[-1]) / max(1, sum(1 for h in hi if not math.isfinite(h)))
    else:
        j = next(i for i in range(1, len(pts)) if vals[i] >= total)
        a, b = pts[j - 1], pts[j]
        lam = a if vals[j] == vals[j - 1] else a + (total - vals[j - 1]) * (b - a) / (vals[j] - vals[j - 1])
    out = g(lam)
    free = [k for k in range(len(out)) if lo[k] + _TOL < out[k] < hi[k] - _TOL]
    if free:  # rounding: the free phases absorb the last ulps
        out[free[0]] += total - sum(out)
    return out


@dataclass(frozen=True)
class _Program:
    """A baseline program as the intervention sees it."""

    index: int
    id: str
    durations: torch.Tensor  # [K] float64 (zero padded)
    green: list[int]  # phase indices of green phases
    fixed: list[int]  # yellow / all-red phases (kept)
    offset: float
    min_dur: tuple = ()  # per green phase: the network file's minDur (None: not given)
    max_dur: tuple = ()  # per green phase: maxDur (None: not given)
    crossing: tuple = ()  # per green phase: serves a pedestrian crossing (None: the network does not say)

    @property
    def cycle(self) -> float:
        return float(self.durations.sum())

    @property
    def lost(self) -> float:
        return float(self.durations[self.fixed].sum()) if self.fixed else 0.0

    @property
    def greens(self) -> list[float]:
        return [float(self.durations[k]) for k in self.green]

    @property
    def split(self) -> float | None:
        if len(self.green) != 2:
            return None
        g = self.durations[self.green]
        return float(g[0] / g.sum())

    @property
    def coords(self) -> list[float] | None:
        """The baseline's share coordinates (programs with >= 3 greens)."""
        if len(self.green) < 3:
            return None
        return coords_from_shares(self.greens)


def programs_of(twin) -> list[_Program]:
    """The scenario's signal programs, with green and fixed (yellow / all-red) phases told apart, and per
    green phase its minDur/maxDur and whether it serves a pedestrian crossing (from the network)."""
    comp = twin.net_cpu
    dur = comp.phase_durations.detach().cpu().to(torch.float64)
    code = comp.phase_code.detach().cpu()
    n_links = torch.bincount(comp.link_program.cpu(), minlength=len(comp.program_ids))
    net = getattr(getattr(twin, "scenario", None), "network", None)
    out = []
    for p, pid in enumerate(comp.program_ids):
        L = int(n_links[p])
        green, fixed = [], []
        for k in range(dur.shape[1]):
            if dur[p, k] <= 0:
                continue
            c = code[p, k, :L]
            if bool(((c == _SIG_GREEN) | (c == _SIG_GREEN_MINOR)).any()) and not bool((c == _SIG_YELLOW).any()):
                green.append(k)
            else:
                fixed.append(k)
        prog = net.programs.get(pid) if net is not None else None
        ph = prog.phases if prog is not None else []
        mins = tuple(getattr(ph[k], "min_dur", None) if k < len(ph) else None for k in green)
        maxs = tuple(getattr(ph[k], "max_dur", None) if k < len(ph) else None for k in green)
        cross = tuple(prog.serves_crossing(k) if prog is not None and hasattr(prog, "serves_crossing")
                      and k < len(ph) else None for k in green)
        out.append(_Program(p, pid, dur[p].clone(), green, fixed, float(comp.program_offset[p]), mins, maxs, cross))
    return out


def crossing_phases(twin, named: dict | None = None) -> dict[str, list[int]]:
    """Per signal program id, the green phases that serve a pedestrian crossing: phases showing a SUMO
    crossing link green, every green phase where the network does not say (generated scenarios), and the
    phases ``named`` ({program or junction id: [phase indices] or "all"}) names."""
    progs = programs_of(twin)
    named = _named_phases(named, twin, progs)
    out = {}
    for p in progs:
        ks = [k for k, c in zip(p.green, p.crossing) if c is None or c] if p.crossing else list(p.green)
        extra = named.get(p.id, [])
        ks = sorted(set(ks) | set(p.green if extra == "all" else [k for k in extra if k in p.green]))
        out[p.id] = ks
    return out


def crossing_greens(twin, durations: torch.Tensor | None = None, named: dict | None = None) -> dict:
    """The pedestrian-green evidence of one plan (``durations`` [P, K] s; None: the scenario's own): the
    shortest green among the phases that serve a pedestrian crossing (:func:`crossing_phases`), where it is,
    and which phases were judged, e.g. ``{"min_green_s": 31.0, "program": "B1", "phase": 0, "plan":
    "fixed-time", "crossing_phases": {"B1": [0, 3]}, "basis": {"B1": "crossing links [16, 17, 18, 19]"},
    "phases": [{"program", "phase", "green_s", "crossing", "named"} per green phase]}``; ``min_green_s`` None
    (with a ``note``) when no phase serves a crossing. The ethics gate ``safety.pedestrian_green`` reads it."""
    progs = programs_of(twin)
    d = (twin.net_cpu.phase_durations if durations is None else durations).detach().cpu().double()
    phases = crossing_phases(twin, named)
    net = getattr(getattr(twin, "scenario", None), "network", None)
    names = _named_phases(named, twin, progs)
    basis, best, rows = {}, None, []
    for p in progs:
        nm = names.get(p.id, [])
        for k, c in zip(p.green, p.crossing or (None,) * len(p.green)):
            rows.append({"program": p.id, "phase": int(k), "green_s": float(d[p.index, k]), "crossing": c,
                         "named": nm == "all" or k in nm})
        prog = net.programs.get(p.id) if net is not None else None
        links = getattr(prog, "crossing_links", None)
        basis[p.id] = ("every green phase (the network does not say which links are crossings)" if links is None
                       else f"crossing links {list(links)}" if links else "no crossing in the network file")
        if p.id in names:
            basis[p.id] += f"; named in pedestrian_phases: {names[p.id]}"
        for k in phases.get(p.id, []):
            g = float(d[p.index, k])
            if best is None or g < best[0]:
                best = (g, p.id, k)
    out = {"plan": "fixed-time", "crossing_phases": {k: v for k, v in phases.items() if v}, "basis": basis,
           "phases": rows}
    if best is None:
        return {"min_green_s": None, **out,
                "note": "no phase serves a pedestrian crossing: the network file has no crossings at the signals "
                        "and ethics.safety.traffic.pedestrian_phases names none"}
    return {"min_green_s": best[0], "program": best[1], "phase": best[2], **out}


def _named_phases(named, twin, progs) -> dict:
    """``{program or junction id: phases}`` resolved to program ids (a junction's id maps to its tl)."""
    if not named:
        return {}
    ids = {p.id for p in progs}
    net = getattr(getattr(twin, "scenario", None), "network", None)
    tl_of = {j.id: j.tl for j in net.junctions.values() if j.tl} if net is not None else {}
    out = {}
    for key, v in dict(named).items():
        pid = str(key) if str(key) in ids else tl_of.get(str(key))
        if pid is None:
            raise ConfigError(f"pedestrian_phases.{key}", key, "a signal program or signalized junction id",
                              suggest(str(key), sorted(ids | set(tl_of))))
        if isinstance(v, str):
            if v != "all":
                raise ConfigError(f"pedestrian_phases.{key}", v, "a list of phase indices or 'all'")
            out[pid] = "all"
        else:
            out[pid] = [int(k) for k in (v or [])]
    return out


@register("signal_timing", SignalTimingConfig)
class SignalTiming(Intervention):
    """Fixed-time signal retiming: cycle, splits (two-phase or multi-phase shares), offsets; shared or per
    junction; greens kept within each phase's bounds."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        c = self.cfg
        mg = _opt(c.get("min_green_s", None), "intervention.min_green_s")
        self.min_green_s = mg if mg else None  # 0 (the default) or null: not set
        self.default_min_green_s = float(c.get("default_min_green_s", 7.0))
        self.max_green_s = _opt(c.get("max_green_s", None), "intervention.max_green_s")
        self.pedestrian_green_s = _opt(c.get("pedestrian_green_s", None), "intervention.pedestrian_green_s")
        self.pedestrian_named = c.get("pedestrian_phases", None) or {}
        self.repair = bool(c.get("repair", True))
        rs = c.get("repair_green_split", None)
        self.repair_split = None if rs is None else bool(rs)
        self.max_cycle_s = float(c.get("max_cycle_s", 180.0))
        self.min_cycle_s = float(c.get("min_cycle_s", 0.0) or 0.0)
        self.min_cycle_scale = _num(c.get("min_cycle_scale", 0.5), "intervention.min_cycle_scale")
        self.max_cycle_scale = _num(c.get("max_cycle_scale", 2.0), "intervention.max_cycle_scale")
        if not 0 < self.min_cycle_scale <= 1:
            raise ConfigError("intervention.min_cycle_scale", self.min_cycle_scale,
                              "a number in (0, 1] (1: the junctions' own cycles)")
        if self.max_cycle_scale < 1:
            raise ConfigError("intervention.max_cycle_scale", self.max_cycle_scale,
                              "a number >= 1 (1: the junctions' own cycles)")
        rt = c.get("relative_timing", None)
        if rt is not None and not isinstance(rt, bool):
            raise ConfigError("intervention.relative_timing", rt,
                              "true, false or null (null: relative where the junctions' cycles or splits differ)")
        self.relative_timing = rt
        for a, r in RELATIVE.items():
            if c.get(a, None) is not None and c.get(r, None) is not None:
                raise ConfigError(f"intervention.{r}", c.get(r), f"null when {a} is set",
                                  f"{a}={c.get(a)} and {r}={c.get(r)} both set it; set one of them.")
        j = c.get("junctions", None)
        self.junction_ids = None if j is None else [str(x) for x in j]
        if self.default_min_green_s < 0:
            raise ConfigError("intervention.default_min_green_s", self.default_min_green_s, ">= 0 seconds")
        if self.max_green_s is not None and self.min_green_s is not None and self.max_green_s < self.min_green_s:
            raise ConfigError("intervention.max_green_s", self.max_green_s,
                              f">= min_green_s={self.min_green_s:g} s")
        self._bounds_cache: dict = {}

    # --- parameter space ------------------------------------------------------------------------
    def selected(self, twin) -> list[_Program]:
        progs = programs_of(twin)
        if not progs:
            raise ConfigError("intervention", "signal_timing", "a scenario with signalized junctions",
                              f"scenario {getattr(twin.scenario, 'name', '?')!r} has no signal programs.")
        by_id = {p.id: p for p in progs}
        if self.junction_ids is None:
            return progs
        out = []
        for j in self.junction_ids:
            if j not in by_id:
                raise ConfigError("intervention.junctions", j, "signalized junction ids of the scenario",
                                  suggest(j, by_id))
            out.append(by_id[j])
        if not out:
            raise ConfigError("intervention.junctions", [], "at least one junction id (or null for all)")
        return out

    def bounds(self, p: _Program, twin=None) -> tuple[list[float], list[float], list[str]]:
        """Per green phase of ``p``: ``(lo, hi, why)`` in seconds, ``why`` naming where each lower bound
        comes from (for messages)."""
        key = (p.id, tuple(p.durations.tolist()), p.min_dur, p.max_dur, p.crossing,
               id(twin) if self.pedestrian_named else None)
        if key in self._bounds_cache:
            return self._bounds_cache[key]
        named = _named_phases(self.pedestrian_named, twin, programs_of(twin)) \
            if twin is not None and self.pedestrian_named else {}
        extra = named.get(p.id, [])
        lo, hi, why = [], [], []
        for i, k in enumerate(p.green):
            d = float(p.durations[k])
            mn = p.min_dur[i] if i < len(p.min_dur) else None
            mx = p.max_dur[i] if i < len(p.max_dur) else None
            if self.min_green_s is not None:
                l, w = self.min_green_s, f"min_green_s={self.min_green_s:g} s"
            elif mn is not None:
                l, w = min(float(mn), d), f"minDur={float(mn):g} s"
            else:
                l, w = min(self.default_min_green_s, d), f"default_min_green_s={self.default_min_green_s:g} s"
            cross = p.crossing[i] if i < len(p.crossing) else None
            if self.pedestrian_green_s is not None and (cross is None or cross or extra == "all" or k in extra) \
                    and self.pedestrian_green_s > l:
                l, w = self.pedestrian_green_s, f"pedestrian_green_s={self.pedestrian_green_s:g} s (crossing)"
            if self.max_green_s is not None:
                h = self.max_green_s
            elif mx is not None:
                h = max(float(mx), d)
            else:
                h = math.inf
            lo.append(l)
            hi.append(max(h, l))
            why.append(w)
        self._bounds_cache[key] = (lo, hi, why)
        return lo, hi, why

    def _cycle_range(self, p: _Program, twin) -> tuple[float, float]:
        lo, hi, _ = self.bounds(p, twin)
        return p.lost + sum(lo), p.lost + sum(hi)

    def _cycle_param(self, name: str, progs: list[_Program], twin) -> Parameter:
        ranges = {p.id: self._cycle_range(p, twin) for p in progs}
        low = max(r[0] for r in ranges.values())
        low = max(low, min([self.min_cycle_s] + [p.cycle for p in progs]))  # never above a baseline cycle
        cycles = {p.cycle for p in progs}
        base = cycles.pop() if len(cycles) == 1 else None
        high = max([self.max_cycle_s] + [p.cycle for p in progs])
        high = max(low, min([high] + [r[1] for r in ranges.values()]))
        worst = max(progs, key=lambda p: ranges[p.id][0])
        lo, _, why = self.bounds(worst, twin)
        floors = ", ".join(sorted(set(why)))
        return Parameter(name, "float", low, high, "s", base,
                         doc=f"cycle length; at least {len(worst.green)} greens of {sum(lo):g} s in all ({floors}) "
                             f"plus {worst.lost:g} s yellow/all-red at {worst.id}"
                             + (f", at least min_cycle_s={self.min_cycle_s:g} s" if self.min_cycle_s else "")
                             + f", at most max_cycle_s={self.max_cycle_s:g} s and the phases' maximum greens")

    def relative(self, twin) -> bool:
        """Whether the shared cycle and two-phase split are ``cycle_scale`` / ``green_split_shift`` (relative to
        each program's own) rather than ``cycle_s`` / ``green_split``: ``relative_timing``, or where it is null,
        whether the chosen programs' cycles or two-phase splits differ (then no absolute value is the baseline)."""
        if self.relative_timing is not None:
            return bool(self.relative_timing)
        progs = self.selected(twin)
        return len({p.cycle for p in progs}) > 1 or len({p.split for p in progs if p.split is not None}) > 1

    def _scale_param(self, name: str, progs: list[_Program], twin) -> Parameter:
        lows, highs = [], []
        for p in progs:
            need, most = self._cycle_range(p, twin)
            c = p.cycle
            lows.append(max(need, min(self.min_cycle_s, c)) / c)
            highs.append(min(most, max(self.max_cycle_s, c)) / c)
        low = max([self.min_cycle_scale] + lows)
        high = max(low, min([self.max_cycle_scale] + highs))
        cyc = sorted({p.cycle for p in progs})
        return Parameter(name, "float", low, high, "x", 1.0,
                         doc="each junction's own cycle ("
                             + ", ".join(f"{c:g}" for c in cyc[:6]) + (", ..." if len(cyc) > 6 else "")
                             + " s) times this, 1 keeping it; within min_cycle_scale="
                             f"{self.min_cycle_scale:g}..max_cycle_scale={self.max_cycle_scale:g}, min/max_cycle_s "
                             "and every junction's green bounds (minDur/maxDur)")

    def parameters(self, twin) -> list[Parameter]:
        """The parameter space: shared parameters (searched by default) and per-junction ones (``J.name``).
        The shared cycle and two-phase split are absolute (``cycle_s``, ``green_split``) or relative to each
        program's own (``cycle_scale``, ``green_split_shift``): :meth:`relative`; a run may set either form.
        Per junction the cycle is listed as ``J.cycle_s`` (one program: it always holds the baseline);
        ``J.cycle_scale`` is accepted too (:meth:`validate`)."""
        drop = set(RELATIVE) if self.relative(twin) else set(RELATIVE.values())
        return [q for q in self._space(twin) if q.name not in drop and not q.name.endswith(".cycle_scale")]

    def _space(self, twin) -> list[Parameter]:
        progs = self.selected(twin)
        two = [p for p in progs if p.split is not None]
        splits = {p.split for p in two}
        offs = [p.offset for p in progs]
        steps = {round(b - a, 9) for a, b in zip(offs, offs[1:])}
        hi_c = max([self.max_cycle_s] + [p.cycle for p in progs])
        out = [self._cycle_param("cycle_s", progs, twin), self._scale_param("cycle_scale", progs, twin)]
        if two:
            out.append(Parameter("green_split", "float", 0.05, 0.95, "share",
                                 splits.pop() if len(splits) == 1 else None,
                                 doc="share of the effective green for the first (NS) green phase of two-phase "
                                     "programs"))
            out.append(Parameter("green_split_shift", "float", -SHIFT_MAX, SHIFT_MAX, "logit", 0.0,
                                 doc="two-phase programs: each program's own split s becomes "
                                     "1/(1 + exp(-(logit(s) + shift))), 0 keeping it"))
        by_k: dict[int, list[_Program]] = {}
        for p in progs:
            if len(p.green) >= 3:
                by_k.setdefault(len(p.green), []).append(p)
        for K, ps in sorted(by_k.items()):
            for i in range(1, K):
                base = {round(p.coords[i - 1], 12) for p in ps}
                out.append(Parameter(f"share{K}_{i}", "float", 0.0, 1.0, "coord",
                                     ps[0].coords[i - 1] if len(base) == 1 else None,
                                     doc=f"green-share coordinate {i} of {K - 1} for programs with {K} green phases "
                                         "(stick-breaking: the box [0, 1] maps onto the simplex of shares)"))
        out.append(Parameter("offset_s", "float", 0.0, hi_c, "s", offs[0], doc="offset of the first junction"))
        out.append(Parameter("offset_step_s", "float", -hi_c, hi_c, "s",
                             steps.pop() if len(steps) == 1 else (0.0 if len(progs) == 1 else None),
                             doc="offset added per further junction"))
        for p in progs:
            out.append(self._cycle_param(f"{p.id}.cycle_s", [p], twin))
            out.append(self._scale_param(f"{p.id}.cycle_scale", [p], twin))
            if p.split is not None:
                out.append(Parameter(f"{p.id}.green_split", "float", 0.05, 0.95, "share", p.split))
            elif len(p.green) >= 3:
                for i in range(1, len(p.green)):
                    out.append(Parameter(f"{p.id}.share_{i}", "float", 0.0, 1.0, "coord", p.coords[i - 1],
                                         doc=f"green-share coordinate {i} of {len(p.green) - 1} at {p.id}"))
            out.append(Parameter(f"{p.id}.offset_s", "float", 0.0, max(self.max_cycle_s, p.cycle), "s", p.offset))
        return out

    def config_values(self) -> dict:
        c = self.cfg
        out = {k: c.get(k) for k in SHARED if c.get(k, None) is not None}
        gs = c.get("green_shares", None)
        if gs is not None:
            out.update({f"share{len(gs)}_{i + 1}": v for i, v in enumerate(_coords(gs, "intervention.green_shares"))})
        for j, d in (c.get("per_junction", None) or {}).items():
            for k, v in d.items():
                if k == "green_shares":
                    out.update({f"{j}.share_{i + 1}": x
                                for i, x in enumerate(_coords(v, f"intervention.per_junction.{j}.green_shares"))})
                else:
                    out[f"{j}.{k}"] = v
        return out

    def validate(self, values: dict, twin) -> dict:
        params = {q.name: q for q in self._space(twin)}  # either form of the cycle and split is accepted
        out = {}
        for k, v in (values or {}).items():
            if k not in params:
                raise ConfigError(f"intervention.{k}", v, f"a parameter of intervention {self.name!r}",
                                  suggest(k, params))
            out[k] = params[k].check(v)
        values = out
        pairs = list(RELATIVE.items()) + [(f"{p.id}.cycle_s", f"{p.id}.cycle_scale") for p in self.selected(twin)]
        for a, r in pairs:
            if a in values and r in values:
                raise ConfigError(f"intervention.{r}", values[r], f"unset when {a} is set",
                                  f"{a}={values[a]:g} and {r}={values[r]:g} both set it; set one of them.")
        for p, plan in zip(self.selected(twin), self._plans(values, twin)):
            self._durations(p, plan[0], plan[1], plan[2], values, twin)  # raises on a plan it cannot repair
        return values

    # --- the plan -------------------------------------------------------------------------------
    def _plans(self, values: dict, twin) -> list[tuple]:
        """Per chosen program: (cycle, split, share coordinates, offset); None keeps the baseline's."""
        progs = self.selected(twin)
        shared_off = "offset_s" in values or "offset_step_s" in values
        off0 = values.get("offset_s", progs[0].offset)
        step = values.get("offset_step_s", 0.0)
        plans = []
        for i, p in enumerate(progs):
            cyc = values.get(f"{p.id}.cycle_s")  # per junction before shared; absolute before relative
            if cyc is None and values.get(f"{p.id}.cycle_scale") is not None:
                cyc = p.cycle * float(values[f"{p.id}.cycle_scale"])
            if cyc is None:
                cyc = values.get("cycle_s")
            if cyc is None and values.get("cycle_scale") is not None:
                cyc = p.cycle * float(values["cycle_scale"])  # x 1.0: the program's own cycle, exactly
            spl = values.get(f"{p.id}.green_split")
            if spl is None and p.split is not None:
                spl = values.get("green_split")  # the shared split is for the two-phase programs
                sh = values.get("green_split_shift")
                if spl is None and sh is not None and float(sh) != 0.0:
                    spl = min(max(_sigmoid(_logit(p.split) + float(sh)), min(0.05, p.split)), max(0.95, p.split))
            coords = None
            K = len(p.green)
            if K >= 3:
                given = [values.get(f"{p.id}.share_{i}", values.get(f"share{K}_{i}")) for i in range(1, K)]
                if any(v is not None for v in given):
                    coords = [b if v is None else float(v) for v, b in zip(given, p.coords)]
            off = values.get(f"{p.id}.offset_s")
            if off is None and shared_off:
                off = off0 + i * step
            plans.append((cyc, spl, coords, off))
        for k in values:  # a junction share on a program without that many greens
            m = k.split(".", 1)
            if len(m) == 2 and _JSHARE.match(m[1]):
                p = next((q for q in progs if q.id == m[0]), None)
                if p is not None and not 1 <= int(_JSHARE.match(m[1]).group(1)) < len(p.green):
                    raise ConfigError(f"intervention.{k}", values[k], f"share_1..share_{len(p.green) - 1}")
        return plans

    def _field(self, name: str, p: _Program, values: dict) -> str:
        """The field that set ``name`` (cycle_s, green_split) at ``p``: per junction before shared, the
        absolute form before the relative one (cycle_scale, green_split_shift)."""
        alts = [name] + ([RELATIVE[name]] if name in RELATIVE else [])
        for key in [f"{p.id}.{n}" for n in alts] + alts:
            if values.get(key) is not None:
                return f"intervention.{key}"
        return f"intervention.{name}"

    def _cycle_error(self, p: _Program, values: dict, cycle: float, valid: str, detail: str | None = None):
        """A ConfigError naming the field that set the cycle; for ``cycle_scale`` its value and the scales
        that fit, with the cycle in seconds it gave."""
        fld = self._field("cycle_s", p, values)
        if fld.endswith("cycle_scale"):
            return ConfigError(fld, values[fld[len("intervention."):]],
                               f"a scale giving {valid}",
                               f"(junction {p.id!r}: its own {p.cycle:g} s cycle x the scale = {cycle:g} s)"
                               + (f" {detail}" if detail else ""))
        return ConfigError(fld, cycle, valid, detail)

    def _durations(self, p: _Program, cycle, split, coords, values, twin=None) -> torch.Tensor:
        d = p.durations
        same_cycle = cycle is None or float(cycle) == p.cycle
        same_split = split is None or (p.split is not None and float(split) == p.split)
        same_shares = coords is None or list(coords) == p.coords
        if same_cycle and same_split and same_shares:
            return d  # the baseline program, bit for bit
        if split is not None and p.split is None:
            raise ConfigError(self._field("green_split", p, values), split, "unset for this junction",
                              f"junction {p.id!r} has {len(p.green)} green phases; green_split needs exactly 2"
                              + (f" (use share{len(p.green)}_1..{len(p.green) - 1} or green_shares)."
                                 if len(p.green) >= 3 else "."))
        lo, hi, why = self.bounds(p, twin)
        cycle = p.cycle if cycle is None else float(cycle)
        G = cycle - p.lost
        need, most = p.lost + sum(lo), p.lost + sum(hi)
        if not (sum(lo) - 1e-6 <= G <= sum(hi) + 1e-6):
            floors = ", ".join(sorted(set(why)))
            if same_cycle:  # the scenario's own cycle: the floor asked for is what does not fit
                fld = "intervention.min_green_s" if self.min_green_s is not None else \
                    "intervention.pedestrian_green_s" if self.pedestrian_green_s is not None else "intervention.cycle_s"
                raise ConfigError(fld, {"intervention.min_green_s": self.min_green_s,
                                        "intervention.pedestrian_green_s": self.pedestrian_green_s}.get(fld, cycle),
                                  f"green floors that fit the {cycle:g} s cycle of junction {p.id!r}",
                                  f"Its {len(p.green)} greens need {sum(lo):g} s ({floors}) but get {G:g} s; "
                                  f"set cycle_s >= {need:g} s or lower the floor.")
            rng = f"[{need:g}, {most:g}]" if math.isfinite(most) else f">= {need:g}"
            if self._field("cycle_s", p, values).endswith("cycle_scale"):
                srng = f"[{need / p.cycle:.4g}, {most / p.cycle:.4g}]" if math.isfinite(most) else \
                    f">= {need / p.cycle:.4g}"
                rng = f"{rng} s, i.e. a scale in {srng}"
            else:
                rng += " s"
            raise self._cycle_error(p, values, cycle,
                                    f"a cycle in {rng} at junction {p.id!r} ({len(p.green)} greens of "
                                    f"{sum(lo):g}–{sum(hi):g} s in all ({floors}) plus {p.lost:g} s yellow/all-red)")
        new = d.clone()
        if split is not None:
            target = [G * float(split), G * (1 - float(split))]
            bad = any(t < l - 1e-9 or t > h + 1e-9 for t, l, h in zip(target, lo, hi))
            fix = self.repair_split if self.repair_split is not None else \
                self.repair and any(x is not None for x in p.min_dur + p.max_dur)
            if bad and fix:
                target = project(target, lo, hi, G)
            elif bad:
                a = max(lo[0], G - hi[1]) / G
                b = min(hi[0], G - lo[1]) / G
                fld = self._field("green_split", p, values)
                if fld.endswith("green_split_shift"):
                    raise ConfigError(fld, values["green_split_shift"],
                                      f"a shift whose split stays in [{a:.3f}, {b:.3f}] at junction {p.id!r} "
                                      f"with a {cycle:g} s cycle",
                                      f"(its own split {p.split:.3f} shifted gives {float(split):.3f}; "
                                      "set intervention.repair_green_split=true to project onto the bounds)")
                raise ConfigError(fld, split,
                                  f"a share in [{a:.3f}, {b:.3f}] at junction {p.id!r} with a {cycle:g} s cycle "
                                  f"(each green >= {', '.join(sorted(set(why)))}"
                                  + (f", <= {hi[0]:g} / {hi[1]:g} s" if math.isfinite(max(hi)) else "") + ")")
            greens = target
        else:
            if coords is not None:
                target = [G * s for s in shares_from_coords(coords)]
                K = len(p.green)
                what = f"share{K}_1..{K - 1}" if not any(f"{p.id}.share_{i}" in values for i in range(1, K)) \
                    else f"{p.id}.share_1..{K - 1}"
            else:
                base = p.greens
                target = [g * (G / sum(base)) for g in base]
                what = None
            bad = [i for i, (t, l, h) in enumerate(zip(target, lo, hi)) if t < l - 1e-9 or t > h + 1e-9]
            if bad and not self.repair:
                i = bad[0]
                side = f">= {lo[i]:g} s ({why[i]})" if target[i] < lo[i] else f"<= {hi[i]:g} s (maxDur/max_green_s)"
                if what is None:
                    raise self._cycle_error(p, values, cycle,
                                            f"a cycle whose proportional greens fit their bounds at junction {p.id!r}",
                                            f"phase {p.green[i]} would get {target[i]:.3g} s, needs {side} "
                                            "(set intervention.repair=true to project onto the bounds).")
                raise ConfigError(f"intervention.{what}", [round(float(c), 4) for c in coords],
                                  f"shares whose greens fit their bounds at junction {p.id!r}",
                                  f"phase {p.green[i]} would get {target[i]:.3g} s of {G:g} s, needs {side} "
                                  "(set intervention.repair=true to project onto the bounds).")
            greens = project(target, lo, hi, G) if bad else target
        new[p.green] = torch.tensor(greens, dtype=torch.float64)
        return new

    def plan(self, values: dict | None, twin) -> tuple[torch.Tensor, torch.Tensor]:
        """``(durations [P, K], offsets [P])`` for one parameter vector (float64, CPU)."""
        comp = twin.net_cpu
        dur = comp.phase_durations.detach().cpu().to(torch.float64).clone()
        off = comp.program_offset.detach().cpu().to(torch.float64).clone()
        if not values:
            return dur, off
        progs = self.selected(twin)
        step = float(getattr(twin, "dt", 1.0))
        for p, (cyc, spl, coords, o) in zip(progs, self._plans(values, twin)):
            new = self._durations(p, cyc, spl, coords, values, twin)
            if new is not p.durations:
                new = self._whole_steps(new, p, twin, step)
            dur[p.index] = new
            if o is not None and float(o) != p.offset:
                off[p.index] = round(float(o) / step) * step
        return dur, off

    def _whole_steps(self, durations: torch.Tensor, p: _Program, twin, step: float) -> torch.Tensor:
        """A retimed program's greens in whole steps: each rounded down, then the largest remainders rounded up
        until the greens keep their sum (to the nearest step), within their bounds. A signal switches only between
        steps, in SUMO and in the twin, but SUMO schedules a fractional phase end in milliseconds where the twin reads
        the cycle position each step, so a fractional plan ran up to 2 s apart in the two (RESCO ingolstadt1, a
        34.19 s cycle: its 7 s green began 1-2 s later in the twin, at varying points of the cycle). In whole steps
        both run the same program to the second, and the twin exports what it ran."""
        lo, hi, _ = self.bounds(p, twin)
        greens = [g / step for g in durations[p.green].tolist()]
        n = [math.floor(g + 1e-9) for g in greens]
        for i in sorted(range(len(n)), key=lambda i: n[i] - greens[i])[:max(0, round(sum(greens)) - sum(n))]:
            n[i] += 1
        out = durations.clone()
        for k, m, a, b in zip(p.green, n, lo, hi):
            m = max(m, math.ceil(a / step - 1e-9))
            out[k] = min(m, math.floor(b / step + 1e-9) if math.isfinite(b) else m) * step
        return out

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        W = twin.W
        if len(values_per_world) != W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {W} worlds")
        cache: dict = {}
        durs, offs = [], []
        for v in values_per_world:
            key = tuple(sorted((v or {}).items()))
            if key not in cache:
                cache[key] = self.plan(self.validate(dict(v or {}), twin) if v else None, twin)
            d, o = cache[key]
            durs.append(d)
            offs.append(o)
        dev = twin.device
        dur = torch.stack(durs).to(dev)
        off = torch.stack(offs).to(dev)
        twin.worlds.params["signal_durations"] = dur  # the traffic twin reads its plans from here at every step
        twin.worlds.params["signal_offsets"] = off


def _opt(x, fld: str) -> float | None:
    if x is None:
        return None
    x = float(x)
    if not (math.isfinite(x) and x >= 0):
        raise ConfigError(fld, x, ">= 0 seconds (or null)")
    return x


def _num(x, fld: str) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ConfigError(fld, x, "a finite number") from None
    if not math.isfinite(x):
        raise ConfigError(fld, x, "a finite number")
    return x


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _coords(shares, fld: str) -> list[float]:
    try:
        s = [float(x) for x in shares]
    except (TypeError, ValueError):
        raise ConfigError(fld, shares, "a list of green shares, one per green phase") from None
    if len(s) < 2:
        raise ConfigError(fld, s, "a share per green phase (at least 2)")
    try:
        return coords_from_shares(s)
    except ValueError:
        raise ConfigError(fld, s, "shares >= 0 with a positive sum") from None


def webster_delay(cycle_s: float, green_eff_s: float, q_veh_s: float, s_veh_s: float) -> float:
    """Webster's (1958) mean delay per vehicle (s) at a fixed-time signal with random arrivals:

    d = c(1-λ)² / (2(1-λx)) + x² / (2q(1-x)) − 0.65 (c/q²)^{1/3} x^{2+5λ},  λ = g/c, x = q/(λ s).
    """
    lam = green_eff_s / cycle_s
    x = q_veh_s / (lam * s_veh_s)
    if x >= 1:
        return math.inf
    return (cycle_s * (1 - lam) ** 2 / (2 * (1 - lam * x)) + x * x / (2 * q_veh_s * (1 - x))
            - 0.65 * (cycle_s / q_veh_s ** 2) ** (1 / 3) * x ** (2 + 5 * lam))


def webster_uniform_delay(cycle_s: float, green_eff_s: float, q_veh_s: float, s_veh_s: float) -> float:
    """The uniform (deterministic-arrival) term of Webster's delay: c(1-λ)² / (2(1-λx))."""
    lam = green_eff_s / cycle_s
    x = q_veh_s / (lam * s_veh_s)
    return cycle_s * (1 - lam) ** 2 / (2 * (1 - lam * x)) if x < 1 else math.inf
