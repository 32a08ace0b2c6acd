"""Properties of the systems, schemes and backend ops that the rest of the suite left unchecked.

Each test was written against a one-line mutant that survived the suite (mutation testing of
dynopt/systems, dynopt/integrators and the backends' ops): the mutant it kills is named in its
docstring. The checks are exact values (analytic or reference), conserved quantities, parity
between the numba and torch backends, or moments against their exact values within 4 standard
errors with the standard error itself bounded.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S

BACKENDS = ["numba", "torch"]


def _check(est: float, se: float, exact: float, se_bound: float, label: str) -> None:
    assert se < se_bound, f"{label}: SE {se:.3g} above its expected size {se_bound:.3g}"
    assert abs(est - exact) < 4 * se, f"{label}: {est:.5f} vs exact {exact:.5f} (SE {se:.2g})"


# --- overdamped Langevin: the friction γ sets the time scale ------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["em", "lm"])
def test_overdamped_gradient_step_is_h_over_gamma(backend, scheme):
    """dq = −γ⁻¹∇U dt at τ = 0: on U = ω²q²/2 each step multiplies q by exactly 1 − hω²/γ
    (kills G lowered as h·γ instead of h/γ: every other test runs at γ = 1)."""
    omega, gamma, h = 1.5, 4.0, 0.2
    system = S.OverdampedLangevin(P.Harmonic(omega), temperature=0.0, gamma=gamma)
    traj = dynopt.integrate(system, scheme, [1.0], h=h, n_steps=5, seed=0, backend=backend)
    exact = (1.0 - h * omega**2 / gamma) ** np.arange(6)
    np.testing.assert_allclose(traj.q[0, :, 0], exact, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("scheme", "factor"), [("em", 2.0), ("lm", 1.0)])
def test_overdamped_first_increment_variance(backend, scheme, factor):
    """One step on a flat potential from q = 0: Var q₁ = 2τh/γ for Euler–Maruyama
    (√(2τh/γ) R₁) and τh/γ for Leimkuhler–Matthews (√(τh/(2γ)) (R₀ + R₁), with R₀ drawn at the
    start). Kills the LM memory R₀ started at 0 instead of a normal (half the variance) and the
    noise amplitudes' γ (every other test runs at γ = 1)."""
    tau, gamma, h, n = 0.7, 4.0, 0.2, 8192
    system = S.OverdampedLangevin(P.Harmonic(1e-6), temperature=tau, gamma=gamma)
    traj = dynopt.integrate(system, scheme, [0.0], h=h, n_steps=1, n_chains=n, seed=3,
                            backend=backend)
    x2 = traj.q[:, -1, 0] ** 2  # the mean is 0 exactly
    exact = factor * tau * h / gamma
    _check(float(x2.mean()), float(x2.std(ddof=1) / math.sqrt(n)), exact,
           1.25 * exact * math.sqrt(2.0 / n), f"{backend} {scheme}")


# --- Nosé–Hoover and its chains ------------------------------------------------------------------

