"""Kernel-level checks: neighbour search, forces, integrators, reaction selection, errors."""
import math

import pytest
import torch

from twins.core import noise
from twins.core.errors import ConfigError
from twins.molecular import kernels as K


def _brute_pairs(pos, alive, box, cutoff):
    W, N, _ = pos.shape
    d = K.min_image(pos[:, None, :, :] - pos[:, :, None, :], box)
    r2 = (d * d).sum(-1)
    m = (r2 < cutoff ** 2) & alive[:, :, None] & alive[:, None, :] & ~torch.eye(N, dtype=torch.bool)[None]
    w, i, j = torch.nonzero(m, as_tuple=True)
    return set(zip((w * N + i).tolist(), (w * N + j).tolist()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("box,cutoff", [(10.0, 1.5), (10.0, 4.0), (7.0, 3.0)])
def test_cell_list_finds_exactly_the_brute_force_pairs(dtype, box, cutoff):
    W, N = 3, 300
    pos = noise.uniform(1, torch.arange(W)[:, None, None], noise.Stream.USER, torch.arange(N)[None, :, None], 0,
                        torch.arange(3)[None, None, :], dtype=dtype) * box
    alive = noise.uniform(2, torch.arange(W)[:, None], noise.Stream.USER, torch.arange(N)[None, :]) < 0.8
    ref = _brute_pairs(pos, alive, box, cutoff)
    # padded candidate lists (dense fluids)
    nbr = K.neighbor_candidates(pos, alive, box, cutoff)
    gi, gj, _ = K.candidate_pairs(pos, nbr, box, alive, alive, cutoff)
    assert set(zip(gi.tolist(), gj.tolist())) == ref
    # compact cell pairs (sparse systems)
    gi, gj, d, r2 = K.cell_pairs(pos, alive, alive, box, cutoff)
    assert set(zip(gi.tolist(), gj.tolist())) == ref
    assert len(gi) == len(ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("box,cutoff,nc", [(10.0, 1.0, None), (10.0, 1.0, 3), (7.0, 3.0, None), (4.0, 2.0, 1),
                                           (4.0, 2.0, 5)])
def test_reach_pairs_finds_exactly_the_brute_force_pairs(dtype, box, cutoff, nc):
    """Static reference table + one lookup per query = every close query–reference pair, once,
    also across the periodic faces (particles put on and next to them) and in boxes so small that
    a cell is in reach through two periodic images."""
    W, n_ref, N = 3, 40, 160
    u = noise.uniform(4, torch.arange(W)[:, None, None], noise.Stream.USER, torch.arange(N)[None, :, None], 0,
                      torch.arange(3)[None, None, :], dtype=dtype)
    pos = u * box
    edge = torch.tensor([0.0, box * (1 - 1e-7), box * 0.5], dtype=dtype)
    pos[:, :8, 0] = edge[torch.arange(8) % 3]  # on the faces x = 0 and x -> box
    pos[:, n_ref: n_ref + 12, 1] = torch.remainder(edge[torch.arange(12) % 3] + 1e-3 * cutoff, box)
    # half of the queries just inside or outside the reach of a reference particle (where cell edges matter)
    k = torch.arange(n_ref + 12, N)[::2]
    v = torch.nn.functional.normalize(u[:, k] - 0.5, dim=-1)
    shell = cutoff * (1.0 + 2e-3 * (u[:, k, :1] - 0.5))
    pos[:, k] = pos[:, k % n_ref] + v * shell
    pos = K.wrap(pos, box)
    is_ref = torch.zeros(W, N, dtype=torch.bool)
    is_ref[:, :n_ref] = True
    table = K.reach_table(pos, is_ref, box, cutoff, nc)
    pick = noise.uniform(5, torch.arange(W)[:, None], noise.Stream.USER, torch.arange(N)[None, :], dtype=dtype)
    ref_mask = is_ref & (pick < 0.7)  # a subset of the table's particles (the free receptors)
    query = ~is_ref & (pick < 0.8)
    gi, gj, d, r2 = K.reach_pairs(pos, query, ref_mask, table, box, cutoff, query_from=n_ref)
    brute = {(a, b) for a, b in _brute_pairs(pos, torch.ones(W, N, dtype=torch.bool), box, cutoff)
             if query.reshape(-1)[a] and ref_mask.reshape(-1)[b]}
    assert len(gi) == len(brute) > 0
    assert set(zip(gi.tolist(), gj.tolist())) == brute
    flat = pos.reshape(-1, 3)
    assert torch.equal(d, K.min_image(flat[gj] - flat[gi], box)) and torch.equal(r2, (d * d).sum(-1))
    # the same pairs as the general cell list
    ci, cj, _, _ = K.cell_pairs(pos, query, ref_mask, box, cutoff)
    assert set(zip(ci.tolist(), cj.tolist())) == brute


def test_lj_force_is_minus_gradient_and_virial_matches():
    torch.manual_seed(0)  # test-only input data; the twin itself never uses torch's RNG
    W, N, box, rc = 2, 64, 5.0, 2.4
    g = torch.stack(torch.meshgrid(*(torch.arange(4, dtype=torch.float64),) * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = (g * box / 4 + 0.1 * torch.rand(W, N, 3, dtype=torch.float64)).requires_grad_(True)
    alive = torch.ones(W, N, dtype=torch.bool)
    nbr = K.neighbor_candidates(pos.detach(), alive, box, rc)
    f, e, vir, npairs = K.lj_forces(pos, nbr, box, rc)
    grad, = torch.autograd.grad(e.sum(), pos)
    assert torch.allclose(f, -grad, rtol=1e-10, atol=1e-9)
    assert torch.allclose(f.sum(1), torch.zeros(W, 3, dtype=torch.float64), atol=1e-9)  # Newton's third law
    # virial = -dE/d(ln L) for a uniform scaling of all coordinates
    s = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    _, e2, _, _ = K.lj_forces(pos.detach() * s, nbr, box * s, rc)
    dE, = torch.autograd.grad(e2.sum(), s)
    assert torch.allclose(-dE, vir.sum(), rtol=1e-9)


def test_soft_repulsion_pairs_agree_with_padded_version():
    W, N, box = 2, 200, 20.0
    pos = noise.uniform(3, torch.arange(W)[:, None, None], noise.Stream.USER, torch.arange(N)[None, :, None], 0,
                        torch.arange(3)[None, None, :]) * box
    alive = torch.ones(W, N, dtype=torch.bool)
    nbr = K.neighbor_candidates(pos, alive, box, 2.0)
    f1, _ = K.soft_repulsion_forces(pos, nbr, box, 2.0, 10.0)
    f2 = K.soft_repulsion_pair_forces(pos, alive, box, 2.0, 10.0)
    assert torch.allclose(f1, f2, atol=1e-9)


def test_doi_select_one_reaction_per_particle():
    gi = torch.tensor([0, 0, 1, 2, 2])
    gj = torch.tensor([5, 6, 5, 6, 7])
    u = torch.tensor([0.01, 0.02, 0.005, 0.03, 0.5], dtype=torch.float64)
    bi, bj = K.doi_select(gi, gj, torch.full((5,), 1.0, dtype=torch.float64), 0.1, u, 10)
    # p = 1 - e^-0.1 = 0.095: pair (2,7) does not fire; ligand 0 prefers 5 (u=.01) but 1 wins 5 (u=.005);
    # ligand 2 gets 6.
    assert sorted(zip(bi.tolist(), bj.tolist())) == [(1, 5), (2, 6)]


def test_ball_point_is_uniform_in_ball():
    u = noise.uniform(0, 0, noise.Stream.USER, torch.arange(200_000)[:, None], 0, torch.arange(3)[None, :])
    p = K.ball_point(u, 2.0)
    r = p.norm(dim=-1)
    assert float(r.max()) <= 2.0
    # P(r < a) = (a/R)^3; mean of each coordinate 0
    assert abs(float((r < 1.0).double().mean()) - 0.125) < 0.005
    assert float(p.mean(0).abs().max()) < 0.01


def test_theory_limits():
    # Doi rate: reaction-limited λ V_R for small λ, Smoluchowski 4πDR for large λ
    assert math.isclose(K.doi_rate(1e-6, 1.0, 1.0), 1e-6 * 4 / 3 * math.pi, rel_tol=1e-4)
    assert math.isclose(K.doi_rate(1e8, 1.0, 1.0), K.smoluchowski_rate(1.0, 1.0), rel_tol=1e-3)
    # tail corrections = the defining integrals 2πρ∫r²u dr and -(2/3)πρ²∫r³u' dr beyond rc
    from scipy.integrate import quad

    rho, rc = 0.8, 2.5
    u, p = K.lj_tail_corrections(rho, rc)
    uu = 2 * math.pi * rho * quad(lambda r: r * r * 4 * (r ** -12 - r ** -6), rc, math.inf)[0]
    pp = -2 / 3 * math.pi * rho ** 2 * quad(lambda r: r ** 3 * 4 * (-12 * r ** -13 + 6 * r ** -7), rc, math.inf)[0]
    assert math.isclose(u, uu, rel_tol=1e-8) and math.isclose(p, pp, rel_tol=1e-8)


# --------------------------------------------------------------------------- bad input
def test_box_too_small_for_cutoff_is_a_config_error():
    pos = torch.zeros(1, 4, 3)
    with pytest.raises(ConfigError, match="box=5.0 is invalid.*2 x cutoff"):
        K.neighbor_candidates(pos, torch.ones(1, 4, dtype=torch.bool), 5.0, 3.0)


def test_cell_smaller_than_reaction_radius_is_a_config_error():
    with pytest.raises(ConfigError, match="cell_size=1.0 is invalid"):
        K.check_geometry(20.0, 2.0, cell_size=1.0)


def test_overlapping_particles_are_a_config_error():
    pos = torch.tensor([[[1.0, 1.0, 1.0], [1.1, 1.0, 1.0], [5.0, 5.0, 5.0]]])
    with pytest.raises(ConfigError, match="particles 0 and 1 of world 0 at distance 0.1"):
        K.check_no_overlap(pos, torch.ones(1, 3, dtype=torch.bool), 10.0, 0.8)
