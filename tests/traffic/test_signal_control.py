"""Signal control as Mesa agents (twins.traffic.signals, issue 21 item 5): the scenario's programs are a
``ProgramControl`` agent stepped by ``model.signal_controls.do("step")``; ``scenario.signal_control`` adds a
user's ``SignalControl`` subclass after it, by config, through the CLI. The default changes no number; a control
that shows what the programs show changes none either; one that holds every light red holds every vehicle; bad
specifications are refused naming the field; the README's example control runs as written and keeps worlds
independent of their batch."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import ROOT
from twins.cli import CONF_DIR
from twins.core import pipeline
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, signals

BASE = ["scenario=junction", "horizon_s=300", "replications=2", "output.figures=false", "progress=false"]


def _cfg(*over):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=[*BASE, *over])


def _run(*over, worlds=None):
    tw = pipeline.make_twin(_cfg(*over), worlds)
    res = tw.run(progress=False)
    return tw, res


def test_the_programs_are_a_mesa_agent_the_model_steps():
    tw, _ = _run()
    assert len(tw.signal_controls) == 1 and isinstance(list(tw.signal_controls)[0], signals.ProgramControl)
    assert list(tw.signal_controls)[0] in tw.agents  # a registered Mesa agent of the twin


def test_a_control_that_changes_nothing_changes_no_number():
    _, a = _run()
    tw, b = _run("scenario.signal_control=tests.traffic._controls:Unchanged")
    assert [type(c).__name__ for c in tw.signal_controls] == ["ProgramControl", "Unchanged"]
    pd.testing.assert_frame_equal(a.worlds, b.worlds, check_exact=True)
    pd.testing.assert_frame_equal(a.tables["trips"], b.tables["trips"], check_exact=True)


def test_a_control_that_holds_every_light_red_holds_every_vehicle():
    _, base = _run()
    _, red = _run("scenario.signal_control=tests.traffic._controls:RedFirstTwoMinutes")
    arrived = lambda r: r.tables["trips"]["arrive_s"].dropna()  # noqa: E731
    assert arrived(base).min() < 120.0  # without it, vehicles cross the junction within two minutes
    assert arrived(red).min() > 120.0  # with it, none does: every route crosses the signalized junction
    assert (red.worlds["mean_delay_s"] > base.worlds["mean_delay_s"]).all()


@pytest.mark.parametrize("spec, says", [
    ("no_such_module:X", "could not be imported"),
    ("tests.traffic._controls:Missing", "has no 'Missing'"),
    ("tests.traffic._controls:NotAControl", "is not a SignalControl subclass"),
    ("justaname", "e.g. scenario.signal_control=my_control:AllRed"),
])
def test_a_bad_control_is_refused_naming_the_field(spec, says):
    with pytest.raises(ConfigError, match="scenario.signal_control") as e:
        _run(f"scenario.signal_control={spec}")
    assert says in str(e.value)


def test_codes_of_the_wrong_shape_are_refused_on_the_first_step():
    tw = pipeline.make_twin(_cfg("scenario.signal_control=tests.traffic._controls:WrongShape"))
    with pytest.raises(ConfigError, match=r"WrongShape.codes returned \(2, 1\)"):
        tw.step()


def test_the_readme_example_control_runs_through_the_cli_and_keeps_worlds_independent(tmp_path):
    """The README's example as written: ``cd examples && python -m twins run scenario=junction
    scenario.signal_control=my_control:LongestQueueFirst`` (shorter here), then the same control in a batch."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "twins", "run", "scenario=junction",
           "scenario.signal_control=my_control:LongestQueueFirst", "horizon_s=300", "replications=2",
           "output.figures=false", "progress=false", f"hydra.run.dir={tmp_path / 'lqf'}"]
    done = subprocess.run(cmd, cwd=ROOT / "examples", env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lqf = pd.read_parquet(tmp_path / "lqf" / "worlds.parquet")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        _, base = _run()
        assert not np.array_equal(lqf["mean_delay_s"].to_numpy(), base.worlds["mean_delay_s"].to_numpy())
        # batch independence: replication 1 alone equals replication 1 among three
        alone = _run("scenario.signal_control=my_control:LongestQueueFirst",
                     worlds=WorldBatch(0, torch.tensor([1]), torch.zeros(1, dtype=torch.int64)))[1].worlds
        among = _run("scenario.signal_control=my_control:LongestQueueFirst",
                     worlds=WorldBatch(0, torch.tensor([2, 1, 0]), torch.zeros(3, dtype=torch.int64)))[1].worlds
    finally:
        sys.path.remove(str(ROOT / "examples"))
    metrics = ["mean_delay_s", "mean_travel_time_s", "throughput_veh"]
    np.testing.assert_array_equal(alone[metrics].to_numpy()[0], among[metrics].to_numpy()[1])
    # and the CLI's run is the same computation: replication 1 there
    np.testing.assert_array_equal(lqf.sort_values("replication")[metrics].to_numpy()[1], alone[metrics].to_numpy()[0])


def test_fixed_time_codes_held_between_phase_ends_are_the_codes_of_every_step():
    """On the CPU the programs' codes are computed again only when a phase ends (or the plan changes): every step
    they equal a fresh computation, with offsets and durations off the step grid, and a plan changed in place or
    replaced between steps is seen at once."""
    tw = pipeline.make_twin(_cfg(), WorldBatch.replications(0, 3))
    control = list(tw.signal_controls)[0]
    d = tw.signal_durations.clone()
    d[1] *= 1.37  # world 1 on another cycle, off whole seconds
    tw.signal_durations = d
    tw.signal_offsets = tw.signal_offsets + torch.tensor([[0.0], [0.25], [7.5]], dtype=torch.float64)
    net = tw.net

    def fresh(t):
        return kernels.signal_codes(t, tw.signal_durations, tw.signal_offsets, net.phase_code, net.link_program,
                                    net.link_local)
    recomputed = 0
    for k in range(400):
        t = tw.begin + k * 0.5
        before = control._held
        assert torch.equal(control.fixed_time(t), fresh(t)), t
        recomputed += control._held is not before
        if k == 150:  # a plan changed in place ...
            tw.signal_durations.mul_(0.9)
        if k == 250:  # ... or replaced
            tw.signal_offsets = tw.signal_offsets + 3.0
    assert 0 < recomputed < 200  # held between phase ends, not computed every step
