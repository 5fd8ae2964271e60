"""The external-validity gate (``validity.external``): a plan from a scenario read from SUMO files must hold when
SUMO runs it — the twin's predicted sign under every car-following model, and a ratio realized / predicted of at
least the tier's ``transfer_min_ratio``. Other scenarios: the gate says it does not apply, and why."""
from __future__ import annotations

import copy
import subprocess

import pandas as pd
import pytest
from omegaconf import OmegaConf

from twins.ethics import gates
from twins.ethics.config import as_config, validate
from twins.core.errors import ConfigError

from .conftest import compose_cfg, with_overrides


def transfer_evidence(pred=-6.0, idm=-5.5, krauss=-5.0, seeds=4) -> dict:
    def real(x):
        return {"effect": x, "ci_low": x - 1.0, "ci_high": x + 1.0, "n": seeds}

    return {"applies": True, "metric": "mean_delay_s", "direction": "minimize", "min_ratio": 0.8, "seeds": seeds,
            "car_following": ["IDM", "Krauss"],
            "predicted": {"effect": pred, "ci_low": pred - 1.0, "ci_high": pred + 1.0, "n": 4},
            "realized": {"IDM": real(idm), "Krauss": real(krauss)},
            "ratio": {"IDM": idm / pred, "Krauss": krauss / pred}}


@pytest.fixture
def sumo_good(good):
    ev = copy.deepcopy(good)
    ev["scenario"] = "cologne1"
    ev["transfer"] = transfer_evidence()
    return ev


def test_the_plan_holds_in_sumo_passes(sumo_good, traffic_cfg):
    g = gates.validity_external(sumo_good, traffic_cfg.ethics)
    assert g["status"] == "PASS", g["reason"]
    assert "IDM" in g["reason"] and "Krauss" in g["reason"] and g["evidence"]["required_ratio"] == 0.8
    res = gates.evaluate(sumo_good, traffic_cfg.ethics)
    assert [x["status"] for x in res if x["gate"] == "validity.external"] == ["PASS"]


@pytest.mark.parametrize("idm,krauss,words", [
    (+0.57, -5.0, "opposite sign"),  # cologne1 before the offset fix: worse in SUMO under IDM
    (-5.5, +1.41, "opposite sign"),  # holds under IDM only: every model must agree
    (-5.5, -3.0, "realized only 0.5 of the predicted effect"),  # right sign, too small (3/6 < 0.8)
    (-5.5, float("nan"), "measured no effect"),
])
def test_the_plan_not_holding_in_sumo_fails(sumo_good, traffic_cfg, idm, krauss, words):
    sumo_good["transfer"] = transfer_evidence(idm=idm, krauss=krauss)
    if krauss != krauss:
        sumo_good["transfer"]["ratio"]["Krauss"] = None
    g = gates.validity_external(sumo_good, traffic_cfg.ethics)
    assert g["status"] == "FAIL" and words in g["reason"], g["reason"]


def test_a_plan_predicted_to_harm_fails(sumo_good, traffic_cfg):
    sumo_good["transfer"] = transfer_evidence(pred=+4.0, idm=+4.5, krauss=+3.9)
    g = gates.validity_external(sumo_good, traffic_cfg.ethics)
    assert g["status"] == "FAIL" and "worse" in g["reason"], g["reason"]


def test_the_threshold_is_the_tiers(sumo_good, traffic_cfg):
    sumo_good["transfer"] = transfer_evidence(idm=-5.5, krauss=-4.0)  # ratio 0.67
    assert gates.validity_external(sumo_good, traffic_cfg.ethics)["status"] == "FAIL"
    e = with_overrides(traffic_cfg.ethics, controls__II__transfer_min_ratio=0.6)
    assert gates.validity_external(sumo_good, e)["status"] == "PASS"
    e = with_overrides(traffic_cfg.ethics, controls__II__transfer_min_ratio=None)  # not applied, listed as such
    assert gates.validity_external(sumo_good, e) is None
    assert "validity.external" not in {g["gate"] for g in gates.evaluate(sumo_good, e)}


def test_not_a_sumo_scenario_does_not_apply_and_says_why(good, traffic_cfg):
    g = gates.validity_external(good, traffic_cfg.ethics)
    assert g["status"] == "PASS" and g["reason"].startswith("does not apply:") and "junction" in g["reason"]


def test_missing_or_failed_replay_needs_a_human(sumo_good, traffic_cfg):
    sumo_good["transfer"] = {"applies": True, "metric": "mean_delay_s", "seeds": 4, "car_following": ["IDM"],
                             "skipped": 'SUMO is not installed (... pip install -e ".[sumo]")'}
    g = gates.validity_external(sumo_good, traffic_cfg.ethics)
    assert g["status"] == "NEEDS_HUMAN" and "not installed" in g["reason"]
    sumo_good["transfer"] = {"applies": True, "failed": "RuntimeError: SUMO crashed"}
    assert gates.validity_external(sumo_good, traffic_cfg.ethics)["status"] == "NEEDS_HUMAN"
    del sumo_good["transfer"]  # evidence without the replay is never a silent pass
    assert gates.validity_external(sumo_good, traffic_cfg.ethics)["status"] == "NEEDS_HUMAN"


