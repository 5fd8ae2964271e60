"""Validation of the molecular physics against closed-form theory and published data.

Each test states its tolerance and why. Slow ones (``-m slow``) run in CI's second pass.
"""

import numpy as np
import pytest
import torch

from twins.core import noise
from twins.core.noise import Stream
from twins.core.worlds import WorldBatch
from twins.molecular import kernels as K
from twins.molecular.lj import LJFluidTwin
from twins.molecular.reference import binding_box, canonical_complexes, doi_rate_window, jzg_eos


# --------------------------------------------------------------------------- well-mixed / Langmuir
def test_equilibrium_occupancy_matches_mass_action_and_langmuir():
    """Reversible Doi binding L + R ⇌ C at three ligand doses (per-world ``dose``).

    Theory: detailed balance of Doi binding with uniform-in-ball unbinding gives
    K_d = p_off / (p_on V_R) exactly (independent of D); for finite molecule
    numbers the exact equilibrium is the canonical mass-action sum
    (:func:`canonical_complexes`), whose large-number limit is the Langmuir law
    θ = [L]/([L] + K_d), checked here with the simulated free-ligand level.

    Tolerance 0.035 in θ: the time-mean of one world scatters by ≈ 0.025 in θ between
    replications (measured, seeds 0-2), so the 8-replication mean has a standard error
    ≈ 0.009; the O(λ dt · ρ_L V_R) discrete-time bias of one-reaction-per-step (a receptor
    binds with 1 - exp(-n λ dt), saturating when many ligands sit in its ball) is
    ≲ 0.01 (measured mean over 3 seeds: -0.006 to -0.013 below theory). 0.035 ≈ bias + 2.7σ.
    (With 4 replications seed 0 once sat 0.030 below theory at the lowest dose.)
    """
    doses, reps, R0, box, lam, koff, dt = [20, 60, 150], 8, 40, 10.0, 5.0, 1.0, 0.02
    wb = WorldBatch.replications(0, reps, arms=len(doses))
    wb.params["dose"] = torch.tensor(doses, dtype=torch.float64).repeat_interleave(reps)
    m = binding_box(wb, R0=R0, box=box, lam=lam, koff=koff, dt=dt, horizon=12.0, dose=max(doses))
    ts = m.run(progress=False).tables["timeseries"]
    eq = ts[ts.time >= 2.0].groupby("world")[["target_complexes", "free_ligand"]].mean()
    Kc = K.doi_dissociation_constant(lam, koff, 1.0, dt) * box ** 3
    for a, d in enumerate(doses):
        sel = eq.loc[list(range(a * reps, (a + 1) * reps))]
        theta = sel["target_complexes"].mean() / R0
        assert abs(theta - canonical_complexes(R0, d, Kc) / R0) < 0.035, (d, theta)
        Lf = sel["free_ligand"].mean()
        assert abs(theta - Lf / (Lf + Kc)) < 0.035, (d, theta, Lf)


