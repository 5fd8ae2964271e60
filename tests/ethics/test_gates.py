"""Each gate: a crafted case that fails it and one that passes (pure functions over evidence dicts)."""
import math

import pytest

from twins.ethics import gates, search_constraints
from twins.ethics.config import impact_tier

from .conftest import with_overrides


def by_name(results, name):
    found = [g for g in results if g["gate"] == name]
    assert len(found) == 1, [g["gate"] for g in results]
    return found[0]


def test_good_evidence_passes_every_evidence_gate(good, traffic_cfg):
    res = gates.evaluate(good, traffic_cfg.ethics)
    assert {g["gate"] for g in res} == {
        "provenance", "impact_tier", "credibility", "reproducibility", "safety.worst_approach_delay",
        "safety.pedestrian_green", "safety.gridlock", "equity", "validity.range", "validity.stress",
        "validity.external"}
    assert all(g["status"] == "PASS" for g in res), [(g["gate"], g["reason"]) for g in res if g["status"] != "PASS"]
    hard = {g["gate"] for g in res if g["hard"]}
    assert hard == {"safety.worst_approach_delay", "safety.pedestrian_green", "safety.gridlock", "equity"}


def test_provenance(good, traffic_cfg):
    e = traffic_cfg.ethics
    assert gates.provenance(good, e)["status"] == "PASS"
    good["provenance"]["owner"]["role"] = ""
    good["provenance"]["stakeholders"] = []
    g = gates.provenance(good, e)
    assert g["status"] == "FAIL"
    assert "ethics.objective.owner.role" in g["reason"] and "ethics.objective.stakeholders" in g["reason"]
    good["provenance"] = {**good["provenance"], "owner": {"name": "a", "role": "b", "organisation": "c"},
                          "stakeholders": ["x"], "date": "1st of May"}
    assert "ISO date" in gates.provenance(good, e)["reason"]


def test_impact_tier_controls(good, traffic_cfg):
    e = traffic_cfg.ethics
    assert gates.impact_tier(good, e)["status"] == "PASS"
    good["held_out"]["replications"] = 2
    g = gates.impact_tier(good, e)
    assert g["status"] == "FAIL" and "needs >= 4 held-out replications" in g["reason"]


@pytest.mark.parametrize("impact, tier", [
    (dict(reversibility="reversible", people_affected=10, duration_days=7, domain="research", vulnerable_groups=[]),
     "I"),
    (dict(reversibility="reversible", people_affected=15000, duration_days=30, domain="mobility",
          vulnerable_groups=["pedestrians"]), "II"),
    (dict(reversibility="reversible", people_affected=15000, duration_days=365, domain="road_safety",
          vulnerable_groups=[]), "III"),
    (dict(reversibility="irreversible", people_affected=10, duration_days=1, domain="health", vulnerable_groups=[]),
     "III"),  # the floor: irreversible and safety-critical
    (dict(reversibility="costly", people_affected=500, duration_days=730, domain="health",
          vulnerable_groups=["children"]), "IV"),
])
def test_impact_questionnaire_sets_the_tier(impact, tier):
    from omegaconf import OmegaConf

    assert impact_tier(OmegaConf.create(impact))["tier"] == tier


def test_credibility(good, traffic_cfg):
    e = traffic_cfg.ethics  # min_effect 0.5 s, max_gap 5 s
    assert gates.credibility(good, e)["status"] == "PASS"
    # the interval's favourable end is fine but its unfavourable end does not clear the minimum effect
    bad = {**good, "credibility": {**good["credibility"], "held_out": {**good["credibility"]["held_out"],
                                                                        "ci_high": -0.2}}}
    g = gates.credibility(bad, e)
    assert g["status"] == "FAIL" and "does not clear" in g["reason"]
    # winner's curse: the estimate the policy was chosen on is far from the held-out one
    curse = {**good, "credibility": {**good["credibility"], "estimate": -20.0}}
    g = gates.credibility(curse, e)
    assert g["status"] == "FAIL" and "winner's curse" in g["reason"] and g["evidence"]["gap"] == pytest.approx(13.0)
    # a maximize objective: the lower end must clear it
    up = {**good, "credibility": {"metric": "throughput_veh", "direction": "maximize", "estimate": None,
                                  "held_out": {"effect": 5.0, "ci_low": 1.0, "ci_high": 9.0, "n": 4}}}
    assert gates.credibility(up, e)["status"] == "PASS"
    up["credibility"]["held_out"]["ci_low"] = 0.1
    assert gates.credibility(up, e)["status"] == "FAIL"
    assert gates.credibility({}, e)["status"] == "NEEDS_HUMAN"