@pytest.mark.parametrize("order", [1, 3, 5, 7])
def test_suzuki_yoshida_weights_are_consistent_and_of_their_order(order):
    """Σw = 1 (the substeps add up to t), w symmetric, and the order conditions of a symmetric
    composition of a second-order step: Σw³ = 0 for order ≥ 4 schemes (3 and 5 weights), also
    Σw⁵ = 0 for Yoshida's 7-weight sixth-order scheme (kills a wrong middle weight)."""
    from dynopt.systems.nose_hoover_chain import SUZUKI_YOSHIDA

    w = np.array(SUZUKI_YOSHIDA[order])
    assert len(w) == order
    assert abs(w.sum() - 1.0) < 1e-14
    np.testing.assert_array_equal(w, w[::-1])
    if order >= 3:
        assert abs((w**3).sum()) < 1e-13
    if order == 7:
        assert abs((w**5).sum()) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_nose_hoover_chain_substeps_compose(backend):
    """T with n_substeps = 2 is exactly T_{t/2} ∘ T_{t/2} of n_substeps = 1 (Suzuki–Yoshida order
    1): the substeps are a composition of the same chain flow (kills n_substeps not reaching the
    op, which runs one substep whatever was asked; both backends read the same op, so parity
    cannot see it)."""
    pot = P.Harmonic(omega=[1.0, 1.7], dim=2)
    two = S.NoseHooverChain(pot, temperature=0.5, chain_length=3, tau=0.5, n_substeps=2,
                            sy_order=1)
    one = S.NoseHooverChain(pot, temperature=0.5, chain_length=3, tau=0.5, n_substeps=1,
                            sy_order=1)
    kw = dict(h=0.05, n_steps=40, record_every=10, seed=0, p0=[[1.5, -0.7]], backend=backend)
    a = dynopt.integrate(two, "TBABT", [[0.3, 0.2]], **kw)
    b = dynopt.integrate(one, dynopt.integrators.Splitting("TTBABTT"), [[0.3, 0.2]], **kw)
    c = dynopt.integrate(one, "TBABT", [[0.3, 0.2]], **kw)
    np.testing.assert_allclose(a.p, b.p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a.extras["v"], b.extras["v"], rtol=0, atol=1e-12)
    assert np.abs(a.extras["v"] - c.extras["v"]).max() > 1e-6  # the substeps matter here


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("make", [
    lambda pot: S.NoseHoover(pot, temperature=0.5, tau=0.7, xi0=0.3),
    lambda pot: S.AdaptiveLangevin(pot, temperature=0.5, sigma_a=0.0, xi0=0.3),
], ids=["nose-hoover", "adaptive-langevin"])
def test_thermostat_starts_at_xi0(backend, make):
    """The run starts at ξ = ξ₀ (and η = 0): kills ξ₀ written into the wrong extra (every other
    test of Nosé–Hoover starts at the default ξ₀ = 0, where the two are the same)."""
    system = make(P.Harmonic(dim=2))
    traj = dynopt.integrate(system, None, [0.5, -0.2], p0=[0.3, 0.1], h=0.01, n_steps=1,
                            seed=0, backend=backend)
    assert traj.extras["xi"][0, 0] == 0.3
    if "eta" in traj.extras:
        assert traj.extras["eta"][0, 0] == 0.0


# --- adaptive Langevin -----------------------------------------------------------------------------

def test_adaptive_langevin_stationary_xi_moments_are_the_reference_values():
    """⟨ξ⟩ = σ_A²/(2τ) and Var ξ = ετ: the values of langevin-thermostats.md §5.4 (τ = 0.5,
    σ_A = 0.6, ε = 0.3: 0.36 and 0.15). Kills Var ξ written as ε/τ (the noise-amplitude test
    uses it only as a bound on its standard error)."""
    system = S.AdaptiveLangevin(P.Harmonic(), temperature=0.5, sigma_a=0.6, eps=0.3)
    assert system.xi_mean == pytest.approx(0.36, rel=1e-14)
    assert system.xi_variance == pytest.approx(0.15, rel=1e-14)


def test_adaptive_langevin_vector_field_balances_the_extended_energy():
    """Without noise, d/dt (H + ξ²/(2ε)) = −ξ pᵀM⁻¹p + ξ (pᵀM⁻¹p − Nτ) = −Nτξ exactly, at any
    point (q, p, ξ): checks the deterministic field (used by the reference flow and the order
    diagnostics) against the AdL equations with a mass (kills dξ/dt missing N in Nτ)."""
    rng = np.random.default_rng(0)
    mass = np.array([0.5, 2.0, 3.0])
    eps, tau = 0.4, 0.7
    system = S.AdaptiveLangevin(P.Harmonic(omega=[1.0, 1.3, 0.6], dim=3), temperature=tau,
                                sigma_a=0.5, eps=eps, mass=mass)
    q, p, x = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(5, 1))
    dq, dp, dx = system.vector_field(q, p, x)
    dH = (system.potential.grad(q) * dq).sum(-1) + (p / mass * dp).sum(-1) + x[:, 0] * dx[:, 0] / eps
    np.testing.assert_allclose(dH, -3 * tau * x[:, 0], rtol=1e-12, atol=1e-12)


