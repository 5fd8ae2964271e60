"""A small calibration problem made with SUMO: a 3x3 signalized netgenerate grid, a "true" demand (Poisson
route flows per 15 minutes), counts from one SUMO run of it, and a deliberately wrong prior route file.
Everything is built once per session; tests that need SUMO skip, with the reason, when it is absent."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.traffic_sumo.conftest import _tool  # one place finds SUMO's tools, or skips

H, WIDTH = 1800.0, 900.0  # the day: 30 minutes, counts per 15 minutes
OBS_SEED, HELDOUT_SEED = 1, 7


@pytest.fixture(scope="session")
def problem(tmp_path_factory) -> dict:
    """Files and tables of the calibration problem (see the module docstring)."""
    from scenarios.sumo import fringe_demand
    from twins.calibration.sumo_files import sumo_counts, write_sumocfg
    from twins.traffic import sumo as ts
    from twins.traffic.demand import Demand, Flow

    d = tmp_path_factory.mktemp("calibration")
    net = d / "grid.net.xml"
    r = subprocess.run([_tool("netgenerate"), "--grid", "--grid.number", "3", "--grid.length", "200",
                        "--grid.attach-length", "150", "--default-junction-type", "traffic_light", "--seed", "1",
                        "-o", str(net)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _tool("sumo")
    network = ts.load_net(net)
    base = fringe_demand(network, 200.0, H, turn_share=0.3)  # 24 routes, fringe to fringe
    rng = np.random.default_rng(0)
    truth, prior = [], []
    for f in base.flows:
        prof = [(0.0, WIDTH, f.rate * rng.lognormal(0.0, 0.5)), (WIDTH, H, f.rate * rng.lognormal(0.0, 0.5))]
        truth.append(Flow(f.id, f.route, f.rate, 0.0, H, "poisson", "car", profile=prof))
        # the prior: 30 % too much on average, and route by route wrong (its own lognormal factor)
        prior.append(Flow(f.id, f.route, 1.3 * f.rate * rng.lognormal(0.0, 0.5), 0.0, H, "periodic", "car"))
    truth_d, prior_d = Demand(base.vtypes, truth), Demand(base.vtypes, prior)
    ts.write_routes(truth_d, d / "truth.rou.xml")
    ts.write_routes(prior_d, d / "prior.rou.xml")
    write_sumocfg(d / "truth.sumocfg", net=str(net), routes="truth.rou.xml", additional=[], begin=0.0, end=H)
    write_sumocfg(d / "prior.sumocfg", net=str(net), routes="prior.rou.xml", additional=[], begin=0.0, end=H)
    obs = sumo_counts(d / "truth.sumocfg", seed=OBS_SEED, interval_s=WIDTH, begin=0.0, end=H)
    obs = obs[obs.groupby("edge")["count"].transform("sum") > 0].reset_index(drop=True)  # edges with traffic
    obs.to_csv(d / "counts.csv", index=False)
    return {"H": H, "width": WIDTH, "heldout_seed": HELDOUT_SEED, "dir": d, "net": net, "truth": truth_d,
            "prior": prior_d, "counts": obs,
            "prior_cfg": d / "prior.sumocfg", "truth_cfg": d / "truth.sumocfg", "counts_csv": d / "counts.csv"}


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "twins", *args], capture_output=True, text=True, cwd=cwd or root,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="session")
def twins_cli():
    """``twins_cli(*args)``: ``python -m twins ARGS`` in a subprocess (the completed process)."""
    return _cli


@pytest.fixture(scope="session")
def calibrated(problem) -> Path:
    """``python -m twins calibrate`` on the problem (small budget), once per session: the folder."""
    out = problem["dir"] / "calibration"
    p = _cli("calibrate", "scenario=sumo", f"scenario.sumocfg={problem['prior_cfg']}",
                  f"observed.counts={problem['counts_csv']}", "calibrate.iterations=2", "replications=4",
                  "calibrate.ensemble=8", "calibrate.progress=false", "compute.threads=1", f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr[-3000:]
    return out