@pytest.mark.slow
def test_relaxation_matches_mass_action_kinetics_in_the_well_mixed_limit():
    """Approach to equilibrium vs the mass-action ODE dC/dt = k_on (R-C)(L-C)/V - k_off' C.

    Well-mixed regime: R sqrt(λ/D) = 0.32, so diffusion hardly limits binding;
    k_on is the Doi macroscopic rate (Erban & Chapman 2009) and k_off' = k_on K_d
    (the effective unbinding rate consistent with the exact K_d). Compared: the
    half-relaxation time, within 10 % (statistical error of the mean trajectory of
    24 replications ≈ 3 %; the initial reaction-limited transient, over in
    ~R²/D = 0.1, shifts t½ by < 2 %), and the whole mean curve within 0.08 in θ
    (pointwise standard error of the 24-world mean ≈ 0.02 in θ; the maximum over
    ~480 correlated record points reaches ≈ 3.5σ; observed 0.047).
    """
    from scipy.integrate import solve_ivp

    R0, L0, box, R, D, lam, koff, dt = 20, 60, 10.0, 1.0, 10.0, 1.0, 0.2, 0.004
    wb = WorldBatch.replications(1, 24)
    m = binding_box(wb, R0=R0, box=box, R=R, D_L=D, lam=lam, koff=koff, dt=dt, horizon=12.0, dose=L0,
                    record_every=25)
    ts = m.run(progress=False).tables["timeseries"]
    mean = ts.groupby("time")["target_complexes"].mean()
    t = mean.index.to_numpy()
    V = box ** 3
    kon = K.doi_rate(lam, R, D)
    koff_eff = kon * K.doi_dissociation_constant(lam, koff, R, dt)
    sol = solve_ivp(lambda _, c: [kon * (R0 - c[0]) * (L0 - c[0]) / V - koff_eff * c[0]], (0, t[-1]), [0.0],
                    t_eval=t, rtol=1e-8)
    ode = sol.y[0]
    assert np.max(np.abs(mean.to_numpy() - ode)) / R0 < 0.08

    def t_half(c):
        target = 0.5 * c[-len(c) // 4:].mean()
        return float(np.interp(target, c, t))

    assert abs(t_half(mean.to_numpy()) / t_half(ode) - 1) < 0.10


# --------------------------------------------------------------------------- diffusion
def test_mean_squared_displacement_gives_configured_D():
    """Free Brownian particles: MSD(t) = 6 D t. 4000 particles × 3 axes: the relative
    standard error of the MSD estimate is sqrt(2/(3·4000)) ≈ 1.3 %; tolerance 5 % (~4σ)."""
    W, N, D, dt, steps, box = 4, 1000, 2.0, 0.01, 100, 50.0
    pos = torch.full((W, N, 3), box / 2, dtype=torch.float64)
    total = torch.zeros_like(pos)
    pid = torch.arange(N)[None, :, None]
    for s in range(steps):
        xi = noise.normal(0, torch.arange(W).view(-1, 1, 1), Stream.BROWNIAN, pid, s, torch.arange(3)[None, None, :])
        pos, dx = K.brownian_step(pos, None, D, dt, xi, box)
        total += dx
    msd = float((total ** 2).sum(-1).mean())
    assert abs(msd / (6 * D * dt * steps) - 1) < 0.05


def _encounter_rate(lam, R=1.0, D=1.0, box=30.0, nA=1500, nB=150, dt=0.005, t_end=20.0, t_skip=5.0, W=2):
    """A + B → B with A re-inserted uniformly (constant concentrations); both diffuse with D,
    from a uniform start. Returns the measured bimolecular rate (volume/time) counted over
    ``(t_skip, t_end]``. Kicks from the model's keyed noise (one hashing pass per step)."""
    N = nA + nB
    pid = torch.arange(N)
    rep = torch.arange(W)
    d3 = torch.arange(3)[None, None, :]
    pos = noise.uniform(5, rep.view(-1, 1, 1), Stream.PLACEMENT, pid[None, :, None], 0, d3,
                        dtype=torch.float64) * box
    isA = torch.zeros(W, N, dtype=torch.bool)
    isA[:, :nA] = True
    pref_b = K.key_prefix(5, rep[:, None], Stream.BROWNIAN, pid[None, :])
    pref_r = K.key_prefix(5, rep[:, None], Stream.REACTION, pid[None, :]).reshape(-1)
    events, t_count = 0, 0.0
    n_steps = int(round(t_end / dt))
    for s in range(1, n_steps + 1):
        pos, _ = K.brownian_step(pos, None, D, dt, K.keyed_normals3(pref_b, s, torch.float64), box)
        gi, gj, _, _ = K.cell_pairs(pos, isA, ~isA, box, R)
        u = K.bits_uniform(K.advance(K.advance(pref_r[gi], s), 16 + gj % N))
        ai, _ = K.doi_select(gi, gj, torch.full_like(u, lam), dt, u, W * N)
        if s * dt > t_skip + 1e-9:
            events += ai.numel()
            t_count += dt
        if ai.numel():  # re-insert the consumed A uniformly
            new = noise.uniform(5, ai // N, Stream.PLACEMENT, ai % N, s, torch.arange(3, 6)[:, None]).T * box
            pos.view(-1, 3)[ai] = new.to(pos.dtype)
    V = box ** 3
    return events / (t_count * W * nA * nB / V)


@pytest.mark.slow
def test_encounter_rate_matches_doi_theory_reaction_limited():
    """Doi finite-rate law k = 4πDR[1 - tanh(κR)/(κR)], κ = sqrt(λ/D), D = D_A + D_B = 2
    (Erban & Chapman 2009), at λR²/D = 1 where k_∞ = 0.24·4πDR, with the first-order
    depletion-zone transient and sink-screening terms of :func:`doi_rate_window` (here +4 %
    and +2 %: R_eff = 0.24 R). Tolerance 6 %: ~3000 counted events (Poisson 1.8 %),
    neglected higher orders in R_eff/sqrt(Dt), R_eff/ξ (< 0.5 %), λ dt = 0.01 and
    sqrt(2 D dt) = 0.14 R discretisation (≲ 1 %), one-reaction-per-step conflicts (< 0.5 %)."""
    nA, nB, box, t0, t1 = 1500, 150, 30.0, 3.0, 12.0
    k = _encounter_rate(lam=2.0, t_end=t1, t_skip=t0, W=2, nA=nA, nB=nB, box=box)
    theory = doi_rate_window(2.0, 1.0, 2.0, nB / box ** 3, t0, t1)
    assert abs(k / theory - 1) < 0.06, (k, theory, K.doi_rate(2.0, 1.0, 2.0))


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "dt-dependent excess over the first-order Doi/Smoluchowski theory at λ = 200: 32 sinks, t in "
    "(3,10]: k/theory = 1.141 at dt = 0.002, 1.085 at dt = 0.001, 1.057 at dt = 0.0005 — linear in "
    "λ·dt, extrapolating to about +3 % at dt -> 0: the bias of a time-stepped Doi model whose Brownian "
    "step is as long as the reactive skin, converging to the theory. Pair search checked against "
    "brute force. A passing test would extrapolate in dt, which needs more worlds than CI affords "
    "(margin ~1.4 sigma now) — see the docstring"))
