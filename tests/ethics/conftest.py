import copy
import shutil
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from twins.cli import CONF_DIR  # registers the structured configs


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def traffic_cfg():
    """The composed run config with ethics=traffic (scenario junction, intervention signal_timing)."""
    return compose_cfg("scenario=junction", "intervention=signal_timing", "intervention.cycle_s=60", "ethics=traffic")


@pytest.fixture(scope="session")
def drug_ethics():
    return compose_cfg("ethics=drug").ethics


def traffic_evidence() -> dict:
    """Evidence that passes every traffic gate (the shape twins.ethics.evidence.gather returns)."""
    return {
        "kind": "traffic", "source": "run", "scenario": "junction", "intervention": "signal_timing",
        "policy": {"cycle_s": 60.0}, "label": "signal_timing(cycle_s=60)",
        "provenance": {"owner": {"name": "City", "role": "signal authority", "organisation": "Testville"},
                       "stakeholders": ["residents"], "rationale": "less delay", "date": "2026-11-01",
                       "weights": {}, "objective": {"objectives": [{"metric": "mean_delay_s",
                                                                     "direction": "minimize"}]},
                       "objective_hash": "ab" * 32},
        "tier": {"tier": "II", "score": 3, "points": {}, "floor": ""},
        "controls": {"approvers": 1, "held_out_replications": 4, "signature": False},
        "held_out": {"first": 20000, "replications": 4},
        "credibility": {"metric": "mean_delay_s", "direction": "minimize", "estimate": -9.0, "estimate_source": "run",
                        "held_out": {"effect": -7.0, "ci_low": -8.0, "ci_high": -6.0, "n": 4,
                                     "baseline_mean": 30.0, "treated_mean": 23.0}},
        "network": [{"metric": "mean_delay_s", "effect": -7.0, "ci_low": -8.0, "ci_high": -6.0, "n": 4,
                     "baseline_mean": 30.0, "treated_mean": 23.0}],
        "groups": [
            {"group_kind": "origin", "group": "N", "metric": "mean_delay_s", "effect": -5.0, "ci_low": -7.0,
             "ci_high": -3.0, "n": 4, "baseline_mean": 30.0},
            {"group_kind": "approach", "group": "N0_J0_0", "metric": "delay_veh_h", "effect": -0.1,
             "ci_low": -0.2, "ci_high": 0.05, "n": 4, "baseline_mean": 1.0},
        ],
        "levels": {}, "baseline_levels": {},
        "params": {"values": {"cycle_s": 60.0}, "bounds": {"cycle_s": [24.0, 180.0]}},
        "traffic": {"approach_p95": [{"approach": "N0_J0_0", "p95_mean": 30.0, "ci_low": 25.0, "ci_high": 35.0,
                                      "n": 4, "baseline_p95_mean": 50.0}],
                    "stuck": {"max": 0, "baseline_max": 0, "per_world": [0, 0, 0, 0], "after_s": 300.0},
                    "pedestrian": {"min_green_s": 25.0, "program": "J0_0", "phase": 0, "plan": "fixed-time"}},
        "reproducibility": {"null": {"identical": True, "max_abs_diff": 0.0, "worst_metric": None, "worlds": 2},
                            "rerun": {"identical": True, "max_abs_diff": 0.0, "worst_metric": None, "worlds": 4}},
        "stress": {"key": "scenario.demand_scale", "base": 1.0, "metric": "mean_delay_s", "nominal": -7.0,
                   "runs": [{"factor": 0.8, "effect": -5.0, "ci_low": -6.0, "ci_high": -4.0, "n": 2},
                            {"factor": 1.2, "effect": -9.0, "ci_low": -11.0, "ci_high": -7.0, "n": 2}]},
    }


@pytest.fixture
def good():
    return copy.deepcopy(traffic_evidence())


def with_overrides(e, **dotted):
    e = copy.deepcopy(e)
    for k, v in dotted.items():
        OmegaConf.update(e, k.replace("__", "."), v, force_add=False)
    return e


# --- throwaway SSH keys ---------------------------------------------------------------------------------
def keygen(path, comment: str):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path


needs_ssh = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH) not installed")