# --- seeds and generators ------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_two_to_the_32_is_not_seed_0(backend):
    """Seeds are 64-bit and every bit counts: 2³² (the first seed torch's 32-bit CPU generator
    cannot hold) draws other noise than 0 (kills the fold into 32 bits starting one seed late,
    where 2³² was truncated to 0)."""
    system = S.Langevin(P.Harmonic(dim=2), gamma=1.0, temperature=1.0)
    kw = dict(h=0.1, n_steps=3, p0=[0.0, 0.0], backend=backend)
    a = dynopt.integrate(system, "BAOAB", [0.0, 0.0], seed=0, **kw)
    b = dynopt.integrate(system, "BAOAB", [0.0, 0.0], seed=2**32, **kw)
    assert np.abs(a.p[:, -1] - b.p[:, -1]).min() > 0.0


# --- energy-conserving descent ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_ecd_first_step_energy_with_s_not_one(backend):
    """With s ≠ 1 the authors' map replaces δE by 1: the first active step fixes
    E = V₀ (s + 1) and starts with |p|² = 1 along −∇F, so V₀(s + |p|²) = E on the shell.
    Every other energy check runs at s = 1, where s + δE and 1 + δE agree (kills E written with
    1 in place of s in either backend's shell, and δE not replaced)."""
    pot = P.Ackley(2, b=0.02)
    s, F0, eta = 4.0, 1e-3, 1.01
    system = S.ECDSep(pot, F0=F0, eta=eta, s=s, nu=0.0, delta_energy=7.0)
    q0 = np.array([-4.0, 3.0])
    traj = dynopt.integrate(system, "S", q0, h=0.1, n_steps=1, seed=0, backend=backend)
    V0 = (pot.value(q0) - F0) ** eta
    assert traj.extras["E"][0, 1] == pytest.approx(V0 * (s + 1.0), rel=1e-13)
    g = pot.grad(q0)
    np.testing.assert_allclose(traj.p[0, 1], -g / np.sqrt(g @ g), rtol=1e-13)


def test_nose_hoover_thermostat_masses_from_the_period():
    """Q = N k_BT τ² for one thermostat, and Q₁ = N k_BT τ², Q_j = k_BT τ² for a chain
    (langevin-thermostats.md §1.4–1.5, jax-md's convention), checked through the conserved
    energy's thermostat term Q ξ²/2 (resp. Σ Q_j v_j²/2) at η = 0 (kills τ in place of τ²)."""
    kT, tau, n = 0.5, 0.7, 3
    zero = np.zeros((1, 1))
    nh = S.NoseHoover(P.Harmonic(dim=n), temperature=kT, tau=tau)
    inv = nh.invariant(zero, zero, {"xi": np.full((1, 1, 1), 2.0), "eta": np.zeros((1, 1, 1))}, n)
    assert inv[0, 0] == pytest.approx(0.5 * n * kT * tau**2 * 4.0, rel=1e-14)
    nhc = S.NoseHooverChain(P.Harmonic(dim=n), temperature=kT, tau=tau, chain_length=2)
    v = np.array([[[2.0, 3.0]]])
    inv = nhc.invariant(zero, zero, {"v": v, "eta": np.zeros((1, 1, 2))}, n)
    assert inv[0, 0] == pytest.approx(0.5 * kT * tau**2 * (n * 4.0 + 9.0), rel=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["cube", "sphere"])
def test_born_infeld_bounce_directions_are_symmetric(backend, direction):
    """A bounce draws a direction uniform in the cube [−½, ½)^d (or Gaussian), so each
    component of the new momentum is positive with probability ½: the mean sign over all
    bounces and components is 0 within 4 SE, with SE ≤ 1.25/√n (kills the cube's −½ dropped in
    either backend, which sends every bounce into the positive orthant)."""
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    system = S.BornInfeld(pot, delta_energy=0.5, t0=1, n_bounces=1000, t1=None,
                          bounce_direction=direction)
    traj = dynopt.integrate(system, None, np.ones(6), h=0.05, n_steps=40, n_chains=64, seed=4,
                            backend=backend)
    bounced = np.diff(traj.extras["bounces"], axis=1) > 0  # step k bounced: p at record k + 1
    signs = np.sign(traj.p[:, 1:][bounced])
    assert signs.shape[0] >= 64 * 15
    n = signs.size
    _check(float(signs.mean()), float(signs.std(ddof=1) / math.sqrt(n)), 0.0,
           1.25 / math.sqrt(n), f"{backend} {direction}")


# --- port-Hamiltonian -----------------------------------------------------------------------------

