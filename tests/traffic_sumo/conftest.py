"""Fixtures for the SUMO import/export tests.

Tests marked ``sumo`` need SUMO's binaries (the ``[sumo]`` extra); they
generate their networks with SUMO's ``netgenerate`` and skip, with the reason,
when SUMO is not installed. The others read hand-written files in
``tests/data/sumo``.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "sumo"


def _tool(name: str) -> str:
    from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

    try:
        return find_sumo(name)
    except SumoNotFoundError as e:
        pytest.skip(f"SUMO is not installed ({e})")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def sumo_binary() -> str:
    return _tool("sumo")


# netgenerate recipes: name -> arguments
NETS = {
    # 3x3 signalized grid with sidewalks and pedestrian crossings
    "grid": ["--grid", "--grid.number", "3", "--grid.length", "150", "--grid.attach-length", "100",
             "--default-junction-type", "traffic_light", "--sidewalks.guess", "--crossings.guess"],
    # spider web: 5 arms, 3 circles, priority junctions and a signalized centre
    "spider": ["--spider", "--spider.arm-number", "5", "--spider.circle-number", "3",
               "--spider.space-radius", "120", "--tls.set", "A0"],
    # two-lane grid with a dedicated left-turn lane before each (actuated) signal
    "turnlanes": ["--grid", "--grid.number", "2", "--grid.length", "250", "--grid.attach-length", "150",
                  "-L", "2", "--turn-lanes", "1", "--turn-lanes.length", "40",
                  "--default-junction-type", "traffic_light", "--tls.default-type", "actuated"],
    # programs whose links change mid-cycle: the through links turn yellow while the
    # left turns stay green ('g' -> 'G'), a protected left-turn phase after each through phase
    "midcycle": ["--grid", "--grid.number", "2", "--grid.length", "200", "--grid.attach-length", "120",
                 "-L", "2", "--turn-lanes", "1", "--default-junction-type", "traffic_light",
                 "--tls.left-green.time", "8"],
}


@pytest.fixture(scope="session")
def netgen(tmp_path_factory):
    """``netgen(name) -> Path`` of a generated ``.net.xml`` (cached per session)."""
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            exe = _tool("netgenerate")
            out = tmp_path_factory.mktemp(f"net_{name}") / f"{name}.net.xml"
            r = subprocess.run([exe, *NETS[name], "--seed", "1", "-o", str(out)], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"netgenerate failed: {r.stderr}")
            cache[name] = out
        return cache[name]

    return make
