"""Gates: pure functions from evidence (a plain dict, see :mod:`twins.ethics.evidence`) and the ethics
config to a decision ``{gate, status, reason, evidence, hard}``, status PASS | FAIL | NEEDS_HUMAN.

Gates see evidence, never twins. A gate whose evidence is missing says NEEDS_HUMAN with the reason
instead of guessing; a gate whose threshold is null in the config is not applied (and ``review.md``
lists it as not configured). Hard gates (safety, equity) are also handed to the search as constraints
(:func:`twins.ethics.search_constraints`); they are re-checked here on the held-out evidence anyway.

Length: one pure function per gate, each a few dozen lines with its reasons and thresholds.
"""
from __future__ import annotations

import math
from datetime import date

from twins.core.stats import replications_to_bound

PASS, FAIL, NEEDS_HUMAN = "PASS", "FAIL", "NEEDS_HUMAN"


def result(gate: str, status: str, reason: str, evidence=None, hard: bool = False) -> dict:
    return {"gate": gate, "status": status, "reason": reason, "evidence": evidence or {}, "hard": bool(hard)}


def _finite(*xs) -> bool:
    return all(x is not None and isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def _fmt(x) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and x is not None else str(x)


def is_placeholder(value) -> bool:
    """The example ethics configs (conf/ethics/traffic.yaml, drug.yaml) name owners that start with
    "Example": placeholders a real review must replace."""
    return str(value or "").strip().lower().split(" ")[0] in ("example", "example:")


# --- provenance and tier --------------------------------------------------------------------------
def provenance(ev: dict, e) -> dict:
    p = ev.get("provenance") or {}
    owner = p.get("owner") or {}
    missing = [f"objective.owner.{k}" for k in ("name", "role", "organisation") if not str(owner.get(k) or "").strip()]
    if not p.get("stakeholders"):
        missing.append("objective.stakeholders")
    if not str(p.get("rationale") or "").strip():
        missing.append("objective.rationale")
    d = str(p.get("date") or "").strip()
    if not d:
        missing.append("objective.date")
    else:
        try:
            date.fromisoformat(d)
        except ValueError:
            return result("provenance", FAIL, f"ethics.objective.date={d!r} is not an ISO date (YYYY-MM-DD)", p)
    if missing:
        return result("provenance", FAIL, "the objective's provenance is incomplete: set "
                      + ", ".join(f"ethics.{m}" for m in missing), p)
    shipped = [k for k in ("name", "organisation") if is_placeholder(owner.get(k))]
    if shipped:  # the example configs name an "Example ..." owner: nobody owns that objective
        return result("provenance", FAIL, "the objective owner is the example config's placeholder ("
                      + ", ".join(f"{k}={owner[k]!r}" for k in shipped) + "): set who owns it, e.g. "
                      "ethics.objective.owner.name='City of X transport department' "
                      "ethics.objective.owner.organisation='City of X'", p)
    return result("provenance", PASS, f"objective owned by {owner['name']} ({owner['role']}, "
                  f"{owner['organisation']}); {len(p['stakeholders'])} stakeholder(s) consulted; objective hash "
                  f"{str(p.get('objective_hash', ''))[:12]}", p)


def impact_tier(ev: dict, e) -> dict:
    t, c, h = ev.get("tier"), ev.get("controls"), ev.get("held_out") or {}
    if not t or not c:
        return result("impact_tier", NEEDS_HUMAN, "no impact tier in the evidence")
    n = h.get("replications")
    evd = {"tier": t, "controls": c, "held_out_replications": n}
    if n is None or n < c["held_out_replications"]:
        return result("impact_tier", FAIL, f"tier {t['tier']} needs >= {c['held_out_replications']} held-out "
                      f"replications; the evidence has {n}. Set ethics.evidence.replications="
                      f"{c['held_out_replications']} (or null)", evd)
    note = f"; note: {h['note']}" if h.get("note") else ""  # e.g. replications that share every departure
    return result("impact_tier", PASS, f"tier {t['tier']} (score {t['score']}): {n} held-out replications "
                  f"(>= {c['held_out_replications']}); approval needs {c['approvers']} approver(s)"
                  + (" with SSH signatures" if c["signature"] else "") + note, evd)


# --- effect credibility -----------------------------------------------------------------------------
def credibility(ev: dict, e) -> dict:
    c = ev.get("credibility") or {}
    h = c.get("held_out")
    if not h:
        return result("credibility", NEEDS_HUMAN, "no held-out estimate of the objective in the evidence", c)
    m, d = c.get("metric"), c.get("direction", "minimize")
    if d not in ("minimize", "maximize"):  # never guess which way is better
        return result("credibility", FAIL, f"the objective's direction {d!r} is neither minimize nor maximize "
                      "(set ethics.credibility.direction)", c)
    lo, hi, eff = h.get("ci_low"), h.get("ci_high"), h.get("effect")
    if not _finite(lo, hi, eff):
        return result("credibility", FAIL, f"the held-out interval of {m} is not finite (n={h.get('n')}): "
                      "more held-out replications are needed", c)
    need = float(e.credibility.min_effect)
    # the improvement interval: -effect when lower is better
    worst_gain = lo if d == "maximize" else -hi
    problems = []
    if not worst_gain > need:
        problems.append(f"the held-out 95% interval of {m} [{lo:+.4g}, {hi:+.4g}] does not clear the minimum "
                        f"meaningful {'reduction' if d == 'minimize' else 'increase'} of {need:g}")
    est = c.get("estimate")
    gap = None if est is None or not _finite(est) else abs(est - eff)
    bound = e.credibility.max_gap
    if bound is not None and gap is not None:  # no earlier estimate: nothing was selected, no winner's curse
        if gap > bound:
            problems.append(f"the {c.get('estimate_source', 'search')} estimate {est:+.4g} and the held-out estimate "
                            f"{eff:+.4g} differ by {gap:.4g} > max_gap {bound:g} (winner's curse)")
    c = {**c, "gap": gap, "min_effect": need, "max_gap": bound}
    if problems:
        return result("credibility", FAIL, "; ".join(problems), c)
    return result("credibility", PASS, f"held-out effect on {m} {eff:+.4g} [{lo:+.4g}, {hi:+.4g}] (n={h.get('n')}) "
                  f"clears {need:g}" + (f"; gap {gap:.4g}" if gap is not None else ""), c)


def reproducibility(ev: dict, e) -> dict:
    r = ev.get("reproducibility")
    if not r:
        return result("reproducibility", NEEDS_HUMAN, "no reproducibility evidence (null arm and rerun)")
    problems = []
    null, rerun = r.get("null") or {}, r.get("rerun") or {}
    if not null:
        problems.append("no null-intervention arm was run")
    elif not null.get("identical"):
        problems.append(f"the null intervention (baseline parameters as a treated arm) is not identical to the "
                        f"baseline: max |effect| {_fmt(null.get('max_abs_diff'))} on {null.get('worst_metric')}")
    if not rerun:
        problems.append("no rerun of a sample of worlds")
    elif not rerun.get("identical"):
        problems.append(f"a rerun of {rerun.get('worlds')} worlds differs from the first run: max |diff| "
                        f"{_fmt(rerun.get('max_abs_diff'))} on {rerun.get('worst_metric')}")
    if problems:
        return result("reproducibility", FAIL if null and rerun else NEEDS_HUMAN, "; ".join(problems), r)
    return result("reproducibility", PASS, f"null effect exactly 0 on {null.get('worlds')} worlds; "
                  f"{rerun.get('worlds')} worlds rerun bit-identically", r)


# --- safety floors ----------------------------------------------------------------------------------
def traffic_safety(ev: dict, e) -> list[dict]:
    s = e.safety.traffic
    t = ev.get("traffic")
    out = []
    if s.max_worst_approach_p95_delay_s is not None:
        rows = (t or {}).get("approach_p95")
        if not rows:
            out.append(result("safety.worst_approach_delay", NEEDS_HUMAN,
                              "no per-approach delay in the evidence (no trips table)", hard=True))
        else:
            out.append(worst_approach_delay(rows, float(s.max_worst_approach_p95_delay_s),
                                            s.get("worst_approach_tolerance_s", None)))
    out.append(pedestrian_green((t or {}).get("pedestrian"), s))
    stuck = (t or {}).get("stuck")
    if stuck is None:
        out.append(result("safety.gridlock", NEEDS_HUMAN, "no trips table in the evidence", hard=True))
    else:
        ok = stuck["max"] <= s.max_stuck_vehicles
        out.append(result(
            "safety.gridlock", PASS if ok else FAIL,
            f"at most {stuck['max']} vehicle(s) stuck > {s.stuck_after_s:g} s in any world of the policy arm "
            f"({'<=' if ok else '>'} {s.max_stuck_vehicles}); baseline at most {stuck.get('baseline_max')}",
            stuck, hard=True))
    return out


def _more_evidence(mean, upper, n, limit: float, what: str) -> str:
    """The note for a bound missed only for want of replications: the mean is within ``limit`` but the interval's
    upper end is not; how many held-out replications would bound it at this spread (a planning estimate)."""
    if not _finite(mean, upper) or not n or mean >= limit:
        return ""
    k = replications_to_bound(float(mean), float(upper), int(n), float(limit))
    more = (f"about {k} would bound it at this spread (ethics.evidence.replications={k}; an estimate)" if k
            else "far more would be needed to bound it")
    return (f" [inconclusive: {what} {_fmt(mean)} s is within {limit:g} s, but {int(n)} held-out replications "
            f"do not bound it; {more}]")


def worst_approach_delay(rows: list[dict], bound: float, tol: float | None) -> dict:
    """safety.worst_approach_delay: the upper 95% bound of every entry approach's 95th-percentile delay (incl. the
    wait to enter) under the plan is <= ``bound``. Where the baseline (the scenario's own plan) already breaks the
    bound at an approach (its own upper 95% bound > ``bound``), that approach is judged against the baseline
    instead: the upper 95% bound of the plan's paired change there must be <= ``tol`` seconds (null: no such
    allowance). An approach the baseline keeps within the bound must stay within it."""
    gate = "safety.worst_approach_delay"

    def hi(r, k="ci_high"):
        return r.get(k) if _finite(r.get(k)) else math.inf

    worst = max(rows, key=hi)
    def base_hi(r):  # the baseline judged as the plan is (its upper 95% bound); older evidence: its mean
        x = r.get("baseline_ci_high") if "baseline_ci_high" in r else r.get("baseline_p95_mean")
        return x if _finite(x) else -math.inf  # no baseline data there: not shown to break the bound

    base_over = [r for r in rows if base_hi(r) > bound]
    over = [r for r in rows if not hi(r) <= bound]
    evd = {"worst": worst, "approaches": rows, "bound_s": bound, "tolerance_s": tol,
           "baseline_over_bound": [r["approach"] for r in base_over]}
    head = (f"worst approach {worst['approach']}: 95th-percentile delay {worst['p95_mean']:.1f} s, upper 95% bound "
            f"{_fmt(worst['ci_high'])} s")
    if not over:
        return result(gate, PASS, f"{head} <= {bound:g} s (baseline {_fmt(worst.get('baseline_p95_mean'))} s)", evd,
                      hard=True)
    if not base_over or tol is None:
        why = "" if not base_over else (f"; the baseline already exceeds it at {len(base_over)} approach(es), and "
                                        "ethics.safety.traffic.worst_approach_tolerance_s is null")
        more = "".join(_more_evidence(r.get("p95_mean"), r.get("ci_high"), r.get("n"), bound,
                                      f"approach {r['approach']}: its mean") for r in over)
        return result(gate, FAIL, f"{head} > {bound:g} s (baseline {_fmt(worst.get('baseline_p95_mean'))} s){why}"
                      + more, evd, hard=True)
    # the baseline already breaks the bound: judge the plan against the baseline where it does
    names = {r["approach"] for r in base_over}
    problems, judged = [], []
    for r in over:
        if r["approach"] not in names:
            problems.append(f"approach {r['approach']}: upper 95% bound {_fmt(r['ci_high'])} s > {bound:g} s where "
                            f"the baseline stays within it (baseline {_fmt(r.get('baseline_p95_mean'))} s)"
                            + _more_evidence(r.get("p95_mean"), r.get("ci_high"), r.get("n"), bound, "its mean"))
            continue
        ch = r.get("change_ci_high")
        judged.append(f"{r['approach']} {_fmt(r.get('baseline_p95_mean'))} -> {_fmt(r['p95_mean'])} s (change "
                      f"{_fmt(r.get('change'))}, upper 95% bound {_fmt(ch)} s)")
        if not _finite(ch):
            problems.append(f"approach {r['approach']}: no paired change against the baseline in the evidence")
        elif ch > tol:
            problems.append(f"approach {r['approach']}: worse than the baseline by up to {_fmt(ch)} s > the tolerance "
                            f"{tol:g} s (baseline {_fmt(r.get('baseline_p95_mean'))} s, plan {_fmt(r['p95_mean'])} s)"
                            + _more_evidence(r.get("change"), ch, r.get("n"), tol, "its mean change"))
    bw = max(base_over, key=base_hi)
    note = (f"the baseline (the scenario's own plan) already exceeds the {bound:g} s bound at "
            f"{len(base_over)} approach(es) (worst {bw['approach']}: {_fmt(bw.get('baseline_p95_mean'))} s, upper 95% "
            f"bound {_fmt(bw.get('baseline_ci_high'))} s), so the plan is judged against the baseline there: it may "
            f"not make those approaches worse by more than {tol:g} s (upper 95% bound of the paired change)")
    evd["judged_against_baseline"] = True
    if problems:
        return result(gate, FAIL, f"{head}; {note}: " + "; ".join(problems), evd, hard=True)
    return result(gate, PASS, f"{head}; {note}: it does not (" + "; ".join(judged) + ")", evd, hard=True)


def _named(named, program: str, phase) -> bool:
    """Whether ``ethics.safety.traffic.pedestrian_phases`` ({program id: [phase indices] | "all"}) names it."""
    v = (named or {}).get(program)
    return v is not None and (v == "all" or (not isinstance(v, str) and phase in [int(k) for k in v]))


def pedestrian_green(ped: dict | None, s) -> dict:
    """safety.pedestrian_green: every green phase that serves a pedestrian crossing lasts at least the crossing
    time (width / walking speed + walk interval). A phase serves a crossing when it shows a SUMO crossing link
    green (``crossing: true`` in the evidence's ``phases``), when the network does not say which links are
    crossings (``crossing: null``: generated scenarios, where each green carries the crossing parallel to it),
    or when the ethics config names it (``safety.traffic.pedestrian_phases``); phases of junctions without
    crossings are not judged. Evidence without ``phases`` gives the shortest relevant green directly."""
    need = s.crossing_width_m / s.walking_speed_mps + s.walk_s
    if ped is None:
        return result("safety.pedestrian_green", NEEDS_HUMAN, "no signal plan in the evidence", hard=True)
    ped = dict(ped)
    named = s.get("pedestrian_phases", None) if hasattr(s, "get") else getattr(s, "pedestrian_phases", None)
    if isinstance(ped.get("phases"), list):
        serving = [r for r in ped["phases"] if r.get("crossing") is not False or r.get("named")
                   or _named(named, str(r.get("program")), r.get("phase"))]
        if not serving:
            return result("safety.pedestrian_green", PASS,
                          ped.get("note") or f"no phase serves a pedestrian crossing ({len(ped['phases'])} green "
                          "phase(s); the network shows no crossing at its signals and "
                          "ethics.safety.traffic.pedestrian_phases names none)", ped, hard=True)
        low = min(serving, key=lambda r: float(r["green_s"]))
        ped.update(min_green_s=float(low["green_s"]), program=low.get("program"), phase=low.get("phase"),
                   judged=len(serving))
        if _finite(ped.get("adaptive_min_green_s")) and ped["adaptive_min_green_s"] < ped["min_green_s"]:
            ped.update(min_green_s=float(ped["adaptive_min_green_s"]), program="(adaptive)", phase="any")
    if ped.get("min_green_s") is None:
        return result("safety.pedestrian_green", PASS, ped.get("note") or "no signalized junction", ped, hard=True)
    g = float(ped["min_green_s"])
    ok = g >= need - 1e-4  # a plan floored at exactly the crossing time (rounded to 1e-6 s) passes
    which = "green serving a pedestrian crossing" if ped.get("judged") is not None or "crossing_phases" in ped \
        else "green"
    return result(
        "safety.pedestrian_green", PASS if ok else FAIL,
        f"shortest {which} {g:.1f} s (phase {ped.get('phase')} at {ped.get('program')}) "
        f"{'>=' if ok else '<'} pedestrian crossing time {need:.1f} s ({s.crossing_width_m:g} m at "
        f"{s.walking_speed_mps:g} m/s + {s.walk_s:g} s walk)", {**ped, "required_s": need}, hard=True)


def _level(ev: dict, metric: str):
    return (ev.get("levels") or {}).get(metric)


def drug_safety(ev: dict, e) -> list[dict]:
    s = e.safety.drug
    out = []
    if s.max_offtarget_occupancy is not None:
        lv = _level(ev, "offtarget_occupancy_max")
        if lv is None:
            out.append(result("safety.offtarget_ceiling", NEEDS_HUMAN,
                              "metric offtarget_occupancy_max is not in the evidence", hard=True))
        else:
            ok = _finite(lv["ci_high"]) and lv["ci_high"] <= s.max_offtarget_occupancy
            out.append(result("safety.offtarget_ceiling", PASS if ok else FAIL,
                              f"peak off-target occupancy {lv['mean']:.3g}, upper 95% bound {_fmt(lv['ci_high'])} "
                              f"{'<=' if ok else '>'} ceiling {s.max_offtarget_occupancy:g}", lv, hard=True))
    problems, missing, evd = [], [], {}
    if s.min_selectivity_ratio is not None:
        lv = _level(ev, "selectivity_ratio")
        evd["selectivity_ratio"] = lv
        if lv is None:
            missing.append("selectivity_ratio")
        elif not (_finite(lv["ci_low"]) and lv["ci_low"] >= s.min_selectivity_ratio):
            problems.append(f"selectivity ratio lower 95% bound {_fmt(lv['ci_low'])} < {s.min_selectivity_ratio:g}")
    if s.therapeutic_window is not None:
        lo, hi = s.therapeutic_window
        lv = _level(ev, "target_occupancy_mean")
        evd["target_occupancy_mean"] = lv
        if lv is None:
            missing.append("target_occupancy_mean")
        elif not (_finite(lv["ci_low"], lv["ci_high"]) and lo <= lv["ci_low"] and lv["ci_high"] <= hi):
            problems.append(f"target occupancy 95% interval [{_fmt(lv['ci_low'])}, {_fmt(lv['ci_high'])}] is not "
                            f"inside the therapeutic window [{lo:g}, {hi:g}]")
    if s.min_selectivity_ratio is not None or s.therapeutic_window is not None:
        if problems:
            out.append(result("safety.therapeutic_margin", FAIL, "; ".join(problems), evd, hard=True))
        elif missing:
            out.append(result("safety.therapeutic_margin", NEEDS_HUMAN,
                              f"metric(s) {', '.join(missing)} not in the evidence: the twin or intervention does "
                              "not report them", evd, hard=True))
        else:
            out.append(result("safety.therapeutic_margin", PASS, "selectivity and target occupancy within the "
                              "configured margin", evd, hard=True))
    return out


# --- equity -----------------------------------------------------------------------------------------
def equity(ev: dict, e) -> dict:
    rules = list(e.equity)
    if not rules:
        return result("equity", NEEDS_HUMAN, "no equity rule declared (ethics.equity): who could be harmed is "
                      "not checked", hard=True)
    groups = ev.get("groups") or []
    violations, checked, absent, skipped = [], [], [], []
    for r in rules:
        rows = [g for g in groups if g["group_kind"] == r.group_kind and g["metric"] == r.metric]
        if not rows:
            (absent if r.get("required", True) else skipped).append(f"{r.group_kind}/{r.metric}")
            continue
        for g in rows:
            # worsening on the unfavourable end of the interval
            # (an unknown direction leaves no worst end: a violation, never a silent pass)
            worst = g["ci_high"] if r.direction == "minimize" else \
                -g["ci_low"] if r.direction == "maximize" and _finite(g["ci_low"]) else None
            bounds = []
            if r.max is not None:
                bounds.append(float(r.max))
            if r.max_rel is not None and _finite(g.get("baseline_mean")):
                bounds.append(float(r.max_rel) * abs(g["baseline_mean"]))
            bound = min(bounds) if bounds else None
            row = {"group_kind": r.group_kind, "group": g["group"], "metric": r.metric, "effect": g["effect"],
                   "ci_low": g["ci_low"], "ci_high": g["ci_high"], "worsening_bound": bound,
                   "unfavourable_worsening": worst}
            checked.append(row)
            if bound is None:
                continue
            if not _finite(worst) or worst > bound:
                violations.append(row)
    evd = {"rules": [dict(group_kind=r.group_kind, metric=r.metric, direction=r.direction, max=r.max,
                          max_rel=r.max_rel) for r in rules], "groups": checked, "violations": violations,
           "not_applicable": skipped}
    if violations:
        desc = "; ".join(f"{v['group_kind']} {v['group']}: {v['metric']} worse by up to "
                         f"{_fmt(v['unfavourable_worsening'])} > {_fmt(v['worsening_bound'])}" for v in violations[:5])
        more = f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""
        return result("equity", FAIL, f"{len(violations)} group(s) worse than baseline beyond the bound, on the "
                      f"unfavourable end of the 95% interval: {desc}{more}", evd, hard=True)
    if absent:
        return result("equity", NEEDS_HUMAN, f"no groups for rule(s) {', '.join(absent)} in the evidence", evd,
                      hard=True)
    return result("equity", PASS, f"{len(checked)} group outcome(s) within their bounds on the unfavourable end "
                  "of the 95% interval", evd, hard=True)


# --- validity envelope ------------------------------------------------------------------------------
def validity_range(ev: dict, e) -> dict:
    p = ev.get("params")
    if p is None:
        return result("validity.range", NEEDS_HUMAN, "no parameter vector in the evidence")
    values, bounds = p.get("values") or {}, p.get("bounds") or {}
    narrow = {k: list(v) for k, v in (e.validity.validated_range or {}).items()}
    out = []
    for k, x in values.items():
        if not isinstance(x, (int, float)):
            continue
        for name, rng in (("parameter bounds", bounds.get(k)), ("validated range", narrow.get(k))):
            if rng is None:
                continue
            lo, hi = rng
            if (lo is not None and x < lo) or (hi is not None and x > hi):
                out.append(f"{k}={x:g} outside its {name} [{_fmt(lo)}, {_fmt(hi)}]")
    evd = {"values": values, "bounds": bounds, "validated_range": narrow}
    if out:
        return result("validity.range", FAIL, "; ".join(out), evd)
    return result("validity.range", PASS, f"{len(values)} parameter(s) inside the scenario's bounds"
                  + (" and the validated range" if narrow else ""), evd)


def validity_stress(ev: dict, e) -> dict:
    s = ev.get("stress")
    if not s:
        return result("validity.stress", NEEDS_HUMAN, "no demand-stress evidence")
    if s.get("skipped"):
        return result("validity.stress", NEEDS_HUMAN, s["skipped"], s)
    nominal = s.get("nominal")
    if not _finite(nominal) or nominal == 0:
        return result("validity.stress", NEEDS_HUMAN, f"the nominal effect {nominal} has no sign to keep", s)
    if not s.get("runs"):
        return result("validity.stress", NEEDS_HUMAN, f"no stress runs in the evidence ({s.get('key')} was not "
                      "varied): set ethics.validity.stress_factors, e.g. [0.8, 1.2]", s)
    sign = 1 if nominal > 0 else -1
    flips, reversals = [], []
    for r in s.get("runs", []):
        eff, lo, hi = r.get("effect"), r.get("ci_low"), r.get("ci_high")
        if not _finite(eff) or eff * sign <= 0:
            if _finite(lo, hi) and (hi < 0 if sign > 0 else lo > 0):
                reversals.append(r)
            else:
                flips.append(r)
    desc = ", ".join(f"×{r['factor']:g}: {_fmt(r.get('effect'))}" for r in s.get("runs", []))
    if reversals:
        return result("validity.stress", FAIL, f"the effect reverses under {s['key']} stress ({desc}; nominal "
                      f"{nominal:+.4g})", s)
    if flips:
        return result("validity.stress", NEEDS_HUMAN, f"the point estimate changes sign under stress, but the "
                      f"interval includes 0 ({desc}; nominal {nominal:+.4g})", s)
    return result("validity.stress", PASS, f"the effect keeps its sign under {s['key']} ×"
                  + ", ×".join(f"{r['factor']:g}" for r in s.get("runs", [])) + f" ({desc}; nominal {nominal:+.4g})",
                  s)


def validity_external(ev: dict, e) -> dict | None:
    """External validity: the plan replayed in SUMO (scenarios read from SUMO files) must improve the objective
    the way the twin predicted, under every car-following model: the same sign as the prediction and a ratio
    realized / predicted of at least ``controls.<tier>.transfer_min_ratio``. None (not applied) when the tier's
    threshold is null; PASS saying why when the scenario has no SUMO model (it does not apply)."""
    gate = "validity.external"
    t = ev.get("transfer")
    if t is None:
        return result(gate, NEEDS_HUMAN, "no external-validity evidence (the plan was not replayed in SUMO)")
    if not t.get("applies"):
        return result(gate, PASS, f"does not apply: {t.get('why') or 'no SUMO model of this scenario'}", t)
    tier = (ev.get("tier") or {}).get("tier")
    controls = e.controls.get(tier) if tier else None
    need = controls.transfer_min_ratio if controls is not None else t.get("min_ratio")
    if need is None:
        return None
    if t.get("skipped") or t.get("failed"):
        why = t.get("skipped") or t.get("failed")
        return result(gate, NEEDS_HUMAN, f"the plan could not be checked in SUMO: {why}", t)
    m, d = t.get("metric"), t.get("direction", "minimize")
    pred = (t.get("predicted") or {}).get("effect")
    if not _finite(pred) or pred == 0:
        return result(gate, NEEDS_HUMAN, f"the twin's predicted effect on {m} ({_fmt(pred)}) has no sign for SUMO to "
                      "confirm", t)
    improves = pred < 0 if d == "minimize" else pred > 0
    problems, seen = [], []
    if not improves:
        problems.append(f"the twin predicts the plan makes {m} worse ({pred:+.4g}): there is no improvement to hold")
    for cf in t.get("car_following") or []:
        r = (t.get("realized") or {}).get(cf) or {}
        eff, ratio = r.get("effect"), (t.get("ratio") or {}).get(cf)
        seen.append(f"{cf} {_fmt(eff)} [{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}], ratio {_fmt(ratio)}")
        if not _finite(eff):
            problems.append(f"SUMO ({cf}) measured no effect on {m}")
        elif eff * pred <= 0:
            problems.append(f"SUMO ({cf}) measured {eff:+.4g}, the opposite sign of the twin's {pred:+.4g}")
        elif not _finite(ratio) or ratio < float(need):
            problems.append(f"SUMO ({cf}) realized only {_fmt(ratio)} of the predicted effect (< {float(need):g})")
    evd = {**t, "required_ratio": float(need)}
    where = f"{t['seeds']} SUMO seeds each" if isinstance(t.get("seeds"), int) else "SUMO"
    if problems:
        return result(gate, FAIL, f"the plan does not hold in SUMO ({where}): " + "; ".join(problems)
                      + f" (twin {pred:+.4g}; SUMO {'; '.join(seen)})", evd)
    return result(gate, PASS, f"the plan holds in SUMO ({where}): {m} twin {pred:+.4g}; SUMO " + "; ".join(seen)
                  + f" (ratio >= {float(need):g} under every car-following model)", evd)


# --- human approval and audit -------------------------------------------------------------------------
def approval(decisions: list[dict], controls: dict, author: str) -> dict:
    """PASS once ``controls['approvers']`` distinct valid approvals (not by the author, signed where the tier
    requires it) are recorded and nobody rejected."""
    from .config import same_person

    rejected = [d for d in decisions if d.get("decision") == "reject"]
    if rejected:
        r = rejected[-1]
        return result("approval", FAIL, f"rejected by {r.get('reviewer')} ({r.get('role')}): {r.get('reason')}",
                      {"decisions": decisions})
    valid = [d for d in decisions if d.get("decision") == "approve" and d.get("valid")
             and not same_person(d.get("reviewer", ""), author)]
    names = {(" ".join(str(d["reviewer"]).split())).casefold() for d in valid}
    need = int(controls.get("approvers", 1))
    evd = {"decisions": decisions, "required": need, "author": author, "signature_required": controls.get("signature")}
    if len(names) >= need:
        who = ", ".join(f"{d['reviewer']} ({d['role']})" for d in valid)
        return result("approval", PASS, f"approved by {who}" + (" (signatures verified)"
                                                                 if controls.get("signature") else ""), evd)
    return result("approval", NEEDS_HUMAN, f"awaiting approval: {len(names)} of {need} approver(s) other than the "
                  f"author {author!r}" + (", each with an SSH signature" if controls.get("signature") else "")
                  + ". Run: python -m twins review approve RUN --reviewer NAME --role ROLE"
                  + (" --sign KEY" if controls.get("signature") else ""), evd)


def audit(problems: list[str], log: str) -> dict:
    if problems:
        return result("audit", FAIL, "audit chain broken: " + "; ".join(problems[:5]), {"log": log,
                                                                                         "problems": problems})
    return result("audit", PASS, f"audit chain intact ({log})", {"log": log})


# --- all evidence gates -------------------------------------------------------------------------------
def no_plan(ev: dict) -> dict:
    """The search recommends no plan (no feasible candidate, or none that beats the baseline on held-out
    replications): the baseline stays; nothing to approve or export."""
    return result("recommendation", FAIL, f"the search recommends no plan: {ev['no_plan']}. The baseline (the "
                  "scenario's own plan) stays; there is nothing to approve or export. Widen the search "
                  "(search.budget, intervention bounds) or revisit the constraints", ev.get("search"), hard=True)


def evaluate(ev: dict, e) -> list[dict]:
    """Every evidence gate (approval and audit are added by the review)."""
    if ev.get("no_plan"):  # a search that recommends nothing: recorded, and nothing to approve or export
        return [no_plan(ev)]
    if ev.get("failed"):
        return [result("ethics", NEEDS_HUMAN, f"the evidence could not be gathered ({ev['failed']}); nothing can be "
                       "exported from this run")]
    if not e.get("enabled", True) or ev.get("disabled"):
        return [result("ethics", NEEDS_HUMAN, "no ethics review: ethics.enabled=false (the ethics=default "
                       "template), so no evidence was gathered and nothing can be exported. Rerun with ethics=traffic "
                       "(traffic twins) or ethics=drug (molecular), or declare your own conf/ethics/ config")]
    out = [provenance(ev, e), impact_tier(ev, e), credibility(ev, e), reproducibility(ev, e)]
    kind = ev.get("kind")
    if kind == "traffic":
        out += traffic_safety(ev, e)
    elif kind == "molecular":
        out += drug_safety(ev, e)
    else:
        out.append(result("safety", NEEDS_HUMAN, f"no safety floors are defined for a {kind!r} twin", hard=True))
    out += [equity(ev, e), validity_range(ev, e), validity_stress(ev, e)]
    external = validity_external(ev, e)  # None: its threshold is null (not applied)
    return out + ([external] if external is not None else [])