def test_port_hamiltonian_is_conservative_only_without_friction():
    """dH/dt = −γ pᵀM⁻¹p: the heavy ball conserves its energy only at γ = 0 (the study report's
    "conservative" flag reads this; kills a PortHamiltonian that always claims conservation)."""
    pot = P.Harmonic(dim=2)
    assert S.PortHamiltonian(pot, gamma=0.0).is_conservative
    assert not S.PortHamiltonian(pot, gamma=0.8).is_conservative
    q, p = np.array([[0.3, -0.2]]), np.array([[1.0, 0.5]])
    assert S.PortHamiltonian(pot, gamma=0.8).power(q, p, np.array([[0.8]]))[0] < 0.0


# --- backends: thermostats with a mass -------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda pot: S.NoseHoover(pot, temperature=0.5, tau=0.7, mass=[0.25, 4.0]),
    lambda pot: S.NoseHooverChain(pot, temperature=0.5, chain_length=3, mass=[0.25, 4.0]),
    lambda pot: S.AdaptiveLangevin(pot, temperature=0.3, sigma_a=0.0, eps=0.5,
                                   mass=[0.25, 4.0]),
], ids=["nose-hoover", "nose-hoover-chain", "adaptive-langevin"])
def test_thermostat_parity_with_a_mass(make):
    """numba and torch agree to 1e-10 for the thermostats with a non-unit mass: the
    thermostats read pᵀM⁻¹p (the parity tests run at unit mass, where pᵀp is the same; kills a
    backend's kinetic term without M⁻¹)."""
    system = make(P.DoubleWell(dim=2))
    q0 = np.array([[0.5, -0.3], [1.2, 0.4]])
    p0 = np.array([[1.0, 0.2], [-0.3, 0.5]])
    kw = dict(h=0.02, n_steps=60, record_every=20, seed=0, p0=p0)
    a = dynopt.integrate(system, None, q0, backend="numba", **kw)
    b = dynopt.integrate(system, None, q0, backend="torch", **kw)
    np.testing.assert_allclose(a.p, b.p, rtol=0, atol=1e-10)
    for k in a.extras:
        np.testing.assert_allclose(a.extras[k], b.extras[k], rtol=0, atol=1e-10, err_msg=k)


# --- splitting metadata ---------------------------------------------------------------------------

@pytest.mark.parametrize(("scheme", "order"), [
    ("BAOAB", 2), ("OBABO", 2), ("BACDEDCAB", 2), ("FBABF", 1), ("GWG", 1), ("SBABS", 1),
    ("RBABR", 1), ("BASAB", 1), ("BARAB", 1), ("BAB", 2), ("AB", 1),
])
def test_weak_order_of_palindromes_with_non_symmetric_letters(scheme, order):
    """A palindrome of self-adjoint sub-flows is time-symmetric, hence (weak) second order; one
    with an explicit friction F, gradient step G, shell S or rotation R is not, and stays first
    order (kills the NON_SYMMETRIC exception dropped). Splitting metadata only: "SBABS" and
    "RBABR" are valid strings, though BornInfeld and ECDSep refuse them (S and R are whole-step
    letters there, tests/test_whole_step_letters.py); "BASAB" and "BARAB" are palindromes they
    run."""
    from dynopt.integrators import Splitting

    assert Splitting(scheme).weak_order == order


@pytest.mark.parametrize("backend", BACKENDS)
def test_born_infeld_fixed_bounce_counters_follow_the_documented_rule(backend):
    """The recorded counters of the fixed-bounce schedule (program.py, BBI_SHELL): c₀ + 1 on a
    normal step; on a fixed bounce n_fixed + 1 and c₀ ← 0 while n_fixed < N_b, else c₀ + 1, so
    after the last one c₀ never meets T₀ again. Both backends, against a replay of the rule
    (kills c₀ reset after the last fixed bounce too: the bounce steps are the same, only the
    recorded counter differs, and the backends then disagree)."""
    t0, nb, steps = 7, 3, 50
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    system = S.BornInfeld(pot, delta_energy=0.5, t0=t0, n_bounces=nb, t1=None)
    traj = dynopt.integrate(system, None, np.ones(6), h=0.05, n_steps=steps, seed=1,
                            backend=backend)
    c0 = fixed = 0
    expected_c0, expected_fixed = [], []
    for _ in range(steps):
        if c0 == t0 and fixed < nb:
            fixed += 1
            c0 = 0 if fixed < nb else c0 + 1
        else:
            c0 += 1
        expected_c0.append(c0)
        expected_fixed.append(fixed)
    np.testing.assert_array_equal(traj.extras["counter0"][0, 1:], expected_c0)
    np.testing.assert_array_equal(traj.extras["fixed_bounces"][0, 1:], expected_fixed)