def test_reproducibility(good, traffic_cfg):
    e = traffic_cfg.ethics
    assert gates.reproducibility(good, e)["status"] == "PASS"
    good["reproducibility"]["null"].update(identical=False, max_abs_diff=0.25, worst_metric="mean_delay_s")
    g = gates.reproducibility(good, e)
    assert g["status"] == "FAIL" and "null intervention" in g["reason"] and "mean_delay_s" in g["reason"]
    good["reproducibility"]["null"]["identical"] = True
    good["reproducibility"]["rerun"].update(identical=False, max_abs_diff=1e-6, worst_metric="mean_stops")
    assert gates.reproducibility(good, e)["status"] == "FAIL"


def test_worst_approach_delay(good, traffic_cfg):
    e = traffic_cfg.ethics
    g = by_name(gates.traffic_safety(good, e), "safety.worst_approach_delay")
    assert g["status"] == "PASS" and g["hard"]
    good["traffic"]["approach_p95"].append({"approach": "W0_J0_0", "p95_mean": 110.0, "ci_low": 90.0,
                                            "ci_high": 130.0, "n": 4, "baseline_p95_mean": 60.0})
    g = by_name(gates.traffic_safety(good, e), "safety.worst_approach_delay")
    assert g["status"] == "FAIL" and "W0_J0_0" in g["reason"]  # judged on the upper end (130 > 120)


def _approach(name, plan, base, change_hi, n=8):
    """An approach row of the evidence: the plan's p95 (mean, upper bound plan + 5), the baseline's and the
    paired change's upper bound."""
    return {"approach": name, "p95_mean": plan, "ci_low": plan - 5.0, "ci_high": plan + 5.0, "n": n,
            "baseline_p95_mean": base, "baseline_ci_low": base - 5.0, "baseline_ci_high": base + 5.0,
            "change": plan - base, "change_ci_low": plan - base - 3.0, "change_ci_high": change_hi}


def test_worst_approach_judged_against_a_baseline_that_already_exceeds_the_bound(good, traffic_cfg):
    """Issue 18: where the scenario's own program already breaks the 120 s bound at an approach, the plan is judged
    against the baseline there (no worse by more than the tolerance, 10 s, on the upper end of the paired change),
    and the review text says so; an approach the baseline keeps within the bound must stay within it."""
    e = traffic_cfg.ethics
    assert e.safety.traffic.worst_approach_tolerance_s == 10.0
    ok = [_approach("N", 30.0, 32.0, 1.0)]

    def gate(rows, ee=e):
        return by_name(gates.traffic_safety({**good, "traffic": {**good["traffic"], "approach_p95": rows}}, ee),
                       "safety.worst_approach_delay")

    # baseline 138 s (upper bound 143 > 120): the plan at 140 s, +2 s (upper bound of the change 6 s <= 10): PASS
    g = gate(ok + [_approach("W", 140.0, 138.0, 6.0)])
    assert g["status"] == "PASS", g["reason"]
    assert "already exceeds the 120 s bound" in g["reason"] and "judged against the baseline" in g["reason"]
    assert g["evidence"]["judged_against_baseline"] and g["evidence"]["baseline_over_bound"] == ["W"]
    # a plan that improves that approach passes too, whatever its absolute level
    assert gate(ok + [_approach("W", 125.0, 138.0, -8.0)])["status"] == "PASS"
    # worse than the baseline by up to 14 s > 10 s: FAIL, naming the approach and the tolerance
    g = gate(ok + [_approach("W", 148.0, 138.0, 14.0)])
    assert g["status"] == "FAIL" and "W" in g["reason"] and "14 s > the tolerance 10 s" in g["reason"]
    # the baseline is over the bound at W, but the plan pushes N (within the bound under the baseline) above it
    g = gate([_approach("N", 130.0, 60.0, 75.0), _approach("W", 139.0, 138.0, 3.0)])
    assert g["status"] == "FAIL" and "approach N" in g["reason"] and "baseline stays within it" in g["reason"]
    # no tolerance configured: the absolute bound only
    g = gate(ok + [_approach("W", 140.0, 138.0, 6.0)],
             with_overrides(e, **{"safety.traffic.worst_approach_tolerance_s": None}))
    assert g["status"] == "FAIL" and "tolerance_s is null" in g["reason"]
    # a baseline within the bound: the absolute bound as before (plan 125 + 5 > 120 fails; 100 + 5 passes)
    assert gate(ok + [_approach("W", 125.0, 90.0, 40.0)])["status"] == "FAIL"
    assert gate(ok + [_approach("W", 100.0, 90.0, 13.0)])["status"] == "PASS"


