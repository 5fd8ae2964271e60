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


def _hand_made_scenario(d: Path, name: str, nodes: str, edges: str, vehicles: str, end_s: int,
                        netconvert_args: tuple[str, ...] = ()) -> Path:
    """``d/name.sumocfg`` of a network netconvert builds from ``<node>`` and ``<edge>`` elements (``--no-turnarounds``
    and ``netconvert_args``), a route file of one ``car`` vType (SUMO's defaults but 4.3 m long, minGap 1.5 m,
    speedDev 0.1) and ``vehicles`` (XML elements), and the time window 0..``end_s``."""
    (d / "n.nod.xml").write_text(f"<nodes>{nodes}</nodes>")
    (d / "n.edg.xml").write_text(f"<edges>{edges}</edges>")
    r = subprocess.run([_tool("netconvert"), "--node-files", str(d / "n.nod.xml"), "--edge-files",
                        str(d / "n.edg.xml"), "--no-turnarounds", "true", *netconvert_args, "-o",
                        str(d / f"{name}.net.xml")], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"netconvert failed: {r.stderr}")
    (d / f"{name}.rou.xml").write_text('<routes><vType id="car" length="4.3" minGap="1.5" speedDev="0.1"/>\n'
                                       f"{vehicles}\n</routes>")
    (d / f"{name}.sumocfg").write_text(
        f'<configuration><input><net-file value="{name}.net.xml"/><route-files value="{name}.rou.xml"/></input>'
        f'<time><begin value="0"/><end value="{end_s}"/></time></configuration>')
    return d / f"{name}.sumocfg"


def _trip_vehicles(trips) -> str:
    """``<vehicle>`` elements of ``car`` type, entering at top speed, for ``(depart s, id, "edge edge ...")`` trips,
    in departure order."""
    return "\n".join(f'<vehicle id="{v}" type="car" depart="{t:.1f}" departSpeed="max"><route edges="{r}"/></vehicle>'
                     for t, v, r in sorted(trips))


def _load_sumocfg(cfg: Path):
    """The twin's import of a hand-made ``.sumocfg`` (its warnings about what the twin ignores silenced)."""
    import warnings

    from twins.traffic import sumo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        return sumo.load_sumocfg(cfg)


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
