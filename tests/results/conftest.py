"""Small, real results folders for the results loader and the plotting helpers: each is written by the
same code the CLI runs (the run task, the search task, a Hydra multirun), on tiny configs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR  # registers the structured configs

ROOT = Path(__file__).resolve().parents[2]
QUIET = ["progress=false", "ethics.enabled=false"]


def compose_cfg(folders, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose(config_name="config", overrides=[*QUIET, *_audit(folders), *overrides])


def _audit(folders) -> list[str]:
    """Keep the ethics audit log (appended to even when the review is off) out of the repository."""
    return [f"ethics.audit.log={folders / 'audit.jsonl'}"]


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def ring_run(folders):
    """The ring (stop-and-go waves) with trajectories and figures."""
    from twins.core import runner

    out = folders / "ring"
    runner.run(compose_cfg(folders, "scenario=ring", "horizon_s=240", "replications=1",
                           "output.trajectory_every=2"), out)
    return out


@pytest.fixture(scope="session")
def junction_sweep(folders):
    """A real multirun (Hydra's launcher and the sweep-summary callback): signal timing, two cycles."""
    out = folders / "sweep"
    cmd = [sys.executable, "-m", "twins", "run", "-m", "scenario=junction", "intervention=signal_timing",
           "intervention.cycle_s=60,90", "replications=2", "horizon_s=300", *QUIET, *_audit(folders),
           f"hydra.sweep.dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run(cmd, cwd=folders, capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def junction_search(folders):
    """A two-objective search (delay down, throughput up) with held-out confirmation."""
    from interventions.search_config import search_from_config

    out = folders / "search"
    search_from_config(compose_cfg(
        folders, "scenario=junction", "intervention=signal_timing", "replications=2", "horizon_s=300",
        "search.budget=4", "search.batch=4", "search.sampler=random", "search.params=[cycle_s]",
        "search.confirm.top=2", "search.confirm.replications=2",
        "search.objectives=[{metric: mean_delay_s, direction: minimize},"
        "{metric: throughput_veh, direction: maximize}]"), out)
    return out


@pytest.fixture(scope="session")
def drug_run(folders):
    """The molecular twin, a higher dose against the scenario's (drug_design), a few µs."""
    from twins.core import runner

    out = folders / "drug"
    runner.run(compose_cfg(folders, "scenario=molecular", "scenario.horizon=1", "replications=2",
                           "intervention=drug_design", "intervention.dose=300"), out)
    return out