def test_worst_approach_says_how_many_replications_would_settle_an_inconclusive_change(good, traffic_cfg):
    """A plan whose mean change at an approach is within the tolerance but whose interval is too wide fails (the
    gate is a non-inferiority test and 16 replications do not show it), and the reason says how many held-out
    replications would bound it at the observed spread; a plan whose mean itself is too far gets no such hint.
    Checked against a t-interval recomputed at that count (RESCO ingolstadt1's 50 s plan, 8 Dec 2026: change
    -7.52 s, upper bound +17.91 s on 16 replications)."""
    import math

    from scipy import stats

    from twins.core.stats import replications_to_bound

    e = traffic_cfg.ethics
    row = _approach("25149219#1", 146.7, 154.2, 17.909, n=16)
    row["change"] = -7.523
    g = by_name(gates.traffic_safety({**good, "traffic": {**good["traffic"], "approach_p95": [row]}}, e),
                "safety.worst_approach_delay")
    assert g["status"] == "FAIL" and "inconclusive" in g["reason"]
    k = replications_to_bound(-7.523, 17.909, 16, 10.0)
    assert f"ethics.evidence.replications={k}" in g["reason"]
    sd = (17.909 + 7.523) * 4.0 / stats.t.ppf(0.975, 15)
    assert -7.523 + stats.t.ppf(0.975, k - 1) * sd / math.sqrt(k) <= 10.0  # k bounds it ...
    assert -7.523 + stats.t.ppf(0.975, k - 2) * sd / math.sqrt(k - 1) > 10.0  # ... and k - 1 does not
    assert 28 <= k <= 34
    # the mean change itself past the tolerance: more replications cannot help, and the reason does not say so
    row = _approach("25149219#1", 166.0, 154.2, 20.0, n=16)
    g = by_name(gates.traffic_safety({**good, "traffic": {**good["traffic"], "approach_p95": [row]}}, e),
                "safety.worst_approach_delay")
    assert g["status"] == "FAIL" and "inconclusive" not in g["reason"]
    assert replications_to_bound(11.8, 20.0, 16, 10.0) is None


def test_approach_p95_evidence_holds_the_paired_change():
    import pandas as pd

    from twins.ethics.evidence import approach_p95

    # 3 replications x 2 arms; one approach (flow f enters on edge E); each world's vehicles lose 10, 20, ... s
    rows = []
    for w, (arm, rep) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]):
        for v in range(20):
            rows.append({"world": w, "flow": "f", "delay_s": 100.0 * (rep + 1) + v + 7.0 * arm,
                         "depart_delay_s": 0.0})
    trips = pd.DataFrame(rows)
    worlds = pd.DataFrame({"world": range(6), "arm": [0, 0, 0, 1, 1, 1], "replication": [0, 1, 2, 0, 1, 2]})
    (r,) = approach_p95(trips, worlds, {"f": "E"})
    assert r["approach"] == "E" and r["n"] == 3
    assert r["change"] == pytest.approx(7.0) and r["change_ci_high"] == pytest.approx(7.0)  # paired: exact
    assert r["p95_mean"] - r["baseline_p95_mean"] == pytest.approx(7.0)
    assert r["baseline_ci_high"] > r["baseline_p95_mean"] + 50  # unpaired: the replications differ by 100 s


