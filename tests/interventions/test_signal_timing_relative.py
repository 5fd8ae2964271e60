"""``signal_timing``'s relative cycle and split (``cycle_scale``, ``green_split_shift``) on a network whose
junctions have different cycles (as RESCO's cologne8: 72 s and 90 s), and the search's baseline trial."""
from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from interventions.search_space import baseline_point
from interventions.signal_timing import SignalTiming
from scenarios.traffic import ArterialScenario, grid_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin
from twins.traffic.network import Phase

# J0_0: 72 s (greens 31/31, split 0.5); J0_1: 90 s (greens 50/30, split 0.625); 3 s yellow + 2 s all red each
PLANS = {"J0_0": (31.0, 31.0), "J0_1": (50.0, 30.0)}
MIN_DUR, MAX_DUR = 5.0, 60.0


def _two_cycle_twin(arms=1, plans=PLANS):
    s = grid_scenario(OmegaConf.structured(ArterialScenario(cols=2)), 300.0)
    for pid, (g1, g2) in plans.items():
        prog = s.network.programs[pid]
        old = prog.phases
        prog.phases = [Phase(g1, old[0].state, min_dur=MIN_DUR, max_dur=MAX_DUR), Phase(3.0, old[1].state),
                       Phase(2.0, old[2].state), Phase(g2, old[3].state, min_dur=MIN_DUR, max_dur=MAX_DUR),
                       Phase(3.0, old[4].state), Phase(2.0, old[5].state)]
    return TrafficTwin(s, WorldBatch.replications(0, 1, arms=arms), dt=1.0, horizon=300.0)


def _row(d, p):  # durations of program p (0: J0_0, 1: J0_1), without the zero padding
    return [float(x) for x in d[p] if float(x) > 0]


def test_unequal_cycles_search_the_relative_form_and_the_baseline_is_a_point():
    tw = _two_cycle_twin()
    iv = SignalTiming()
    assert iv.relative(tw)
    space = [q for q in iv.parameters(tw) if "." not in q.name]  # what a search explores by default
    names = {q.name for q in space}
    assert {"cycle_scale", "green_split_shift", "offset_s", "offset_step_s"} <= names
    assert not names & {"cycle_s", "green_split"}  # no absolute value is the scenario's own here
    sc = next(q for q in space if q.name == "cycle_scale")
    # low: min_cycle_scale 0.5 (the greens' minimums need 20/72 and 20/90); high: J0_1's 10 + 2x60 s = 130 s / 90 s
    assert sc.baseline == 1.0 and sc.low == 0.5 and sc.high == pytest.approx(130 / 90)
    point, why = baseline_point(space)
    assert why is None and point["cycle_scale"] == 1.0 and point["green_split_shift"] == 0.0
    # ... and it is the scenario's programs, bit for bit
    dur, off = iv.plan(iv.validate(point, tw), tw)
    assert torch.equal(dur, tw.net_cpu.phase_durations.detach().cpu().double())
    assert torch.equal(off, tw.net_cpu.program_offset.detach().cpu().double())
    # with the absolute form forced, the baseline is no point of the space (the reason the relative one exists)
    forced = [q for q in SignalTiming({"relative_timing": False}).parameters(tw) if "." not in q.name]
    assert baseline_point(forced)[0] is None and "cycle_s" in baseline_point(forced)[1]


def test_scale_one_reproduces_the_files_programs_and_scale_s_multiplies_every_cycle():
    tw = _two_cycle_twin(arms=4)
    iv = SignalTiming()
    iv.apply(tw, [None, {"cycle_scale": 1.0}, {"cycle_scale": 1.25}, {"cycle_scale": 0.6}])
    d = tw.worlds.params["signal_durations"].cpu()  # [W, P, K]: one world per arm
    assert torch.equal(d[0], d[1])  # scale 1.0: the file's programs exactly
    assert _row(d[1], 0) == [31.0, 3.0, 2.0, 31.0, 3.0, 2.0] and _row(d[1], 1) == [50.0, 3.0, 2.0, 30.0, 3.0, 2.0]
    for arm, s in ((2, 1.25), (3, 0.6)):
        for p, c in ((0, 72.0), (1, 90.0)):
            r = _row(d[arm], p)
            assert sum(r) == pytest.approx(s * c, abs=0.5)  # every junction's own cycle x s, in whole seconds
            assert all(x == round(x) for x in r)
            assert [r[1], r[2], r[4], r[5]] == [3.0, 2.0, 3.0, 2.0]  # yellow / all red kept
            assert MIN_DUR - 1e-9 <= min(r[0], r[3]) and max(r[0], r[3]) <= MAX_DUR + 1e-9
    # own split kept where it fits (x 0.6: 44 s of green in 5:3, 27.5 / 16.5 s), to the second
    assert [_row(d[3], 1)[0], _row(d[3], 1)[3]] == [28.0, 16.0]
    assert _row(d[2], 1)[0] == pytest.approx(60.0)  # x 1.25: 64 s in 5:3 > maxDur 60 s, projected
    # a scale at which a proportional green leaves [minDur, maxDur] is projected onto it (repair: true):
    # J0_1 at 1.4 x 90 = 126 s: greens 116 s in 5:3 would give 72.5 s > maxDur 60 -> 60 / 56 s
    dur = iv.plan(iv.validate({"cycle_scale": 1.4}, tw), tw)[0]
    assert _row(dur, 1) == pytest.approx([60.0, 3.0, 2.0, 56.0, 3.0, 2.0])
    assert _row(dur, 0) == [46.0, 3.0, 2.0, 45.0, 3.0, 2.0]  # 45.4 s each, 91 s in whole seconds
    # per junction: J0_1 alone
    dur = iv.plan(iv.validate({"J0_1.cycle_scale": 0.8}, tw), tw)[0]
    assert _row(dur, 0) == [31.0, 3.0, 2.0, 31.0, 3.0, 2.0] and sum(_row(dur, 1)) == pytest.approx(72.0)


