"""Molecular twin as a Mesa model: results, the causal contract, config, bad input."""
import pytest
import torch
from omegaconf import OmegaConf

from scenarios import build_twin
from scenarios.molecular import LJFluidScenario, MolecularScenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.molecular.model import Compartment, DosingSchedule, MolecularTwin, Species, SpeciesPopulation

SMALL = dict(dt=0.01, horizon=1.0, box=30.0, cells=(("high", 20, 0.0, 0.5), ("low", 8, 0.5, 1.0)),
             n_offtarget=10, dose=40, dosing_interval=0.4, k_el=0.5, k_on_target=20.0, record_every=5)


def _run(worlds, **kw):
    m = MolecularTwin(worlds, **{**SMALL, **kw})
    return m, m.run(progress=False)


def test_results_have_metrics_groups_timeseries_and_datacollector():
    m, r = _run(WorldBatch.replications(0, 3))
    assert list(r.worlds.columns[:3]) == ["world", "replication", "arm"]
    for k in MolecularTwin.metrics:
        assert k in r.worlds.columns
    assert r.worlds["doses_given"].tolist() == [3, 3, 3]  # t = 0, 0.4, 0.8 within a 1.0 horizon
    assert (r.worlds["target_occupancy_mean"] > 0).all()
    assert set(r.groups["group"]) == {"high", "low"} and set(r.groups["group_kind"]) == {"expression"}
    ts = r.tables["timeseries"]
    assert len(ts) == 3 * (m.n_steps // 5 + 1)
    mv = m.datacollector.get_model_vars_dataframe()
    assert len(mv) == m.n_steps // 5 + 1 and "target_occupancy" in mv
    at = m.datacollector.get_agenttype_vars_dataframe(Compartment)
    assert len(at) > 0
    # Mesa agents: compartments, a dosing schedule, species populations
    assert len(m.agents_by_type[Compartment]) == 3 and len(m.agents_by_type[DosingSchedule]) == 1
    pops = {a.name: a for a in m.agents_by_type[SpeciesPopulation]}
    n_tc = int(pops["target_complex"].count[0])
    assert n_tc == int((m.state.species[0] == Species.TARGET_COMPLEX).sum())
    if n_tc:
        s = pops["target_complex"].members(0)[0]
        v = pops["target_complex"].view(0, s)
        assert v.species == "TARGET_COMPLEX" and v.group in ("high", "low")
        assert m.particle(0, v.partner).species == "BOUND_LIGAND"
    # mass balance: every dosed ligand is free, bound or cleared
    sp = m.state.species
    dosed = ((sp[:, m.lig0:] != Species.EMPTY)).sum(1)
    assert torch.equal(dosed, m.doses_given * 40)


def test_reproducible_and_batch_independent():
    wb = WorldBatch.replications(7, 4)
    _, r1 = _run(wb)
    _, r2 = _run(wb)
    assert r1.worlds.equals(r2.worlds)
    # world 2 alone, or in a reversed batch, has the same trajectory
    m_all = MolecularTwin(wb, **SMALL)
    m_all.run(progress=False)
    m_one = MolecularTwin(wb.subset([2]), **SMALL)
    m_one.run(progress=False)
    m_rev = MolecularTwin(wb.subset([3, 2, 1, 0]), **SMALL)
    m_rev.run(progress=False)
    s_all, s_one, s_rev = m_all.state, m_one.state, m_rev.state
    assert torch.equal(s_all.pos[2], s_one.pos[0]) and torch.equal(s_all.species[2], s_one.species[0])
    assert torch.equal(s_all.pos[2], s_rev.pos[1]) and torch.equal(s_all.species[2], s_rev.species[1])


def test_null_intervention_identical_and_noise_aligned():
    wb = WorldBatch.replications(3, 2, arms=2)  # arm-major: worlds 0,1 arm 0; 2,3 arm 1
    wb.params["k_on_target"] = torch.tensor([20.0, 20.0, 20.0, 20.0])
    m = MolecularTwin(wb, **SMALL)
    m.run(progress=False)
    assert torch.equal(m.state.pos[0], m.state.pos[2]) and torch.equal(m.state.species[0], m.state.species[2])
    # a different off-target affinity in arm 1: the target receptors (immobile-ish, own noise keys)
    # still receive exactly the same Brownian kicks, so free receptors that never bound are identical
    wb.params["k_on_offtarget"] = torch.tensor([5.0, 5.0, 0.0, 0.0])
    m2 = MolecularTwin(wb, **SMALL)
    m2.run(progress=False)
    assert torch.equal(m2.state.pos[0, : m2.n_t], m2.state.pos[2, : m2.n_t])
    # dosed ligands appear at the same places whatever the policy (ids fixed by dose and index)
    assert torch.equal(m2.slots.spawn_pos[0], m2.slots.spawn_pos[2])


def test_per_world_parameters_change_outcomes():
    wb = WorldBatch.replications(1, 2, arms=2)
    wb.params["dose"] = torch.tensor([10.0, 10.0, 60.0, 60.0])
    _, r = _run(wb, max_dose=60)
    occ = r.worlds["target_occupancy_mean"].tolist()
    assert min(occ[2:]) > max(occ[:2])
    wb.params["dose"] = torch.tensor([10.0, 10.0, 80.0, 80.0])
    with pytest.raises(ConfigError, match="max_dose"):
        MolecularTwin(wb, **{**SMALL, "max_dose": 60})


@pytest.mark.parametrize("field,kw", [
    ("k_off_target", {"k_off_target": -1.0}),
    ("k_el", {"k_el": -0.1}),
    ("D_ligand", {"D_ligand": -1.0}),
    ("dosing_interval", {"dosing_interval": 0.0}),
])
def test_negative_rates_are_config_errors(field, kw):
    with pytest.raises(ConfigError, match=f"scenario.{field}="):
        MolecularTwin(WorldBatch.replications(0, 1), **{**SMALL, **kw})


def test_negative_per_world_rate_is_a_config_error():
    wb = WorldBatch.replications(0, 2)
    wb.params["k_on_target"] = torch.tensor([1.0, -2.0])
    with pytest.raises(ConfigError, match=r"worlds.params\['k_on_target'\]=\[-2.0\]"):
        MolecularTwin(wb, **SMALL)


def test_geometry_errors():
    wb = WorldBatch.replications(0, 1)
    with pytest.raises(ConfigError, match="scenario.reaction_radius=2.0 is invalid.*cell size"):
        MolecularTwin(wb, **{**SMALL, "cell_size": 1.5})
    with pytest.raises(ConfigError, match="box=3.0 is invalid"):
        MolecularTwin(wb, **{**SMALL, "box": 3.0})
    with pytest.raises(ConfigError, match="scenario.dt"):
        MolecularTwin(wb, **{**SMALL, "dt": 1.0})


def test_lj_overlapping_start_is_a_config_error():
    cfg = OmegaConf.create({"dt_s": 1.0, "horizon_s": 3600.0,
                            "scenario": OmegaConf.structured(LJFluidScenario(lattice="random", density=0.8))})
    with pytest.raises(ConfigError, match="scenario.lattice=.*no two particles closer than"):
        build_twin(cfg, WorldBatch.replications(0, 1), "cpu", torch.float64)


def test_builders_from_config():
    cfg = OmegaConf.create({"dt_s": 1.0, "horizon_s": 3600.0,
                            "scenario": OmegaConf.structured(MolecularScenario(horizon=0.2))})
    twin = build_twin(cfg, WorldBatch.replications(0, 2), "cpu", torch.float32)
    assert twin.dt == 0.01 and twin.n_steps == 20  # scenario dt / horizon override the traffic defaults
    r = twin.run(progress=False)
    assert len(r.worlds) == 2
    cfg.scenario.dt = None
    cfg.scenario.horizon = 10.0
    with pytest.raises(ConfigError, match="scenario.dt"):  # 1 s steps are far too long for Doi reactions
        build_twin(cfg, WorldBatch.replications(0, 1), "cpu", torch.float32)
    cfg2 = OmegaConf.create({"dt_s": 1.0, "horizon_s": 3600.0,
                             "scenario": OmegaConf.structured(LJFluidScenario(horizon=0.05, n_particles=256))})
    r2 = build_twin(cfg2, WorldBatch.replications(0, 2), "cpu", torch.float64).run(progress=False)
    assert set(r2.metrics) <= set(r2.worlds.columns)


@pytest.mark.parametrize("kind", ["binding_box", "drug"])
def test_immobile_receptor_table_gives_the_cell_list_trajectory(kind):
    """With immobile receptors the twin finds binding partners through a table built once
    (kernels.reach_table / reach_pairs); the trajectory must be bit-identical to the general
    per-step cell list."""
    from twins.molecular.reference import binding_box

    def make():
        if kind == "binding_box":
            return binding_box(WorldBatch.replications(0, 4), horizon=4.0, dtype=torch.float32)
        return MolecularTwin(WorldBatch.replications(1, 3), **{**SMALL, "D_target": 0.0, "D_offtarget": 0.0})

    fast, general = make(), make()
    assert fast._reach is not None
    general._reach = None  # the per-step cell list
    while fast.step_index < fast.n_steps:
        fast.step()
        general.step()
    assert int(fast.n_bind_events.sum()) > 10
    for name in ("pos", "species", "partner"):
        assert torch.equal(getattr(fast.state, name), getattr(general.state, name)), name
    for name in ("n_bind_events", "n_unbind_events"):
        assert torch.equal(getattr(fast, name), getattr(general, name)), name


def test_reach_table_too_large_falls_back_to_the_cell_list(monkeypatch):
    """A batch whose reach table would exceed the memory bound uses the per-step cell list instead."""
    from twins.molecular import kernels as K
    from twins.molecular.reference import binding_box

    n_ref = 4 * 40  # 4 worlds × 40 receptors
    assert K.reach_table_bound(n_ref, 10.0, 1.0, 4) > 1000
    monkeypatch.setattr(K, "REACH_TABLE_MAX_ENTRIES", 1000)
    assert binding_box(WorldBatch.replications(0, 4), horizon=0.2, dtype=torch.float32)._reach is None


def test_reach_table_refuses_cell_keys_float32_cannot_hold():
    from twins.molecular import kernels as K

    pos = torch.rand(1, 10, 3) * 300.0
    with pytest.raises(ConfigError, match="nc"):
        K.reach_table(pos, torch.ones(1, 10, dtype=torch.bool), 300.0, 1.0, nc=300)