def test_pedestrian_minimum_green(good, traffic_cfg):
    e = traffic_cfg.ethics  # 14 m / 1.2 m/s + 4 s = 15.7 s
    assert by_name(gates.traffic_safety(good, e), "safety.pedestrian_green")["status"] == "PASS"
    good["traffic"]["pedestrian"]["min_green_s"] = 10.0
    g = by_name(gates.traffic_safety(good, e), "safety.pedestrian_green")
    assert g["status"] == "FAIL" and "15.7" in g["reason"]
    assert g["evidence"]["required_s"] == pytest.approx(14 / 1.2 + 4)


def test_gridlock(good, traffic_cfg):
    e = traffic_cfg.ethics
    assert by_name(gates.traffic_safety(good, e), "safety.gridlock")["status"] == "PASS"
    good["traffic"]["stuck"].update(max=12, per_world=[0, 12, 3, 0])
    g = by_name(gates.traffic_safety(good, e), "safety.gridlock")
    assert g["status"] == "FAIL" and "12 vehicle(s) stuck" in g["reason"]
    del good["traffic"]
    assert by_name(gates.traffic_safety(good, e), "safety.gridlock")["status"] == "NEEDS_HUMAN"


def test_equity(good, traffic_cfg):
    e = traffic_cfg.ethics  # origin mean_delay_s max 10 s; approach delay_veh_h max_rel 0.25
    assert gates.equity(good, e)["status"] == "PASS"
    # on average this origin gains little, but the unfavourable end of its interval is +12 s > 10 s
    good["groups"][0].update(effect=2.0, ci_low=-8.0, ci_high=12.0)
    g = gates.equity(good, e)
    assert g["status"] == "FAIL" and "origin N" in g["reason"] and g["hard"]
    good["groups"][0].update(effect=-5.0, ci_low=-7.0, ci_high=-3.0)
    # relative bound: 0.3 veh·h worse on a 1.0 baseline > 25 %
    good["groups"][1].update(effect=0.2, ci_low=0.1, ci_high=0.3)
    assert gates.equity(good, e)["status"] == "FAIL"
    # a rule whose groups the twin does not report: a person must judge it
    good["groups"] = [g for g in good["groups"] if g["group_kind"] == "origin"]
    g = gates.equity(good, e)
    assert g["status"] == "NEEDS_HUMAN" and "approach/delay_veh_h" in g["reason"]


def test_validity_range(good, traffic_cfg):
    e = traffic_cfg.ethics  # validated cycle_s in [40, 150]
    assert gates.validity_range(good, e)["status"] == "PASS"
    good["params"]["values"]["cycle_s"] = 170.0  # inside the intervention's bounds, outside the validated range
    g = gates.validity_range(good, e)
    assert g["status"] == "FAIL" and "validated range" in g["reason"]
    good["params"]["values"]["cycle_s"] = 200.0
    assert "parameter bounds" in gates.validity_range(good, e)["reason"]


def test_validity_stress(good, traffic_cfg):
    e = traffic_cfg.ethics
    assert gates.validity_stress(good, e)["status"] == "PASS"
    good["stress"]["runs"][1].update(effect=3.0, ci_low=1.0, ci_high=5.0)  # reverses at +20 % demand
    g = gates.validity_stress(good, e)
    assert g["status"] == "FAIL" and "reverses" in g["reason"]
    good["stress"]["runs"][1].update(effect=1.0, ci_low=-2.0, ci_high=4.0)
    assert gates.validity_stress(good, e)["status"] == "NEEDS_HUMAN"
    assert gates.validity_stress({"stress": {"skipped": "no demand"}}, e)["status"] == "NEEDS_HUMAN"


