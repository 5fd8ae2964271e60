"""The LJ fluid's Verlet neighbour lists (issue 20, item 5): complete, rebuilt only when needed, replayed when a
list went stale, batch-independent, and no host reads between checks."""
from __future__ import annotations

import pytest
import torch

from twins.compute.counting import count_per_step
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.molecular import kernels as K
from twins.molecular.lj import LJFluidTwin


def _lj(wb, **kw):
    args = dict(dt=0.005, horizon=0.5, n_particles=256, density=0.8442, temperature=0.72, cutoff=2.5, gamma=0.0)
    return LJFluidTwin(wb, **{**args, **kw})


@pytest.mark.parametrize("box", [pytest.param(9.0, id="half-reach-cells"), pytest.param(6.0, id="all-pairs"),
                                 pytest.param(14.0, id="sparse")])
def test_verlet_list_is_every_pair_within_reach_once(box):
    g = torch.Generator().manual_seed(3)
    W, N, reach = 2, 300, 2.8
    pos = torch.rand(W, N, 3, generator=g, dtype=torch.float64) * box
    alive = torch.rand(W, N, generator=g) < 0.9
    nbr, needed = K.verlet_list(pos, alive, box, reach, capacity=8)
    d = K.min_image(pos[:, None, :, :] - pos[:, :, None, :], box)
    near = ((d * d).sum(-1) < reach * reach) & alive[:, None, :] & alive[:, :, None]
    near &= ~torch.eye(N, dtype=torch.bool)[None]
    assert needed == int(near.sum(2).max()) and nbr.shape[2] == needed  # widened past the capacity of 8
    for w in range(W):
        for i in range(0, N, 7):
            row = nbr[w, i]
            k = int((row >= 0).sum())
            assert bool((row[k:] == -1).all())  # entries first, padding after
            got = sorted((row[:k] - w * N).tolist())
            assert got == torch.nonzero(near[w, i]).flatten().tolist()


def test_forces_are_complete_at_every_check_even_when_lists_go_stale():
    """A small skin with a long check period: lists go stale within periods, the periods are replayed, and at every
    check the forces equal those from a fresh cell list (float64: to rounding) with the same pair count."""
    m = _lj(WorldBatch.replications(0, 2), skin=0.2, check_every=10, dtype=torch.float64)
    checks = 0
    with pytest.warns(UserWarning, match="checked every step"):
        while m.step_index < m.n_steps:
            m.step()
            if m.step_index % m.check_every == 0:
                pos = m.state.pos
                f, e, _, n = K.lj_forces(pos, K.neighbor_candidates(pos, m.alive, m.box, m.rc), m.box, m.rc)
                assert torch.allclose(f, m.state.force, rtol=0, atol=1e-10) and torch.equal(n, m.state.npairs)
                assert torch.allclose(e, m.state.epot, rtol=1e-12, atol=0)
                checks += 1
    assert checks == 10 and m.replays > 0 and int(m.rebuilds.min()) > 2


def test_batch_independent_reproducible_and_rebuilt_only_when_needed():
    wb = WorldBatch.replications(5, 3)
    wb.params["temperature"] = torch.tensor([0.72, 1.5, 0.5], dtype=torch.float64)
    runs = [_lj(b) for b in (wb, wb.subset([1]), wb.subset([2, 1, 0]), wb)]
    res = [m.run(progress=False).worlds.drop(columns="world") for m in runs]
    full, alone, rev, again = runs
    assert torch.equal(full.state.pos[1], alone.state.pos[0]) and torch.equal(full.state.pos[1], rev.state.pos[1])
    assert res[0].iloc[1].equals(res[1].iloc[0]) and res[0].iloc[1].equals(res[2].iloc[1])
    assert torch.equal(full.state.pos, again.state.pos) and res[0].equals(res[3])
    # lists outlive steps: the hotter world needs more of them, none is rebuilt every check
    n = full.rebuilds.tolist()
    assert n[2] < n[0] < n[1] < full.n_steps / full.check_every, (n, full.check_every)


def test_no_host_reads_between_checks():
    m = _lj(WorldBatch.replications(0, 2), check_every=8, record_every=1000)  # records read NaN flags back
    m.step()
    while m.step_index % 8:
        m.step()
    quiet = count_per_step(m.step, 7)  # the 7 steps between two checks
    assert quiet["host_syncs_per_step"] == 0, quiet
    checked = count_per_step(m.step, 1)  # the check: one read of the worlds' drift, a rebuild's few
    assert 1 <= checked["host_syncs_per_step"] <= 8, checked


def test_impossible_skin_is_a_config_error():
    with pytest.raises(ConfigError, match="scenario.skin"):
        _lj(WorldBatch.replications(0, 1), skin=5.0)
    with pytest.raises(ConfigError, match="scenario.neighbor_check_every"):
        _lj(WorldBatch.replications(0, 1), check_every=0)
    with pytest.raises(ConfigError, match=r"scenario.n_particles=100 .*at least 106 at density 0.8442"):
        _lj(WorldBatch.replications(0, 1), n_particles=100)  # a box of 4.9 < 2 x cutoff 2.5


def test_compiled_step_matches_the_eager_step_and_stays_batch_independent():
    """compute.compile=true: inductor fuses the whole step (keyed noise, integrator, forces over the list).
    Float64: the same trajectory to rounding (~1e-15 after 60 steps here; fused sums round differently), and
    a world's numbers still do not depend on its batch."""
    wb = WorldBatch.replications(5, 3)
    wb.params["temperature"] = torch.tensor([0.72, 1.5, 0.5], dtype=torch.float64)
    kw = dict(horizon=0.3, gamma=1.0, dtype=torch.float64)
    eager, fused, alone = _lj(wb, **kw), _lj(wb, compile=True, **kw), _lj(wb.subset([1]), compile=True, **kw)
    for m in (eager, fused, alone):
        m.run(progress=False)
    assert fused.compiled and not eager.compiled
    assert torch.allclose(eager.state.pos, fused.state.pos, rtol=0, atol=1e-11)
    assert torch.equal(fused.state.pos[1], alone.state.pos[0])


def test_keyed_normals_are_the_noise_module_s_normals_bit_for_bit():
    from twins.core import noise

    rep, pid = torch.arange(3), torch.arange(40)
    key = K.key_prefix(7, rep[:, None], noise.Stream.BROWNIAN, pid[None, :])
    for s in (0, 1, 98765):
        ref = noise.normal(7, rep.view(-1, 1, 1), noise.Stream.BROWNIAN, pid[None, :, None], s,
                           torch.arange(3)[None, None, :], dtype=torch.float32)
        assert torch.equal(K.keyed_normals(key, torch.tensor(s), K.draw_links(6), torch.float32), ref)