# --- adaptive Langevin: the noise letters D and O with a per-coordinate mass, from ξ = 0 ---------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["BACDEDCAB", "BAEOEAB"])
def test_adaptive_langevin_first_step_noise_with_a_mass(backend, scheme):
    """From q = 0 on an effectively flat potential (ω = 1e-6: the closing kick changes p by a
    relative 1e-14), p = 0, ξ = 0 and a negligible ε (|ξ| stays below 1e-12, so C and the decay
    of O do nothing), one step leaves only the noise:
    the two D_{h/2} draws p += σ_A√(h/2) M^½ R of "BACDEDCAB", or the exact OU step O_h of
    "BAEOEAB" at ξ = 0 (variance σ_A² h, its ξ → 0 limit), so ⟨p_i²⟩ = σ_A² h m_i exactly for
    m = (0.25, 4). Each coordinate over 20 000 chains within 4 SE (SE of a mean of χ²₁: √(2/n)).
    Catches, in either backend: ADD_NOISE without M^½ in integrate() (the optimizer tests use
    a scalar mass), OU_XI without M^½, and OU_XI's ξ = 0 branch with variance t/2."""
    sigma, h, n = 1.2, 0.05, 20_000
    mass = np.array([0.25, 4.0])
    system = S.AdaptiveLangevin(P.Harmonic(1e-6, dim=2), temperature=0.7, sigma_a=sigma,
                                eps=1e-15, xi0=0.0, mass=mass)
    traj = dynopt.integrate(system, scheme, np.zeros(2), p0=np.zeros(2), h=h, n_steps=1,
                            n_chains=n, record_every=1, seed=31, backend=backend)
    assert np.abs(traj.extras["xi"][:, -1]).max() < 1e-12
    z2 = traj.p[:, -1] ** 2 / (sigma**2 * h * mass)
    for i in range(2):
        x = z2[:, i]
        _check(float(x.mean()), float(x.std() / math.sqrt(n)), 1.0, 1.1 * math.sqrt(2.0 / n),
               f"{backend} {scheme} coordinate {i}")


# --- ECDSep: the rotation R acts on the direction of p only ----------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_ecd_rotation_is_independent_of_the_speed(backend):
    """R: p ← |p| u/|u| with u = p/|p| + νR turns the *direction* by a noise of fixed size ν:
    from momenta p₀ and 10 p₀ (no projection, so the shell S only marks the chains moving) the
    same normals give exactly 10× the same result, |p| is kept and p is turned. Every other
    rotation check only looks at |p| and "turned" (kills u = p + νR, whose turn shrinks with
    |p|, in either backend)."""
    system = S.ECDSep(P.Ackley(2, b=0.02), F0=-1.0, eta=1.01, nu=0.5, delta_energy=1.0,
                      consistent_energy=False)
    q0 = np.random.default_rng(7).uniform(-4, 4, (5, 2))
    p0 = np.random.default_rng(8).normal(size=(5, 2))
    kw = dict(h=0.1, n_steps=1, seed=3, backend=backend)
    a = dynopt.integrate(system, "SR", q0, p0=p0, **kw).p[:, -1]
    b = dynopt.integrate(system, "SR", q0, p0=10.0 * p0, **kw).p[:, -1]
    np.testing.assert_allclose(b, 10.0 * a, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(a, axis=-1), np.linalg.norm(p0, axis=-1),
                               rtol=1e-12)
    cos = (a * p0).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(p0, axis=-1))
    assert (cos < 1 - 1e-3).all()


