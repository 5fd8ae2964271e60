"""Import rules of the fidelity work: which car-following model an imported SUMO scenario runs (kernels rule 9:
the route files' ``carFollowModel``, unstated being SUMO's default Krauss, unless ``scenario.car_following`` says
otherwise; one model per twin), and junction logic the twin cannot interpret is refused where it stands."""
from __future__ import annotations

import pytest

from scenarios.sumo import car_following
from twins.core.errors import ConfigError
from twins.traffic.demand import Demand, Flow, VehicleType


def _demand(*models):
    vtypes = {f"t{i}": VehicleType(id=f"t{i}", car_following=m) for i, m in enumerate(models)}
    flows = [Flow(f"f{i}", ["a"], rate=100.0, vtype=f"t{i}") for i in range(len(models))]
    return Demand(vtypes, flows)


def test_the_files_model_unless_the_setting_says_otherwise():
    assert car_following(None, _demand(None)) == "Krauss"  # SUMO's default when a vType states none
    assert car_following(None, _demand("IDM", "IDM")) == "IDM"
    assert car_following(None, _demand("Krauss", None)) == "Krauss"
    assert car_following("IDM", _demand(None, "Krauss")) == "IDM"


def test_several_models_or_an_unknown_one_need_the_setting():
    with pytest.raises(ConfigError, match=r"scenario.car_following.*IDM: t0; Krauss: t1"):
        car_following(None, _demand("IDM", "Krauss"))
    with pytest.raises(ConfigError, match=r"EIDM: t0"):
        car_following(None, _demand("EIDM"))
    with pytest.raises(ConfigError, match=r"scenario.car_following='krauss'.*IDM or Krauss"):
        car_following("krauss", _demand(None))


def test_a_route_files_model_and_sigma_are_read(tmp_path):
    import warnings

    from twins.traffic import sumo
    from twins.traffic.network import RoadNetwork

    rou = tmp_path / "r.rou.xml"
    rou.write_text('<routes><vType id="a" carFollowModel="IDM" sigma="0.3"/>'
                   '<vType id="b"><carFollowing-Krauss sigma="0.2" tau="1.5"/></vType></routes>')
    with warnings.catch_warnings():  # vTypes only: no route needs a network
        warnings.simplefilter("ignore")
        d = sumo.load_routes(rou, RoadNetwork())
    assert (d.vtypes["a"].car_following, d.vtypes["a"].sigma) == ("IDM", 0.3)
    assert (d.vtypes["b"].car_following, d.vtypes["b"].sigma, d.vtypes["b"].tau) == ("Krauss", 0.2, 1.5)


def test_an_unknown_link_state_is_refused_with_file_line_and_element(tmp_path, data_dir):
    """Junction logic the twin cannot interpret (issue 17): a phase state with a character SUMO does not define."""
    from twins.traffic import sumo

    text = (data_dir / "tiny.net.xml").read_text()
    i = text.index('<phase duration="')
    j = text.index('state="', i) + len('state="')
    bad = text[:j] + "X" + text[j + 1:]
    line = bad[:j].count("\n") + 1
    path = tmp_path / "bad.net.xml"
    path.write_text(bad)
    with pytest.raises(ConfigError) as e:
        sumo.load_net(path)
    msg = str(e.value)
    assert "state" in msg and "'X'" in msg and str(path.name) in msg and f"line {line}" in msg, msg


def test_a_connections_visibility_is_read_and_a_bad_one_refused(tmp_path, data_dir):
    """Rule 10's cautious approach reads the connection's ``visibility`` (SUMO's default 4.5 m where none is given);
    one that is not a number is refused with the connection, the value, the file and the line."""
    from twins.traffic import sumo

    text = (data_dir / "tiny.net.xml").read_text()
    i = text.index("<connection ")
    ok, bad = tmp_path / "vis.net.xml", tmp_path / "bad_vis.net.xml"
    ok.write_text(text[:i] + text[i:].replace("<connection ", '<connection visibility="9.00" ', 1))
    first = sumo.load_net(ok).connections[0]
    assert first.visibility == 9.0
    assert all(c.visibility == 4.5 for c in sumo.load_net(data_dir / "tiny.net.xml").connections)
    bad.write_text(text[:i] + text[i:].replace("<connection ", '<connection visibility="far" ', 1))
    with pytest.raises(ConfigError) as e:
        sumo.load_net(bad)
    msg = str(e.value)
    assert "visibility" in msg and "'far'" in msg and bad.name in msg and f"line {text[:i].count(chr(10)) + 1}" in msg