def _drug_evidence(**levels):
    base = {"offtarget_occupancy_max": {"mean": 0.2, "ci_low": 0.18, "ci_high": 0.22, "n": 4},
            "selectivity_ratio": {"mean": 4.0, "ci_low": 3.5, "ci_high": 4.5, "n": 4},
            "target_occupancy_mean": {"mean": 0.7, "ci_low": 0.65, "ci_high": 0.75, "n": 4}}
    base.update(levels)
    return {"kind": "molecular", "levels": {k: v for k, v in base.items() if v is not None}}


def test_offtarget_ceiling(drug_ethics):
    g = by_name(gates.drug_safety(_drug_evidence(), drug_ethics), "safety.offtarget_ceiling")
    assert g["status"] == "PASS" and g["hard"]
    ev = _drug_evidence(offtarget_occupancy_max={"mean": 0.28, "ci_low": 0.25, "ci_high": 0.33, "n": 4})
    g = by_name(gates.drug_safety(ev, drug_ethics), "safety.offtarget_ceiling")
    assert g["status"] == "FAIL" and "0.33" in g["reason"]  # the mean is under 0.3, the upper end is not


def test_therapeutic_margin(drug_ethics):
    assert by_name(gates.drug_safety(_drug_evidence(), drug_ethics), "safety.therapeutic_margin")["status"] == "PASS"
    ev = _drug_evidence(selectivity_ratio={"mean": 2.5, "ci_low": 1.5, "ci_high": 3.5, "n": 4})
    g = by_name(gates.drug_safety(ev, drug_ethics), "safety.therapeutic_margin")
    assert g["status"] == "FAIL" and "selectivity" in g["reason"]
    ev = _drug_evidence(target_occupancy_mean={"mean": 0.92, "ci_low": 0.9, "ci_high": 0.95, "n": 4})
    assert "therapeutic window" in by_name(gates.drug_safety(ev, drug_ethics), "safety.therapeutic_margin")["reason"]
    # a twin that does not report the metric: no crash, a person must judge it
    ev = _drug_evidence(selectivity_ratio=None)
    g = by_name(gates.drug_safety(ev, drug_ethics), "safety.therapeutic_margin")
    assert g["status"] == "NEEDS_HUMAN" and "selectivity_ratio" in g["reason"]
    ev = _drug_evidence(offtarget_occupancy_max=None)
    assert by_name(gates.drug_safety(ev, drug_ethics), "safety.offtarget_ceiling")["status"] == "NEEDS_HUMAN"


def test_drug_equity_on_expression_groups(drug_ethics):
    ev = {"groups": [{"group_kind": "expression", "group": "low", "metric": "target_occupancy_mean",
                      "effect": 0.01, "ci_low": -0.02, "ci_high": 0.04, "baseline_mean": 0.5}]}
    assert gates.equity(ev, drug_ethics)["status"] == "PASS"
    ev["groups"][0].update(effect=-0.03, ci_low=-0.08)  # maximize: the lower end is the unfavourable one
    g = gates.equity(ev, drug_ethics)
    assert g["status"] == "FAIL" and "expression low" in g["reason"]


def test_approval_gate():
    controls = {"approvers": 2, "signature": False}
    ok = {"decision": "approve", "valid": True, "role": "r"}
    assert gates.approval([], controls, "alice")["status"] == "NEEDS_HUMAN"
    one = [{**ok, "reviewer": "bob"}]
    assert gates.approval(one, controls, "alice")["status"] == "NEEDS_HUMAN"
    # the same person twice, or the author, does not count
    assert gates.approval(one + [{**ok, "reviewer": " Bob "}], controls, "alice")["status"] == "NEEDS_HUMAN"
    assert gates.approval(one + [{**ok, "reviewer": "Alice"}], controls, "alice")["status"] == "NEEDS_HUMAN"
    two = one + [{**ok, "reviewer": "carol"}]
    assert gates.approval(two, controls, "alice")["status"] == "PASS"
    rej = two + [{"decision": "reject", "reviewer": "dan", "role": "r", "reason": "unsafe"}]
    g = gates.approval(rej, controls, "alice")
    assert g["status"] == "FAIL" and "unsafe" in g["reason"]