# --- the discrete noise kind: ±√3 with probability 1/6 each, else 0 ------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_discrete_noise_takes_its_three_values_with_their_probabilities(backend):
    """noise="discrete" replaces each normal by ±√3 w.p. 1/6 each and 0 w.p. 2/3 (mean 0,
    variance 1, the moments a weak order-2 scheme needs). One Euler–Maruyama step on a flat
    potential from q = 0 gives q = √(2τh) R, so R = q/√(2τh) is read back exactly: only the
    three values occur, each with its frequency within 4 binomial SE over 40 000 draws
    (kills a wrong threshold of the torch transform, e.g. −√3 w.p. 1/3)."""
    tau, h, n = 0.5, 0.02, 20_000
    system = S.OverdampedLangevin(P.Harmonic(1.0, dim=2), temperature=tau)
    traj = dynopt.integrate(system, "em", np.zeros(2), h=h, n_steps=1, n_chains=n,
                            record_every=1, seed=5, backend=backend, noise="discrete")
    z = (traj.q[:, -1] / math.sqrt(2.0 * tau * h)).ravel()
    root3 = math.sqrt(3.0)
    near = [np.abs(z - v) < 1e-9 for v in (-root3, 0.0, root3)]
    assert sum(int(m.sum()) for m in near) == z.size
    for m, prob in zip(near, (1 / 6, 2 / 3, 1 / 6), strict=True):
        assert abs(m.mean() - prob) < 4 * math.sqrt(prob * (1 - prob) / z.size), m.mean()


# --- the Bounce event keeps pᵀM⁻¹p with the momentum along a heavy coordinate -------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_bounce_keeps_the_kinetic_energy_with_the_momentum_on_the_heavy_coordinate(backend):
    """A bounce draws a new direction with the same pᵀM⁻¹p. With masses (1, 100) and p along
    the heavy coordinate, |p| = 10 but pᵀM⁻¹p = 1: a bounce that keeps |M^{-½}p| keeps H (leapfrog
    at h = 1e-3 on a harmonic well: error ~1e-7), one that keeps |p| multiplies the kinetic
    energy by up to 100. (The other bounce test starts with p on the unit-mass coordinate, where
    |p| and |M^{-½}p| agree, so it cannot tell them apart.)"""
    from dynopt.events import AtStep, Bounce

    mass = np.array([1.0, 100.0])
    system = S.Hamiltonian(P.Harmonic(omega=[1.0, 0.1], dim=2), mass=mass)
    n = 64
    traj = dynopt.integrate(system, "BAB", [1.0, 0.5], h=1e-3, n_steps=12, seed=4, n_chains=n,
                            p0=np.tile([0.0, 10.0], (n, 1)), backend=backend,
                            events=[AtStep(10, then=Bounce())])
    np.testing.assert_allclose(traj.energy[:, 12], traj.energy[:, 10], rtol=1e-5)
    assert np.abs(traj.p[:, 11, 0]).min() > 0.0  # the direction did change


# --- Born–Infeld: the first step's momentum without the projection --------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_born_infeld_first_step_starts_on_the_energy_shell_without_projection(backend):
    """From p = 0 the first active step sets E₀ = V₀ + δE and starts along −∇V with
    |Π|² = E₀²/V₀ − V₀, so V₀(V₀ + |Π|²) = E₀² (energy-conserving-and-port-hamiltonian.md §1.3,
    line (*)). With consistent_energy=False no projection follows to repair a wrong start, so the
    shell S alone must leave exactly that Π (kills |Π|² = E₀²/V₀, which the projection of every
    other test rescales back onto the shell)."""
    pot = P.Ackley(2, b=0.02)
    v0, de = 1e-4, 2.0
    system = S.BornInfeld(pot, v0=v0, delta_energy=de, t0=None, t1=None,
                          consistent_energy=False)
    q0 = np.array([[-4.0, 3.0], [1.5, -0.7]])
    traj = dynopt.integrate(system, "S", q0, h=0.01, n_steps=1, seed=0, backend=backend)
    V0 = pot.value(q0) - v0
    E0 = V0 + de
    g = pot.grad(q0)
    gn = np.linalg.norm(g, axis=-1, keepdims=True)
    expected = -g / gn * np.sqrt(E0 * E0 / V0 - V0)[:, None]
    np.testing.assert_allclose(traj.p[:, -1], expected, rtol=1e-13)
    p2 = (traj.p[:, -1] ** 2).sum(-1)
    np.testing.assert_allclose(V0 * (V0 + p2), E0**2, rtol=1e-13)


