"""The molecular twin's Mesa layer over its tensor state (issue 21 item 5): a per-world DataCollector that is the
timeseries table, species in one world as a Mesa AgentSet of particle agents over that world's tensor columns,
and the twin's clock named ``time_s`` so that Mesa's ``Model.time`` is not shadowed."""
import mesa
import numpy as np
import pandas as pd
import pytest
import torch

from twins.core.twin import Twin
from twins.core.worlds import WorldBatch
from twins.molecular.agents import Particle
from twins.molecular.lj import LJFluidTwin
from twins.molecular.model import Compartment, MolecularTwin, Species, micromolar
from twins.traffic.model import TrafficTwin

SMALL = dict(dt=0.01, horizon=1.0, box=30.0, cells=(("high", 20, 0.0, 0.5), ("low", 8, 0.5, 1.0)),
             n_offtarget=10, dose=40, dosing_interval=0.4, k_el=0.5, k_on_target=20.0, record_every=5)


def _two_arms():
    """Worlds 0, 1 bind the target; worlds 2, 3 (the other arm) cannot."""
    wb = WorldBatch.replications(5, 2, arms=2)
    wb.params["k_on_target"] = torch.tensor([20.0, 20.0, 0.0, 0.0])
    return MolecularTwin(wb, **SMALL)


def test_the_collector_reports_per_world_values_of_the_tensors():
    m = _two_arms()
    for _ in range(30):
        m.step()
    mv = m.datacollector.model_vars
    assert mv["time"] == pytest.approx([0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
    assert all(np.asarray(v).shape == (4,) for k, vals in mv.items() if k != "time" for v in vals)
    bound = m.populations["target_complex"].count.double()
    np.testing.assert_array_equal(mv["target_occupancy"][-1], (bound / m.n_t).numpy())
    np.testing.assert_allclose(mv["target_occupancy"][-1], m.target_occupancy().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(mv["offtarget_occupancy"][-1],
                                  (m.populations["offtarget_complex"].count.double() / m.n_o).numpy())
    np.testing.assert_array_equal(mv["free_ligand"][-1], m.populations["ligand"].count.double().numpy())
    np.testing.assert_array_equal(mv["target_complexes"][-1], bound.numpy())
    # the compartments report per world too
    at = m.datacollector.get_agenttype_vars_dataframe(Compartment)["occupancy"]
    assert all(np.asarray(v).shape == (4,) for v in at)


def test_worlds_of_different_arms_are_not_mixed():
    m = _two_arms()
    res = m.run(progress=False)
    occ = np.stack(m.datacollector.model_vars["target_occupancy"])  # [T, W]
    assert (occ[:, 2:] == 0).all() and (occ[-1, :2] > 0).all()  # the arm that cannot bind stays at zero
    ts = res.tables["timeseries"]
    assert list(ts.columns[:2]) == ["world", "time"]
    for w in range(4):
        np.testing.assert_array_equal(ts[ts["world"] == w]["target_occupancy"].to_numpy(), occ[:, w])
    # a reporter added to the collector becomes a column of the table
    m2 = _two_arms()
    m2.datacollector = mesa.DataCollector(model_reporters={
        **m2.datacollector.model_reporters, "bound_high": lambda t: t.bound_per_group()[:, 0].double().numpy()})
    ts2 = m2.run(progress=False).tables["timeseries"]
    assert list(ts2.columns) == list(ts.columns) + ["bound_high"] and (ts2["bound_high"][ts2["world"] >= 2] == 0).all()


def test_the_table_is_bit_identical_to_the_one_built_from_the_recorded_tensors():
    """The timeseries table as it was built before the DataCollector was its source (from ``timeseries()``)."""
    m = MolecularTwin(WorldBatch.replications(1, 3), **{**SMALL, "record_every": 7, "dtype": torch.float64})
    ts = m.run(progress=False).tables["timeseries"]
    t, bg, oc, fl = m.timeseries()
    W = m.W
    old = pd.DataFrame({
        "world": np.repeat(np.arange(W)[None, :], len(t), 0).ravel(),
        "time": np.repeat(t.numpy()[:, None], W, 1).ravel(),
        "target_occupancy": (bg.sum(2) / m.n_t).numpy().ravel(),
        "offtarget_occupancy": (oc / m.n_o).numpy().ravel(),
        "target_complexes": bg.sum(2).numpy().ravel(),
        "offtarget_complexes": oc.numpy().ravel(),
        "free_ligand": fl.numpy().ravel(),
        "free_ligand_uM": micromolar(fl.numpy().ravel(), m.box ** 3),
    })
    pd.testing.assert_frame_equal(ts, old, check_exact=True)


def test_a_species_in_one_world_is_an_agent_set_over_that_worlds_tensors(monkeypatch):
    m = MolecularTwin(WorldBatch.replications(2, 3), **SMALL)
    n_agents = len(m.agents)

    def no_particles(*a, **k):
        raise AssertionError("a step built a particle agent")

    with monkeypatch.context() as mp:  # stepping builds no per-particle object
        mp.setattr(Particle, "__init__", no_particles)
        for _ in range(25):
            m.step()
    k = 1
    ligands = m.populations["ligand"].in_world(k)
    assert isinstance(ligands, mesa.agent.AgentSet) and len(ligands) == int(m.populations["ligand"].count[k]) > 0
    for a in ligands:
        assert a.world == k and a.species == Species.LIGAND
        assert a.position == tuple(m.state.pos[k, a.slot].tolist())
    assert [a.slot for a in ligands] == m.populations["ligand"].members(k)
    everyone = m.particles(k)
    live = (m.state.species[k] != Species.EMPTY) & (m.state.species[k] != Species.CLEARED)
    assert len(everyone) == int(live.sum())
    assert everyone.get("species") == [Species(int(c)) for c in m.state.species[k][live]]
    for a in m.populations["target_complex"].in_world(k):  # partners are in the same world
        assert a.group in ("high", "low") and m.particles(k).select(lambda p: p.slot == a.partner)[0].species \
            == Species.BOUND_LIGAND
    # particles are not agents of the model, and the same particle is the same agent, read live
    assert len(m.agents) == n_agents
    a = ligands[0]
    assert m.particles(k, [Species.LIGAND])[0] is a
    m.step()
    assert a.position == tuple(m.state.pos[k, a.slot].tolist())
    a.position = (31.0, -1.0, 2.5)  # written into world k's column, wrapped into the box
    assert torch.equal(m.state.pos[k, a.slot], torch.tensor([1.0, 29.0, 2.5]))
    assert a.view().position == (1.0, 29.0, 2.5)


@pytest.mark.parametrize("cls", [MolecularTwin, LJFluidTwin, TrafficTwin])
def test_mesa_model_time_is_not_shadowed(cls):
    assert all("time" not in c.__dict__ for c in cls.__mro__ if issubclass(c, Twin) or c.__module__.startswith("twins"))


def test_the_twin_clock_is_time_s_and_model_time_is_free():
    m = MolecularTwin(WorldBatch.replications(0, 1), **SMALL)
    for _ in range(3):
        m.step()
    assert m.time_s == 3 * m.dt and m.steps == 3
    m.time = 1.0  # Mesa >= 3.4 assigns it in Model.__init__
    assert m.time == 1.0 and m.time_s == 3 * m.dt
