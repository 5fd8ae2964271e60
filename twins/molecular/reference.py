"""Published reference data used by the validation tests and benchmarks.

Lennard-Jones equation of state of Johnson, Zollweg & Gubbins (1993):
J. K. Johnson, J. A. Zollweg, K. E. Gubbins, "The Lennard-Jones equation of
state revisited", Mol. Phys. 78, 591-618 (1993), doi:10.1080/00268979300100411.
A 33-parameter modified Benedict–Webb–Rubin fit (Table 10) to MD/MC data of the
*full* (untruncated, i.e. tail-corrected) LJ fluid. Away from the critical
region the fit reproduces the simulation data it was fitted to within about
1 % in the internal energy and a few hundredths (reduced units) to a few
percent in the pressure (JZG 1993, section 4).
"""
from __future__ import annotations

import math
import os
import tempfile
import time

import numpy as np
import torch

_X = (
    0.8623085097507421, 2.976218765822098, -8.402230115796038, 0.1054136629203555,
    -0.8564583828174598, 1.582759470107601, 0.7639421948305453, 1.753173414312048,
    2.798291772190376e3, -4.8394220260857657e-2, 0.9963265197721935, -3.698000291272493e1,
    2.084012299434647e1, 8.305402124717285e1, -9.574799715203068e2, -1.477746229234994e2,
    6.398607852471505e1, 1.603993673294834e1, 6.805916615864377e1, -2.791293578795945e3,
    -6.245128304568454, -8.116836104958410e3, 1.488735559561229e1, -1.059346754655084e4,
    -1.131607632802822e2, -8.867771540418822e3, -3.986982844450543e1, -4.689270299917261e3,
    2.593535277438717e2, -2.694523589434903e3, -7.218487631550215e2, 1.721802063863269e2,
)
_GAMMA = 3.0


def jzg_eos(rho: float, T: float) -> tuple[float, float]:
    """``(U/N, P)`` of the full LJ fluid (reduced units) from the JZG 1993 MBWR equation.

    ``U/N`` is the configurational (excess) internal energy per particle.
    """
    x = (0.0,) + _X  # 1-based like the paper
    sT = math.sqrt(T)
    a = [
        x[1] * T + x[2] * sT + x[3] + x[4] / T + x[5] / T**2,
        x[6] * T + x[7] + x[8] / T + x[9] / T**2,
        x[10] * T + x[11] + x[12] / T,
        x[13],
        x[14] / T + x[15] / T**2,
        x[16] / T,
        x[17] / T + x[18] / T**2,
        x[19] / T**2,
    ]
    b = [
        (x[20] + x[21] / T) / T**2,
        (x[22] + x[23] / T**2) / T**2,
        (x[24] + x[25] / T) / T**2,
        (x[26] + x[27] / T**2) / T**2,
        (x[28] + x[29] / T) / T**2,
        (x[30] + x[31] / T + x[32] / T**2) / T**2,
    ]
    c = [
        x[2] * sT / 2 + x[3] + 2 * x[4] / T + 3 * x[5] / T**2,
        x[7] + 2 * x[8] / T + 3 * x[9] / T**2,
        x[11] + 2 * x[12] / T,
        x[13],
        2 * x[14] / T + 3 * x[15] / T**2,
        2 * x[16] / T,
        2 * x[17] / T + 3 * x[18] / T**2,
        3 * x[19] / T**2,
    ]
    d = [
        (3 * x[20] + 4 * x[21] / T) / T**2,
        (3 * x[22] + 5 * x[23] / T**2) / T**2,
        (3 * x[24] + 4 * x[25] / T) / T**2,
        (3 * x[26] + 5 * x[27] / T**2) / T**2,
        (3 * x[28] + 4 * x[29] / T) / T**2,
        (3 * x[30] + 4 * x[31] / T + 5 * x[32] / T**2) / T**2,
    ]
    F = math.exp(-_GAMMA * rho * rho)
    G = [(1 - F) / (2 * _GAMMA)]
    for i in range(1, 6):
        G.append(-(F * rho ** (2 * i) - 2 * i * G[i - 1]) / (2 * _GAMMA))
    U = sum(c[i] * rho ** (i + 1) / (i + 1) for i in range(8)) + sum(d[i] * G[i] for i in range(6))
    P = rho * T + sum(a[i] * rho ** (i + 2) for i in range(8)) + F * sum(b[i] * rho ** (2 * i + 3) for i in range(6))
    return U, P




# ---------------------------------------------------------------- reversible binding validation set-up

def canonical_complexes(R0: int, L0: int, K: float) -> float:
    """Exact equilibrium <C> of R0 receptors + L0 ligands ⇌ C for ideal particles in a
    closed volume (canonical ensemble, finite molecule numbers), with K = K_d · V in
    molecules: P(C) ∝ binom(R0, C) · L0!/(L0-C)! · K^-C. Mass action / Langmuir is its
    large-number limit."""
    lw = [math.lgamma(R0 + 1) - math.lgamma(c + 1) - math.lgamma(R0 - c + 1) + math.lgamma(L0 + 1)
          - math.lgamma(L0 - c + 1) - c * math.log(K) for c in range(min(R0, L0) + 1)]
    m = max(lw)
    w = [math.exp(x - m) for x in lw]
    return sum(c * wi for c, wi in enumerate(w)) / sum(w)