def test_audit_gate():
    assert gates.audit([], "log")["status"] == "PASS"
    assert gates.audit(["line 3: edited"], "log")["status"] == "FAIL"


def test_disabled_ethics_cannot_pass(good, traffic_cfg):
    e = with_overrides(traffic_cfg.ethics, enabled=False)
    res = gates.evaluate(good, e)
    assert [g["status"] for g in res] == ["NEEDS_HUMAN"]


def test_equity_rules_become_search_constraints(traffic_cfg, drug_ethics):
    c = search_constraints(traffic_cfg.ethics)
    # the absolute origin rule and the relative approach rule (judged against each group's baseline) are handed
    # over; the optional bus-passenger rule is not (its groups may not exist)
    assert c == [{"metric": "mean_delay_s", "group_kind": "origin", "max": 10.0},
                 {"metric": "delay_veh_h", "group_kind": "approach", "max_rel": 0.25}]
    assert search_constraints(drug_ethics) == [{"metric": "target_occupancy_mean", "group_kind": "expression",
                                                "min": -0.05}]
    assert not math.isnan(c[0]["max"])


def test_relative_equity_rule_reaches_the_search_config(traffic_cfg):
    """with_search_constraints appends the relative approach rule to search.constraints (schema-checked), and the
    search reads it as a relative group constraint."""
    from interventions.search_objectives import Constraint, constraints_from
    from twins.ethics import with_search_constraints

    cfg = with_search_constraints(traffic_cfg)
    cs = constraints_from(cfg.search)
    assert Constraint("delay_veh_h", None, None, "approach", None, 0.25, None) in cs
    assert Constraint("mean_delay_s", 10.0, None, "origin", None) in cs
    # judged against each approach's own baseline: +0.3 veh·h is within 25 % of 2.0, not of 1.0
    rel = next(c for c in cs if c.relative)
    eff = {("approach", "a"): {"delay_veh_h": 0.3}}
    assert rel.violation({}, eff, None, {("approach", "a"): {"delay_veh_h": 2.0}}) < 0
    assert rel.violation({}, eff, None, {("approach", "a"): {"delay_veh_h": 1.0}}) > 0


def test_search_space_excludes_plans_unsafe_to_cross(traffic_cfg):
    """The pedestrian floor is handed to the search as a floor on the greens that serve a crossing (the generated
    junction does not say which: every green): the cycle's lower bound rises from 2 greens of 7 s + 10 s lost
    time to 2 greens of the 15.7 s crossing time + 10 s."""
    from interventions._evaluate import TwinEvaluator
    from twins.ethics import pedestrian_green_s, with_search_constraints

    lo = {p.name: p.low for p in TwinEvaluator(traffic_cfg).space}["cycle_s"]
    cfg = with_search_constraints(traffic_cfg)
    lo_safe = {p.name: p.low for p in TwinEvaluator(cfg).space}["cycle_s"]
    assert lo == pytest.approx(10 + 2 * 7.0)
    assert lo_safe == pytest.approx(10 + 2 * pedestrian_green_s(traffic_cfg.ethics), abs=1e-5)
    assert traffic_cfg.intervention.min_green_s == 0.0  # the caller's config is left alone (0: not set)


def test_optional_equity_rule_applies_only_where_its_groups_exist(good, traffic_cfg):
    e = traffic_cfg.ethics  # bus passengers' wait (mode groups) is optional: most scenarios have no buses
    g = gates.equity(good, e)
    assert g["status"] == "PASS" and g["evidence"]["not_applicable"] == ["mode/mean_wait_s"]
    good["groups"].append({"group_kind": "mode", "group": "bus_passengers", "metric": "mean_wait_s", "effect": 20.0,
                           "ci_low": 5.0, "ci_high": 35.0, "n": 4, "baseline_mean": 200.0})
    g = gates.equity(good, e)
    assert g["status"] == "FAIL" and "bus_passengers" in g["reason"]