def test_split_shift_moves_each_programs_own_split():
    tw = _two_cycle_twin()
    iv = SignalTiming()
    assert torch.equal(iv.plan(iv.validate({"green_split_shift": 0.0}, tw), tw)[0],
                       tw.net_cpu.phase_durations.detach().cpu().double())
    dur = iv.plan(iv.validate({"green_split_shift": 0.5, "cycle_scale": 1.0}, tw), tw)[0]
    for p, (g1, g2) in enumerate(PLANS.values()):
        r = _row(dur, p)
        want = 1 / (1 + math.exp(-(math.log(g1 / g2) + 0.5)))
        # in whole seconds: the shifted split's green within half a second, the total kept
        assert r[0] == pytest.approx(want * (g1 + g2), abs=0.5) and r[0] + r[3] == pytest.approx(g1 + g2)


def test_equal_cycles_keep_the_absolute_parameters():
    """The generated scenarios (every junction the same program) keep cycle_s / green_split, as before."""
    tw = _two_cycle_twin(plans={"J0_0": (31.0, 31.0), "J0_1": (31.0, 31.0)})
    iv = SignalTiming()
    assert not iv.relative(tw)
    names = {q.name for q in iv.parameters(tw) if "." not in q.name}
    assert {"cycle_s", "green_split"} <= names and not names & {"cycle_scale", "green_split_shift"}
    # a run may still set the relative form; forced relative, the baseline is a point too
    assert sum(_row(iv.plan(iv.validate({"cycle_scale": 1.25}, tw), tw)[0], 1)) == pytest.approx(90.0)
    rel = [q for q in SignalTiming({"relative_timing": True}).parameters(tw) if "." not in q.name]
    assert baseline_point(rel)[0]["cycle_scale"] == 1.0


def test_bad_scales_are_refused_naming_the_field_the_value_and_what_is_valid():
    tw = _two_cycle_twin()
    iv = SignalTiming()
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale=3\.0 .*a number in \[0\.5, 1\.44444\] x"):
        iv.validate({"cycle_scale": 3.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale=-1\.0"):
        iv.validate({"cycle_scale": -1.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale.*nan|intervention\.cycle_scale"):
        iv.validate({"cycle_scale": float("nan")}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale=1\.2 .*unset when cycle_s is set"):
        iv.validate({"cycle_s": 80.0, "cycle_scale": 1.2}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.J0_1\.cycle_scale=1\.1 .*unset when J0_1\.cycle_s is set"):
        iv.validate({"J0_1.cycle_s": 80.0, "J0_1.cycle_scale": 1.1}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.green_split_shift=4\.0.*\[-3, 3\]"):
        iv.validate({"green_split_shift": 4.0}, tw)
    # per junction: that junction's own range (J0_0: 130 s / 72 s)
    with pytest.raises(ConfigError, match=r"intervention\.J0_0\.cycle_scale=0\.1 .*\[0\.5, 1\.80556\]"):
        iv.validate({"J0_0.cycle_scale": 0.1}, tw)
    assert iv.validate({"J0_0.cycle_scale": 1.8}, tw) == {"J0_0.cycle_scale": 1.8}
    # repair: false refuses a scale whose proportional greens leave their bounds, naming the scale
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale=1\.4 .*J0_1.*126 s.*needs <= 60 s"):
        SignalTiming({"repair": False}).validate({"cycle_scale": 1.4}, tw)
    for fld, v, valid in (("min_cycle_scale", 0.0, r"\(0, 1\]"), ("min_cycle_scale", 1.5, r"\(0, 1\]"),
                          ("max_cycle_scale", 0.8, ">= 1"), ("relative_timing", "yes", "true, false or null")):
        with pytest.raises(ConfigError, match=rf"intervention\.{fld}=.*{valid}"):
            SignalTiming({fld: v})
    with pytest.raises(ConfigError, match=r"intervention\.cycle_scale=1\.2 .*cycle_s=90"):
        SignalTiming({"cycle_s": 90.0, "cycle_scale": 1.2})
