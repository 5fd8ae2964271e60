"""``scenario.demand_variation`` (issue 17, item 5): a SUMO file's departures re-drawn per replication.

``none`` keeps the file's departures in every replication (as SUMO runs it); ``poisson`` draws each
route's vehicles as a Poisson process at the file's rate per ``demand_interval_s`` interval, keyed by
(seed, replication, stream, flow, k): arms of a replication stay paired, a world's draws do not depend
on its batch, and a null intervention still gives exactly zero effect.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from scenarios.sumo import SumoScenario, load_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic import sumo
from twins.traffic.tables import build_population
from twins.traffic.demand import Demand, Flow, vary
from twins.traffic.model import TrafficScenario, TrafficTwin

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "sumo"

# On tiny.net.xml: route A = WC CE, route B = WC CN. Expected counts per replication (the file's):
# A 150 in [0, 900) and 45 in [900, 1800); one 'slow' vehicle on A; B 2 + 1; the periodic flow 'p' is cut
# by number=30 at 900 s; the Poisson flow 'x' draws 0.01/s over 1800 s = 18 in both modes.
_A_FIRST = [6.0 * i for i in range(150)]
_A_SECOND = [900.0 + 20.0 * i for i in range(45)]


def _routes(tmp_path: Path, with_poisson_flow: bool = True) -> Path:
    veh = [(t, f'<vehicle id="a{i}" type="car" route="A" depart="{t:g}"/>')
           for i, t in enumerate(_A_FIRST + _A_SECOND)]
    veh += [(50.0, '<vehicle id="s0" type="slow" route="A" depart="50"/>')]
    veh += [(t, f'<trip id="b{i}" type="car" depart="{t:g}" from="WC" to="CN"/>')
            for i, t in enumerate([100.0, 400.0, 1000.0])]
    flows = ['<flow id="p" type="car" route="A" begin="0" end="1200" vehsPerHour="120" number="30"/>']
    if with_poisson_flow:
        flows.append('<flow id="x" type="car" route="B" begin="0" end="1800" period="exp(0.01)"/>')
    body = "\n".join(["<routes>", '<vType id="car"/>', '<vType id="slow" maxSpeed="10"/>',
                      '<route id="A" edges="WC CE"/>', '<route id="B" edges="WC CN"/>',
                      *[line for _, line in sorted(veh, key=lambda x: x[0])], *flows, "</routes>"])
    path = tmp_path / ("all.rou.xml" if with_poisson_flow else "fixed.rou.xml")
    path.write_text(body + "\n")
    return path


def _load(routes: Path, variation: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the import's note on what tiny.net.xml leaves out
        return load_scenario(SumoScenario(net=str(DATA / "tiny.net.xml"), routes=str(routes), end=1800.0,
                                          demand_variation=variation, **kw))


def _counts(pop, n_flows: int) -> torch.Tensor:
    """Vehicles per (world, flow) ``[W, F]``."""
    return torch.stack([(pop.flow == i).sum(1) for i in range(n_flows)], 1).double()


# ---------------------------------------------------------------------------------------------
def test_none_is_the_files_departures_bit_for_bit(tmp_path):
    routes = _routes(tmp_path)
    _, demand, _, _ = _load(routes, "none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sumo.load_net(DATA / "tiny.net.xml")
        imported = sumo.load_routes(routes, net)  # the importer's reading, untouched by demand_variation
    # the same flows, which the scenario also groups by their entry edge (per-origin outcomes; WC here)
    assert [replace(f, group="") for f in demand.flows] == imported.flows and demand.vtypes == imported.vtypes
    assert {f.group for f in demand.flows} == {"WC"}
    assert [f.kind for f in demand.flows] == ["fixed", "fixed", "fixed", "periodic", "poisson"]
    pop = build_population(demand, 3, torch.arange(4))
    # every replication: the same departures of the given vehicles (the file's) and of the periodic flow
    for i in range(4):
        assert all(torch.equal(pop.depart[0][pop.flow[0] == i], pop.depart[w][pop.flow[w] == i]) for w in (1, 2, 3))
    assert pop.depart[0][pop.flow[0] == 0].tolist() == sorted(_A_FIRST + _A_SECOND)
    assert pop.depart[2][pop.flow[2] == 3].tolist() == [30.0 * k for k in range(30)]  # 120/h, number=30
    # SumoScenario's own default is none: code that loads a scenario directly gets the file as SUMO runs it
    assert SumoScenario().demand_variation == "none"


def test_poisson_rate_matches_the_file_over_many_replications(tmp_path):
    _, demand, _, _ = _load(_routes(tmp_path), "poisson")
    assert [f.kind for f in demand.flows] == ["poisson"] * 5
    a = demand.flows[0]
    assert a.profile == [(0.0, 900.0, 600.0), (900.0, 1800.0, 180.0)]  # 150 and 45 vehicles per 900 s
    expected = torch.tensor([195.0, 1.0, 3.0, 30.0, 18.0], dtype=torch.float64)
    assert [f.expected_count() for f in demand.flows] == pytest.approx(expected.tolist())
    R = 400
    pop = build_population(demand, 11, torch.arange(R))
    n = _counts(pop, 5)
    # a count per replication is Poisson(N): its mean over R replications has sd sqrt(N / R); 5 sd leaves
    # a false alarm chance of 6e-7 per flow
    se = (expected / R).sqrt()
    assert ((n.mean(0) - expected).abs() < 5 * se).all(), (n.mean(0), expected)
    # the departures are drawn, not fixed: the variance over replications is the Poisson one (= the mean);
    # the sample variance / N has relative sd ~ sqrt((1/N + 2) / (R - 1))
    for i in (0, 3, 4):
        tol = 5 * math.sqrt((1 / expected[i].item() + 2) / (R - 1))
        assert abs(n[:, i].var().item() / expected[i].item() - 1) < tol, (i, n[:, i].var())
    # the file's time profile is kept: route A's count per interval, and nothing outside its intervals
    t = torch.where(pop.flow == 0, pop.depart, torch.nan)
    first, second = (t < 900).sum(1).double(), ((t >= 900) & (t < 1800)).sum(1).double()
    assert abs(first.mean().item() - 150) < 5 * math.sqrt(150 / R)
    assert abs(second.mean().item() - 45) < 5 * math.sqrt(45 / R)
    assert int((first + second).sum()) == int(n[:, 0].sum())  # every drawn departure of A is in [0, 1800)
    # the periodic flow cut by number=30: its window ends where 30 vehicles are expected (900 s at 120/h)
    assert demand.flows[3].profile == [(0.0, 900.0, 120.0)] and demand.flows[3].number is None
    assert float(pop.depart[pop.flow == 3].max()) < 900.0


def test_poisson_replications_differ_but_flows_already_random_keep_their_draws(tmp_path):
    routes = _routes(tmp_path)
    _, none, _, _ = _load(routes, "none")
    _, pois, _, _ = _load(routes, "poisson")
    reps = torch.tensor([0, 1])
    pn, pp = build_population(none, 5, reps), build_population(pois, 5, reps)
    # given vehicles: two replications now differ (in their departure times, here also in the count)
    a0, a1 = (pp.depart[w][pp.flow[w] == 0] for w in (0, 1))
    assert a0.numel() != a1.numel() or not torch.equal(a0, a1)
    # the file's own Poisson flow (index 4 in both) draws exactly the same departures in both modes
    for w in (0, 1):
        assert torch.equal(pn.depart[w][pn.flow[w] == 4], pp.depart[w][pp.flow[w] == 4])


def test_same_replication_same_departures_in_every_arm_and_batch_position(tmp_path):
    net, demand, begin, _ = _load(_routes(tmp_path), "poisson")
    scen = TrafficScenario(net, demand, "dv", begin=begin)
    # replication 5 in arm 0 and arm 1, at batch positions 0 and 2, next to other replications
    batch = WorldBatch(7, torch.tensor([5, 3, 5, 9]), torch.tensor([0, 0, 1, 0]))
    alone = WorldBatch(7, torch.tensor([5]), torch.tensor([0]))
    tb = TrafficTwin(scen, batch, dt=1.0, horizon=60.0)
    ta = TrafficTwin(scen, alone, dt=1.0, horizon=60.0)
    for key in ("depart", "vehicle_id", "flow"):
        b, a = getattr(tb.pop, key), getattr(ta.pop, key)
        assert torch.equal(b[0], b[2]), key  # two arms of one replication
        assert torch.equal(b[0], a[0]), key  # alone or in a batch of four
    assert not torch.equal(tb.pop.depart[0], tb.pop.depart[1])  # another replication draws its own
    assert torch.equal(tb.drivers.speed_factor[0], ta.drivers.speed_factor[0])


def test_null_intervention_gives_exactly_zero_effect(tmp_path):
    from hydra import compose, initialize_config_dir

    import interventions
    import scenarios
    from twins.cli import CONF_DIR
    from twins.core import runner

    base = ["scenario=sumo", f"scenario.sumocfg={DATA / 'tiny.sumocfg'}", "scenario.end=600", "replications=3",
            "output.figures=false", "progress=false"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[*base, "intervention=signal_timing"])
    assert cfg.scenario.demand_variation == "poisson"  # what scenario=sumo runs unless told otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tw = scenarios.build_twin(cfg, WorldBatch.replications(0, 1), "cpu", torch.float32)
    assert {f.kind for f in tw.scenario.demand.flows} == {"poisson", "bernoulli"}  # the file's vehicles drawn
    same = interventions.get(cfg.intervention).baseline(tw)
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[*base, "intervention=signal_timing",
                                                       f"intervention.cycle_s={same['cycle_s']}",
                                                       f"intervention.green_split={same['green_split']}"])
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.run(cfg, out)
    eff = pd.read_parquet(out / "effects.parquet")
    measured = eff[eff["n"] > 0]
    assert len(measured) and (measured["effect"] == 0.0).all(), measured[measured["effect"] != 0.0]
    w = pd.read_parquet(out / "worlds.parquet")
    a0 = w[w["arm"] == 0].drop(columns=["world", "arm"]).reset_index(drop=True)
    a1 = w[w["arm"] == 1].drop(columns=["world", "arm"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    assert a0["vehicles_loaded"].nunique() > 1  # not vacuous: the replications' demand differs


def test_bad_values_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match=r"scenario\.demand_variation='posson'.*none or poisson"):
            load_scenario(SumoScenario(sumocfg=str(DATA / "tiny.sumocfg"), demand_variation="posson"))
    for bad in (0.0, math.inf):  # refused before the files are read (no import warning)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ConfigError, match=r"scenario\.demand_interval_s"):
                load_scenario(SumoScenario(sumocfg=str(DATA / "tiny.sumocfg"), demand_variation="poisson",
                                           demand_interval_s=bad))
    for bad in ("avgg", "-3"):  # scenario.default_depart_speed (SUMO's --default.departspeed), before any file
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(ConfigError, match=r"scenario\.default_depart_speed.*0, avg"):
                load_scenario(SumoScenario(sumocfg=str(DATA / "tiny.sumocfg"), default_depart_speed=bad))


def test_cli_names_field_value_and_choices(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run([sys.executable, "-m", "twins", "run", "scenario=sumo",
                        f"scenario.sumocfg={DATA / 'tiny.sumocfg'}", "scenario.demand_variation=posson",
                        f"hydra.run.dir={tmp_path}/bad"],
                       capture_output=True, text=True, env=env, timeout=240)
    msg = r.stderr + r.stdout
    assert r.returncode != 0
    line = next((x for x in msg.splitlines() if x.startswith("twins: error")), "")
    for part in ("scenario.demand_variation", "'posson'", "none or poisson", "Did you mean 'poisson'"):
        assert part in line, f"{part!r} not in: {msg[-800:]}"
    assert "Traceback" not in msg


# ---------------------------------------------------------------------------------------------
def test_an_interval_split_at_end_and_scaling_after_variation():
    d = Demand(flows=[Flow("g", ["e"], kind="fixed", departures=[100.0, 950.0, 1200.0])])
    v = vary(d, "poisson", begin=0.0, end=1000.0, interval_s=900.0)
    # 950 s and 1200 s share the interval [900, 1800) but lie on either side of the end: counted apart
    assert v.flows[0].profile == [(0.0, 900.0, 4.0), (900.0, 1000.0, 36.0), (1000.0, 1800.0, 4.5)]
    assert v.flows[0].expected_count() == pytest.approx(3.0)
    assert vary(d, "none") is d
    with pytest.raises(ConfigError, match="none or poisson"):
        vary(d, "Poisson")


def test_demand_scale_multiplies_the_drawn_rate(tmp_path):
    routes = _routes(tmp_path)
    _, pois, _, _ = _load(routes, "poisson")
    _, half, _, _ = _load(routes, "poisson", demand_scale=0.5)
    assert [f.expected_count() for f in half.flows] == pytest.approx([f.expected_count() / 2 for f in pois.flows])


def test_the_ethics_review_says_when_replications_share_every_departure(tmp_path):
    from twins.ethics import gates
    from twins.ethics.evidence import shared_departures

    def note(routes, variation):
        return shared_departures(SimpleNamespace(scenario=SimpleNamespace(demand=_load(routes, variation)[1])))

    fixed, mixed = _routes(tmp_path, with_poisson_flow=False), _routes(tmp_path)
    said = note(fixed, "none")
    assert said and "share every departure" in said and "demand_variation=none" in said
    assert note(fixed, "poisson") is None  # drawn per replication
    assert note(mixed, "none") is None  # the file's Poisson flow varies between replications
    ev = {"tier": {"tier": "II", "score": 3}, "controls": {"held_out_replications": 4, "approvers": 1,
                                                           "signature": False},
          "held_out": {"first": 20000, "replications": 4, "note": said}}
    g = gates.impact_tier(ev, None)
    assert g["status"] == "PASS" and said in g["reason"]
    del ev["held_out"]["note"]
    assert "share every departure" not in gates.impact_tier(ev, None)["reason"]