def binding_box(worlds, *, R0=40, box=10.0, R=1.0, D_L=1.0, D_R=0.0, lam=5.0, koff=1.0,
                dt=0.02, horizon=12.0, dose=60, record_every=5, dtype=torch.float64):
    """Reversible L + R ⇌ C in a periodic box: one dose at t=0, no clearance, no off-target."""
    from .model import MolecularTwin

    return MolecularTwin(worlds, dt=dt, horizon=horizon, dtype=dtype, box=box, reaction_radius=R,
                         cells=(("all", R0, 0.0, 1.0),), n_offtarget=0, D_target=D_R, D_offtarget=0.0,
                         D_ligand=D_L, k_on_target=lam, k_off_target=koff, dose=dose, n_doses=1, k_el=0.0,
                         record_every=record_every, collect=False)


# ---------------------------------------------------------------- encounter-rate theory

def doi_rate_window(lam: float, R: float, D: float, rho_sink: float, t0: float, t1: float) -> float:
    """Mean bimolecular rate over ``[t0, t1]`` of A + B → B from a uniform start, by the Doi model.

    ``k(t) = k_∞ [1 + R_eff (e^{-t/τ}/sqrt(πDt) + erf(sqrt(t/τ))/ξ)]`` with
    ``k_∞`` the Doi rate (:func:`kernels.doi_rate`, Erban & Chapman 2009),
    ``R_eff = k_∞/(4πD)`` and ``ξ = sqrt(D/(k_∞ ρ_sink))``, ``τ = ξ²/D``. For
    ``ρ_sink → 0`` this is Smoluchowski's time-dependent rate
    ``4πDR(1 + R/sqrt(πDt))`` (λ → ∞) with R → R_eff (its long-time form for a
    partially absorbing sphere); for ``t → ∞`` the mean-field screening of
    sinks at density ``ρ_sink`` (Felderhof & Deutch 1976, J. Chem. Phys. 64,
    4551: ``k = 4πDR(1 + sqrt(3φ))`` for perfect sinks). First order in
    ``R_eff/sqrt(Dt)`` and ``R_eff/ξ``.
    """
    from .kernels import doi_rate

    k = doi_rate(lam, R, D)
    r_eff = k / (4 * math.pi * D)
    ts = [t0 + (t1 - t0) * (i + 0.5) / 4000 for i in range(4000)]  # midpoint rule
    if rho_sink > 0:
        xi = math.sqrt(D / (k * rho_sink))
        tau = xi * xi / D
        corr = [math.exp(-t / tau) / math.sqrt(math.pi * D * t) + math.erf(math.sqrt(t / tau)) / xi for t in ts]
    else:
        corr = [1.0 / math.sqrt(math.pi * D * t) for t in ts]
    return k * (1.0 + r_eff * sum(corr) / len(corr))


# ---------------------------------------------------------------- side by side with ReaDDy (tests + benchmark)

def readdy_reversible(R0=40, L0=60, box=10.0, lam=5.0, koff=1.0, dt=0.02, steps=3000, skip=500, seed=0,
                      threads=1, clock=time.perf_counter):
    """ReaDDy 2 (CPU kernel) on the reversible system: ``(mean complexes after skip, particle-steps/s)``;
    seconds by ``clock`` (wall; ``time.process_time``: this process's CPU time, robust to a loaded machine)."""
    import readdy

    system = readdy.ReactionDiffusionSystem(box_size=[box] * 3, unit_system=None,
                                            periodic_boundary_conditions=[True] * 3)
    system.add_species("L", 1.0)
    system.add_species("R", 0.0)
    system.add_species("C", 0.0)
    system.reactions.add("bind: L +(1.0) R -> C", rate=lam)
    system.reactions.add("unbind: C -> L +(1.0) R", rate=koff)
    sim = system.simulation(kernel="CPU")
    sim.kernel_configuration.n_threads = threads
    rng = np.random.default_rng(seed)  # initial placement only (ReaDDy's own RNG drives its dynamics)
    sim.add_particles("L", rng.uniform(-box / 2, box / 2, (L0, 3)))
    sim.add_particles("R", rng.uniform(-box / 2, box / 2, (R0, 3)))
    fd, path = tempfile.mkstemp(suffix=".h5")
    os.close(fd)
    os.remove(path)
    sim.output_file = path
    sim.observe.number_of_particles(10, ["L", "R", "C"])
    sim.show_progress = False
    t0 = clock()
    sim.run(steps, dt)
    wall = clock() - t0
    traj = readdy.Trajectory(path)
    _, counts = traj.read_observable_number_of_particles()
    os.remove(path)
    c = counts[skip // 10:, 2].astype(float)
    n_particles = counts[:, 0] + counts[:, 1] + counts[:, 2]  # L + R + C
    return float(c.mean()), float(n_particles.mean()) * steps / wall


def twins_reversible(R0=40, L0=60, box=10.0, lam=5.0, koff=1.0, dt=0.02, steps=3000, skip=500, worlds=1,
                     dtype=torch.float32, clock=time.perf_counter):
    """The same system in the molecular twin: ``(mean complexes after skip, particle-steps/s)``."""
    from twins.core.worlds import WorldBatch

    m = binding_box(WorldBatch.replications(0, worlds), R0=R0, box=box, lam=lam, koff=koff, dt=dt,
                    horizon=steps * dt, dose=L0, record_every=10, dtype=dtype)
    m.step()  # warm-up (also allocations)
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    while m.step_index < m.n_steps:
        m.step()
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    wall = clock() - t0
    ts = m.results().tables["timeseries"]
    c = ts[ts.time >= skip * dt]["target_complexes"].mean()
    live = worlds * (R0 + L0 - c)  # free receptors + free ligands + complexes, counted as ReaDDy does
    return float(c), live * (m.n_steps - 1) / wall


