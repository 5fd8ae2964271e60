"""Kernels rule 12's time from a SUMO scenario: the .sumocfg's ``time-to-teleport`` (tests/data/sumo/tiny.sumocfg
says -1: never, as SUMO reads it), which the import no longer reports as ignored, unless
``scenario.time_to_teleport_s`` overrides it."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import scenarios
from twins.cli import CONF_DIR
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch

TINY = Path(__file__).resolve().parents[1] / "data" / "sumo" / "tiny.sumocfg"


def _twin(*overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["scenario=sumo", f"scenario.sumocfg={TINY}",
                                                       "scenario.end=300", "progress=false", *overrides])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tw = scenarios.build_twin(cfg, WorldBatch.replications(0, 1), "cpu", torch.float32)
    return tw, " ".join(str(w.message) for w in caught)


def test_the_sumocfgs_time_to_teleport_is_used_and_not_reported_as_ignored():
    tw, msgs = _twin()
    assert tw.teleport_steps is None  # -1 in the file: never
    assert "time-to-teleport" not in msgs
    tw, _ = _twin("scenario.time_to_teleport_s=120")
    assert tw.teleport_steps == 120


def test_a_time_to_teleport_that_is_no_number_is_refused():
    with pytest.raises(ConfigError, match="time_to_teleport_s"):
        _twin("scenario.time_to_teleport_s=nan")