def test_tier_settings_and_their_checks(traffic_cfg):
    e = as_config(traffic_cfg.ethics)
    assert e.controls.I.transfer_seeds == 2 and e.controls.II.transfer_seeds == 4
    assert all(e.controls[t].transfer_min_ratio == 0.8 for t in ("I", "II", "III", "IV"))
    assert list(e.validity.transfer_car_following) == ["IDM", "Krauss"]
    assert as_config(None).controls.I.transfer_seeds == 2  # the schema's own defaults agree with the YAML
    with pytest.raises(ConfigError, match="transfer_seeds"):
        validate(with_overrides(e, controls__II__transfer_seeds=1))
    with pytest.raises(ConfigError, match="transfer_min_ratio"):
        validate(with_overrides(e, controls__I__transfer_min_ratio=-1.0))


def test_evidence_for_a_generated_scenario_runs_no_sumo(traffic_cfg, monkeypatch):
    from twins.ethics import evidence
    from twins.traffic import sumo_bridge

    monkeypatch.setattr(sumo_bridge, "find_sumo", lambda *a: pytest.fail("SUMO must not run"))
    t = evidence.external_validity(traffic_cfg, "/nonexistent", {"cycle_s": 60.0}, as_config(traffic_cfg.ethics),
                                   "II", pd.DataFrame(), "mean_delay_s", "minimize")
    assert t["applies"] is False and "junction" in t["why"] and "SUMO" in t["why"]


def test_evidence_without_sumo_is_skipped_with_the_extra(monkeypatch, tmp_path):
    from twins.ethics import evidence
    from twins.traffic import sumo_bridge

    cfg = compose_cfg("scenario=sumo", "scenario.net=x.net.xml", "intervention=signal_timing", "ethics=traffic")

    def missing(tool="sumo"):
        raise sumo_bridge.SumoNotFoundError(f"not found. {sumo_bridge.INSTALL_HINT}")

    monkeypatch.setattr(sumo_bridge, "find_sumo", missing)
    t = evidence.external_validity(cfg, tmp_path, {"cycle_s": 60.0}, as_config(cfg.ethics), "II", pd.DataFrame(),
                                   "mean_delay_s", "minimize")
    assert t["applies"] and 'pip install -e ".[sumo]"' in t["skipped"] and t["seeds"] == 4
    assert not list(tmp_path.iterdir())
    assert gates.validity_external({"tier": {"tier": "II"}, "transfer": t}, cfg.ethics)["status"] == "NEEDS_HUMAN"


@pytest.mark.sumo
def test_a_twin_that_is_wrong_fails_the_gate(tmp_path):
    """End to end through SUMO: the plan (60 s -> 150 s) harms in SUMO, but the held-out evidence claims it helps
    (a wrong twin): the realized effect has the opposite sign under both car-following models."""
    from twins.ethics import evidence
    from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

    try:
        netgenerate = find_sumo("netgenerate")
    except SumoNotFoundError as e:
        pytest.skip(f"SUMO is not installed ({e})")
    net, routes = tmp_path / "j60.net.xml", tmp_path / "j.rou.xml"
    subprocess.run([netgenerate, "--grid", "--grid.x-number", "1", "--grid.y-number", "1", "--grid.attach-length",
                    "250", "--default-junction-type", "priority", "--tls.set", "A0", "--tls.cycle.time", "60",
                    "-o", str(net)], check=True, capture_output=True)
    routes.write_text("<routes>\n" + "".join(
        f'<flow id="{a}{b}" from="{a}0A0" to="A0{b}0" begin="0" end="600" vehsPerHour="400"/>\n'
        for a, b in (("top", "bottom"), ("bottom", "top"), ("left", "right"), ("right", "left"))) + "</routes>\n")
    cfg = compose_cfg("scenario=sumo", f"scenario.net={net}", f"scenario.routes={routes}", "scenario.end=600",
                      "intervention=signal_timing", "intervention.cycle_s=150", "ethics=traffic", "progress=false")
    # a wrong twin: 10 s less delay with the longer cycle, on every held-out replication
    worlds = pd.DataFrame({"world": range(8), "replication": [0, 1, 2, 3] * 2, "arm": [0] * 4 + [1] * 4,
                           "mean_delay_s": [30.0] * 4 + [20.0] * 4})
    e = with_overrides(as_config(cfg.ethics), controls__II__transfer_seeds=2)
    t = evidence.external_validity(cfg, tmp_path, {"cycle_s": 150.0}, e, "II", worlds, "mean_delay_s", "minimize")
    assert t["predicted"]["effect"] == pytest.approx(-10.0)
    assert all(t["realized"][cf]["effect"] > 0 for cf in ("IDM", "Krauss")), t["realized"]
    assert (tmp_path / "evidence" / "transfer.json").exists() and (tmp_path / "evidence" / "transfer.png").exists()
    g = gates.validity_external({"tier": {"tier": "II"}, "transfer": t}, e)
    assert g["status"] == "FAIL" and "opposite sign" in g["reason"], g["reason"]
    assert OmegaConf.select(cfg, "scenario.demand_variation") == "poisson"