def test_a_misspelled_direction_is_refused_not_flipped(good, traffic_cfg):
    from twins.core.errors import ConfigError
    from twins.ethics.config import validate

    e = traffic_cfg.ethics
    # a plan that makes delay 7 s worse: read as "maximize", the typo would make it a credible 7 s gain
    worse = {**good, "credibility": {**good["credibility"], "direction": "minimise", "estimate": 7.5,
                                     "held_out": {"effect": 7.0, "ci_low": 6.0, "ci_high": 8.0, "n": 4}}}
    g = gates.credibility(worse, e)
    assert g["status"] == "FAIL" and "'minimise' is neither minimize nor maximize" in g["reason"]
    with pytest.raises(ConfigError, match=r"ethics.credibility.direction='minimise'.*Did you mean 'minimize'"):
        validate(with_overrides(e, credibility__direction="minimise"))
    validate(with_overrides(e, credibility__direction="maximize"))
    # the same typo in an equity rule: an origin 15-25 s worse must not pass the 10 s bound
    typo = with_overrides(e, equity__0__direction="minimise")
    with pytest.raises(ConfigError, match=r"ethics.equity\[0\].direction='minimise'"):
        validate(typo)
    with pytest.raises(ConfigError, match=r"ethics.equity\[0\].direction='minimise'"):
        search_constraints(typo)
    good["groups"][0].update(effect=20.0, ci_low=15.0, ci_high=25.0)
    assert gates.equity(good, typo)["status"] == "FAIL"
    with pytest.raises(ConfigError, match="ethics.credibility.min_effect=-1.0"):
        validate(with_overrides(e, credibility__min_effect=-1.0))


def test_no_stress_runs_is_not_a_pass(good, traffic_cfg):
    from twins.core.errors import ConfigError
    from twins.ethics.config import validate

    e = traffic_cfg.ethics
    good["stress"]["runs"] = []
    g = gates.validity_stress(good, e)
    assert g["status"] == "NEEDS_HUMAN" and "no stress runs" in g["reason"]
    with pytest.raises(ConfigError, match=r"ethics.validity.stress_factors=\[\].*one or more factors"):
        validate(with_overrides(e, validity__stress_factors=[]))
    validate(with_overrides(e, validity__stress_key=None, validity__stress_factors=[]))  # no stress asked for


# --- the pedestrian minimum green on real junctions (issue 18, item 4) ----------------------------------
def _ped(*rows, **kw):
    """Pedestrian evidence with per-phase rows (program, phase, green_s, crossing)."""
    return {"plan": "fixed-time", "phases": [{"program": p, "phase": k, "green_s": g, "crossing": c}
                                             for p, k, g, c in rows], **kw}


def test_pedestrian_green_applies_only_to_phases_that_serve_a_crossing(traffic_cfg):
    from omegaconf import OmegaConf

    s = traffic_cfg.ethics.safety.traffic  # crossing time 14 m / 1.2 m/s + 4 s = 15.7 s
    # a real junction without crossings (RESCO cologne1): its 6 s left-turn greens are not pedestrian phases
    g = gates.pedestrian_green(_ped(("J", 0, 29.0, False), ("J", 2, 6.0, False)), s)
    assert g["status"] == "PASS" and "no phase serves a pedestrian crossing" in g["reason"] and g["hard"]
    # crossings shown green in the through phase only: the 5 s car-only phase after it is not judged
    g = gates.pedestrian_green(_ped(("B1", 0, 31.0, True), ("B1", 1, 5.0, False), ("B1", 3, 37.0, True)), s)
    assert g["status"] == "PASS" and "serving a pedestrian crossing 31.0 s (phase 0 at B1)" in g["reason"]
    assert g["evidence"]["judged"] == 2
    g = gates.pedestrian_green(_ped(("B1", 0, 12.0, True), ("B1", 1, 5.0, False)), s)
    assert g["status"] == "FAIL" and "12.0 s (phase 0 at B1) < pedestrian crossing time 15.7 s" in g["reason"]
    # the network does not say (generated scenarios): every green phase carries a crossing, as before
    g = gates.pedestrian_green(_ped(("J0_0", 0, 25.0, None), ("J0_0", 3, 10.0, None)), s)
    assert g["status"] == "FAIL" and "phase 3 at J0_0" in g["reason"]
    # phases the ethics config names are judged although the network file shows no crossing there
    named = OmegaConf.create({**OmegaConf.to_container(s), "pedestrian_phases": {"J": [2]}})
    g = gates.pedestrian_green(_ped(("J", 0, 29.0, False), ("J", 2, 6.0, False)), named)
    assert g["status"] == "FAIL" and "6.0 s (phase 2 at J)" in g["reason"]
    g = gates.pedestrian_green({"phases": [{"program": "J", "phase": 2, "green_s": 16.0, "crossing": False,
                                            "named": True}]}, s)  # named by the evidence (junction ids)
    assert g["status"] == "PASS" and g["evidence"]["judged"] == 1
    # older evidence (the shortest green only) is judged as it comes
    assert gates.pedestrian_green({"min_green_s": 10.0, "program": "J0_0", "phase": 0}, s)["status"] == "FAIL"
    assert gates.pedestrian_green(None, s)["status"] == "NEEDS_HUMAN"