# --- the energy shells keep a given momentum's direction on the first step ----------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bbi", "ecd"])
def test_first_shell_step_keeps_a_given_momentums_direction(backend, kind):
    """Only a chain that starts at rest (|Π|² = 0) is started along −∇V; a given p₀ keeps its
    direction and is projected onto the shell: |Π|² = E₀²/V₀ − V₀ with E₀ = V₀ + δE (Born–Infeld),
    |p|² = E/V₀ − s = δE with E = V₀(s + δE) (ECDSep). Both backends (kills the start along −∇V
    applied whatever p₀ is: the other given-direction check runs on numba only)."""
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    de = 0.3
    q0 = np.ones(6)
    p0 = np.arange(6.0) - 1.5  # not parallel to ∇U(q0) = ω² q0
    V0 = float(pot.value(q0))
    if kind == "bbi":
        system = S.BornInfeld(pot, delta_energy=de, t0=None, t1=None)
        E0 = V0 + de
        norm2 = E0 * E0 / V0 - V0
    else:
        system = S.ECDSep(pot, F0=0.0, eta=1.0, nu=0.0, delta_energy=de)
        norm2 = de
    traj = dynopt.integrate(system, "S", q0, p0=p0, h=0.05, n_steps=1, seed=0, backend=backend)
    np.testing.assert_allclose(traj.p[0, -1], p0 / np.linalg.norm(p0) * math.sqrt(norm2),
                               rtol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["bbi", "ecd"])