def test_encounter_rate_approaches_smoluchowski_when_diffusion_limited():
    """λ = 200, λR²/D = 100 (D = D_A + D_B = 2): Doi theory gives k_∞ = 0.90·4πDR, close to
    Smoluchowski's 4πDR. The rate from a uniform start follows Smoluchowski's time-dependent
    law k(t) = k_∞(1 + R_eff/sqrt(πDt)) (R_eff = 0.9 R), +15 % averaged over the counting
    window t ∈ (3, 10]; 32 sinks per 30³ box screen each other by a further ≈ +2 % (first-order
    mean-field term, Felderhof & Deutch); both from :func:`doi_rate_window`.

    History: the first version used 150 sinks per box and compared with the bare k_∞; it
    measured k = 28.2 vs k_∞ = 22.6 (+25 %): sink screening (+23 % at that density) plus the
    transient, not a kernel error — with both terms the theory gives 27.8 (+1.4 %). With
    8 sinks, dt = 0.001, t ∈ (4, 12], 4 worlds: k = 26.8 vs 25.7 (+4.2 %, Poisson 3.6 %).

    Intended tolerance 8 %: ~1500 counted events (Poisson 2.6 %), second-order transient and
    screening terms (≲ 2 %), discretisation λ dt = 0.4 and Brownian step sqrt(2 D dt) = 0.09 R
    vs the reactive skin sqrt(D/λ) = 0.1 R (assumed ≲ 2 %). MEASURED (this set-up, 44 s):
    k = 30.23 vs 26.47 (+14 %); dt = 0.001: +8.5 %; so the discretisation assumption is wrong:
    the excess grows ~linearly with dt (extrapolates to ≈ +3 % at dt → 0). Until explained
    (discrete-time Doi correction, or a reaction-step flaw) this is a strict xfail.
    Added 28 Nov 2026: dt = 0.0005 (λ dt = 0.1, same set-up, 177 s) gives k = 27.98 (+5.7 %):
    the excess is linear in λ dt (+14.1, +8.5, +5.7 % at λ dt = 0.4, 0.2, 0.1; slope ≈ 0.28 per
    unit λ dt, intercept ≈ +2.9 %), i.e. the first-order bias of a time-discretised Doi step
    whose Brownian step (0.09 R) is as long as the reactive skin sqrt(D/λ) = 0.1 R, converging
    to the continuous-time theory; no sign of a flaw in the reaction step itself.
    Also within 20 % of the bare Smoluchowski 4πDR (the λ → ∞ limit; Doi's k_∞ is 10 % below)."""
    nA, nB, box, t0, t1, dt = 3000, 32, 30.0, 3.0, 10.0, 0.002
    k = _encounter_rate(lam=200.0, dt=dt, t_end=t1, t_skip=t0, W=2, nA=nA, nB=nB, box=box)
    theory = doi_rate_window(200.0, 1.0, 2.0, nB / box ** 3, t0, t1)
    assert abs(k / theory - 1) < 0.08, (k, theory, K.doi_rate(200.0, 1.0, 2.0))
    assert abs(k / K.smoluchowski_rate(2.0, 1.0) - 1) < 0.20, k