@pytest.mark.sumo
def test_pedestrian_gate_on_a_generated_sumo_grid_with_crossings(tmp_path, traffic_cfg):
    """netgenerate --crossings.guess: the 37 s phases show the crossings green, the 5 s phases after them do
    not; the gate judges the former and passes (all greens: it would fail on 5 s)."""
    import subprocess
    import warnings

    from interventions.signal_timing import crossing_greens
    from twins.core.worlds import WorldBatch
    from twins.traffic import sumo
    from twins.traffic.demand import Demand, Flow
    from twins.traffic.model import TrafficScenario, TrafficTwin
    from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

    try:
        exe = find_sumo("netgenerate")
    except SumoNotFoundError as e:
        pytest.skip(f"SUMO is not installed ({e})")
    out = tmp_path / "grid.net.xml"
    r = subprocess.run([exe, "--grid", "--grid.number", "2", "--grid.length", "150", "--grid.attach-length", "100",
                        "--default-junction-type", "traffic_light", "--sidewalks.guess", "--crossings.guess",
                        "--seed", "1", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sumo.load_net(out)
    tw = TrafficTwin(TrafficScenario(net, Demand(flows=[Flow("f", [next(iter(net.edges))], rate=60.0)]), "g"),
                     WorldBatch.replications(0, 1), dt=1.0, horizon=30.0)
    ev = crossing_greens(tw)
    s = traffic_cfg.ethics.safety.traffic
    g = gates.pedestrian_green(ev, s)
    assert g["status"] == "PASS" and "serving a pedestrian crossing 37.0 s" in g["reason"], g["reason"]
    short = [r for r in ev["phases"] if r["crossing"] is False]
    assert short and min(r["green_s"] for r in short) < 15.7  # car-only greens exist, and are not judged
    everything = {**ev, "phases": [{**r, "crossing": None} for r in ev["phases"]]}
    assert gates.pedestrian_green(everything, s)["status"] == "FAIL"


def test_search_floor_goes_to_the_greens_that_serve_a_crossing(traffic_cfg):
    """with_search_constraints hands the crossing time to signal_timing as pedestrian_green_s (applied to the
    greens that serve a crossing: tests/interventions/test_signal_timing.py), not as min_green_s for every
    phase; named phases and the validated cycle range go along."""
    import copy

    from twins.ethics import pedestrian_green_s, with_search_constraints

    cfg = with_search_constraints(traffic_cfg)
    assert cfg.intervention.pedestrian_green_s == pytest.approx(pedestrian_green_s(traffic_cfg.ethics), abs=1e-6)
    assert cfg.intervention.min_green_s == 0.0  # the other phases keep their own minimum greens
    assert (cfg.intervention.min_cycle_s, cfg.intervention.max_cycle_s) == (40.0, 150.0)  # validated_range
    named = copy.deepcopy(traffic_cfg)
    named.ethics.safety.traffic.pedestrian_phases = {"J0_0": [0]}
    assert dict(with_search_constraints(named).intervention.pedestrian_phases) == {"J0_0": [0]}