def test_shell_leaves_the_momentum_alone_in_the_forbidden_region(backend, kind):
    """Where the shell cannot be reached, no rescale: r = 1 if E₀²/V − V < 0 (Born–Infeld,
    V > E₀) and c = 1 if E/V − s < 0 (ECDSep) (energy-conserving-and-port-hamiltonian.md
    §1.3 and §2). The first step fixes the energy at q₀; the position is then moved to 2q₀ on
    a harmonic well (V = 4V₀ above both levels for δE = 0.3) and one more shell step must return
    Π exactly as it was (kills the guard dropped: the square root of a negative ratio gives
    NaN momenta, which integrate() reports as a divergence)."""
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    if kind == "bbi":
        system = S.BornInfeld(pot, delta_energy=0.3, t0=None, t1=None)
    else:
        system = S.ECDSep(pot, F0=0.0, eta=1.0, nu=0.0, delta_energy=0.3)
    q0, p0 = np.ones(6), np.arange(6.0) - 1.5
    first = dynopt.integrate(system, "S", q0, p0=p0, h=0.05, n_steps=1, seed=0,
                             backend=backend)
    state = first.final_state
    state.q[:] = 2.0 * state.q
    second = dynopt.integrate(system, "S", None, h=0.05, n_steps=1, state=state)
    assert float(pot.value(2.0 * q0)) == pytest.approx(4.0 * float(pot.value(q0)))
    np.testing.assert_array_equal(second.p[0, -1], first.p[0, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ecd_rotation_leaves_a_frozen_chain_alone(backend):
    """The shell's "moving" flag gates the rotation R: at or below the floor (U ≤ F₀) the chain
    is frozen and its momentum is not turned (the rotation sits inside the authors' ``V > eps2``
    branch; energy-conserving-and-port-hamiltonian.md §2). One chain above F₀ (turned) and one
    below (p and q kept exactly) (kills R applied to every chain with p ≠ 0)."""
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    system = S.ECDSep(pot, F0=1.0, eta=1.0, nu=0.5, delta_energy=0.3)
    q0 = np.stack([np.ones(6), 0.1 * np.ones(6)])
    assert pot.value(q0)[0] > 1.0 > pot.value(q0)[1]
    p0 = np.tile(np.arange(6.0) - 1.5, (2, 1))
    traj = dynopt.integrate(system, "SR", q0, p0=p0, h=0.05, n_steps=1, seed=2,
                            backend=backend)
    np.testing.assert_array_equal(traj.p[1, -1], p0[1])
    np.testing.assert_array_equal(traj.q[1, -1], q0[1])
    cos = traj.p[0, -1] @ p0[0] / (np.linalg.norm(traj.p[0, -1]) * np.linalg.norm(p0[0]))
    assert cos < 1 - 1e-3


# --- a run resumed from its final state continues the same noise --------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_resumed_run_continues_the_noise_of_one_long_run(backend):
    """State.copy() copies the RNG state with the arrays, so 4 steps and then 6 more from
    ``final_state`` are bit-identical to 10 steps in one run, and resuming twice from the same
    state gives the same run (kills the torch copy that makes a fresh generator: numba's noise
    is a pure function of seed, chain and step, torch's depends on the generator's state)."""
    system = S.Langevin(P.DoubleWell(dim=2), gamma=0.7, temperature=0.4)
    q0 = np.array([[0.5, -0.3], [1.2, 0.4]])
    kw = dict(h=0.05, seed=11)
    one = dynopt.integrate(system, "BAOAB", q0, n_steps=10, backend=backend, **kw)
    part = dynopt.integrate(system, "BAOAB", q0, n_steps=4, backend=backend, **kw)
    rest = dynopt.integrate(system, "BAOAB", None, n_steps=6, h=0.05, state=part.final_state)
    again = dynopt.integrate(system, "BAOAB", None, n_steps=6, h=0.05, state=part.final_state)
    np.testing.assert_array_equal(rest.q[:, -1], one.q[:, -1])
    np.testing.assert_array_equal(rest.p[:, -1], one.p[:, -1])
    np.testing.assert_array_equal(again.p[:, -1], rest.p[:, -1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_born_infeld_bounce_keeps_each_chains_momentum_norm(backend):
    """A bounce gives each chain a new direction with *its own* |Π| and does not move it
    (energy-conserving-and-port-hamiltonian.md §1.4: "|Π| unchanged exactly"), with 16 chains
    bouncing on the same steps (t0 = 1: every other step). The other bounce-norm check runs a
    single chain (kills the normalisation |u|² summed over all chains instead of per chain)."""
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    system = S.BornInfeld(pot, delta_energy=0.5, t0=1, n_bounces=1000, t1=None)
    q0 = np.random.default_rng(5).uniform(-2, 2, (16, 6))
    traj = dynopt.integrate(system, None, q0, h=0.05, n_steps=6, seed=4, backend=backend)
    bounced = np.diff(traj.extras["bounces"], axis=1) > 0  # step k bounced: record k + 1
    assert bounced.sum(0).max() == 16  # all chains bounce together
    before = np.linalg.norm(traj.p[:, :-1], axis=-1)[bounced]
    after = np.linalg.norm(traj.p[:, 1:], axis=-1)[bounced]
    np.testing.assert_allclose(after, before, rtol=1e-13)
    np.testing.assert_array_equal(traj.q[:, 1:][bounced], traj.q[:, :-1][bounced])


@pytest.mark.parametrize("backend", BACKENDS)
def test_born_infeld_progress_clock_reads_the_minimum_on_normal_steps_only(backend):
    """The progress clock (energy-conserving-and-port-hamiltonian.md §1.3): a normal step
    advances it and resets it on a new minimum of V; a bounce resets it and does *not* update
    min V (the check sits in the normal branch). Descending a harmonic well, V at a fixed bounce
    is a new minimum, so the step after the bounce (same q, same V) must find it new and reset
    the clock. Recorded counter and min V against a replay of the rule on the recorded V (kills
    min V updated on bounce steps too, which leaves the clock at 1 there)."""
    t0, nb, steps = 3, 3, 20
    pot = P.Harmonic(omega=np.linspace(0.5, 2.0, 6), dim=6)
    system = S.BornInfeld(pot, delta_energy=0.5, t0=t0, n_bounces=nb, t1=None)
    traj = dynopt.integrate(system, None, 3.0 * np.ones(6), h=0.05, n_steps=steps, seed=1,
                            backend=backend)
    V = traj.extras["V"][0, 1:]  # the V read by the shell of step k
    bounced = np.diff(traj.extras["bounces"][0]) > 0
    assert bounced.sum() == nb
    counter, vmin = 0, math.inf
    expected_counter, expected_min = [], []
    for v, b in zip(V, bounced, strict=True):
        if b:
            counter = 0
        else:
            counter += 1
            if v < vmin:
                vmin, counter = v, 0
        expected_counter.append(counter)
        expected_min.append(vmin)
    np.testing.assert_array_equal(traj.extras["counter"][0, 1:], expected_counter)
    np.testing.assert_array_equal(traj.extras["min_V"][0, 1:], expected_min)
    after = np.flatnonzero(bounced) + 1  # the steps right after a bounce reset the clock
    assert (np.asarray(expected_counter)[after] == 0).all()