# --------------------------------------------------------------------------- Lennard-Jones
@pytest.mark.slow
def test_lj_fluid_state_point_matches_johnson_zollweg_gubbins():
    """NVT (BAOAB Langevin, γ = 1) at T* = 2.0, ρ* = 0.7, N = 256, rc = 3σ truncated, with
    analytic tail corrections, against the JZG 1993 equation of state (U*/N = -4.302, P* = 3.050).
    Tolerances: U/N within 1.5 % and P within 4 %: the EOS reproduces its source simulations to
    ≈ 1 % in U and a few % in P; statistical errors over 2 worlds × 4.5 τ of sampling are
    ≈ 0.4 % (U) and ≈ 1.5 % (P); N = 256 finite-size effects at this supercritical state are
    < 0.5 % (tail corrections assume g(r) = 1 beyond 3σ). Measured (N = 256, 1200 steps):
    U/N -0.04 %, P -0.9 % from the EOS; 88 s on the loaded 2-core CI box with a cell list every
    step, 10 s with Verlet lists (issue 20)."""
    wb = WorldBatch.replications(0, 2)
    m = LJFluidTwin(wb, dt=0.005, horizon=6.0, n_particles=256, density=0.7, temperature=2.0, cutoff=3.0,
                    gamma=1.0, equilibration=0.25)
    r = m.run(progress=False).worlds
    U_ref, P_ref = jzg_eos(0.7, 2.0)
    assert abs(r["potential_energy"].mean() / U_ref - 1) < 0.015, r
    assert abs(r["pressure"].mean() / P_ref - 1) < 0.04, r
    assert abs(r["temperature"].mean() / 2.0 - 1) < 0.02, r


@pytest.mark.parametrize("horizon", [pytest.param(0.6, id="short"),
                                     pytest.param(4.0, id="long", marks=pytest.mark.slow)])
def test_nve_energy_drift_is_bounded(horizon):
    """Velocity Verlet (γ = 0) with the shifted potential: total energy per particle over
    up to 2000 steps (dt = 0.002 τ, 4 τ) at T* = 2, ρ* = 0.7. Bound |ΔH/N| < 2e-3 ε and
    fluctuation std(H/N) < 2e-3 ε: Verlet's shadow-Hamiltonian error is O(dt²) ≈ 1e-4 here;
    the force jump at the 3σ cutoff adds a random walk of a few 1e-4 over 4 τ."""
    m = LJFluidTwin(WorldBatch.replications(0, 1), dt=0.002, horizon=4.0, n_particles=256, density=0.7,
                    temperature=2.0, cutoff=3.0, gamma=0.0, shift=True, record_every=10)
    m.horizon, m.n_steps = horizon, int(round(horizon / 0.002))
    r = m.run(progress=False).worlds
    H = m.results().tables["timeseries"]["total_energy"].to_numpy()
    assert abs(H[-1] - H[0]) < 2e-3, (H[0], H[-1])
    assert H.std() < 2e-3


# --------------------------------------------------------------------------- ReaDDy side by side
@pytest.mark.slow
def test_side_by_side_with_readdy_equilibrium_counts():
    """Same reversible system in ReaDDy (PyPI ``readdy``) and here: 40 immobile receptors,
    60 ligands (D = 1), R = 1, λ = 5, k_off = 1, dt = 0.02, periodic 10³ box. Both are
    Doi-model simulators. Twins vs the exact canonical value within 5 %: the standard error
    of the mean is ≈ 1.5 % (equilibrium std ≈ 3 complexes, ≈ 100 independent samples) and the
    discrete-time one-reaction-per-step bias ≲ 2 %.

    OBSERVED: ReaDDy 2.0.14 gives ≈ 10 % fewer complexes than that theory (16.6 vs 18.3;
    twins 18.4). Not pinned down; what ReaDDy documents (``add_fusion``/``add_fission``
    docstrings) differs from the scheme whose K_d = p_off/(p_on V_R) is exact: fusion puts C
    on the L–R axis (midpoint by default), and fission places the products on a randomly
    oriented axis at a distance "at most product_distance" — unless that distance is drawn
    with density ∝ r² (uniform in the ball) detailed balance of the Doi binding/unbinding
    pair fails and the equilibrium shifts (Fröhner & Noé 2018, J. Phys. Chem. B 122, 11240,
    on detailed balance of such reversible reaction schemes); ReaDDy's default "Gillespie"
    reaction handler also orders competing events differently from our one-reaction-per-step
    rule. Until measured in isolation, twins vs ReaDDy is held to 15 % (the gap plus 2σ)."""
    pytest.importorskip("readdy", reason="ReaDDy is not installed (pip install readdy)")
    from twins.molecular.reference import readdy_reversible, twins_reversible

    spec = dict(R0=40, L0=60, box=10.0, lam=5.0, koff=1.0, dt=0.02, steps=3000, skip=500)
    # ReaDDy is fast: a 5× longer run cuts its standard error to ≈ 0.7 % so the comparison
    # measures the model gap, not ReaDDy's sampling noise (runs of 3,000 steps gave 15.8–16.6)
    c_rd, _ = readdy_reversible(**{**spec, "steps": 15000})
    c_tw, _ = twins_reversible(**spec, worlds=4)
    theory = canonical_complexes(40, 60, K.doi_dissociation_constant(5.0, 1.0, 1.0, 0.02) * 1000.0)
    assert abs(c_tw / theory - 1) < 0.05, (c_tw, theory)
    assert abs(c_tw / c_rd - 1) < 0.15, (c_tw, c_rd)
