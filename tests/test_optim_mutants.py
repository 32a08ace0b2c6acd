"""Tests written to kill surviving mutants of dynopt/optim (mutation testing, session 11).

Each test states the property it checks and the one-line bug it catches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt.optim import Langevin, OverdampedLangevin
from dynopt.potentials import Harmonic

PATHS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _quadratic_run(opt, theta, w2, n):
    out = []
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (w2 * theta**2).sum()).backward()
        opt.step()
        out.append(theta.detach().clone().numpy())
    return np.array(out)


@pytest.mark.parametrize("path", ["single", "foreach"])
def test_lm_trajectory_equals_integrate(path):
    """Leimkuhler–Matthews on L = ½Σω²θ² is integrate(OverdampedLangevin, "lm") with the torch
    backend and the same seed, bit for bit: the noise memory starts from a fresh normal (drawn
    first, as integrate draws the initial extras) and is replaced by each step's normal.
    Catches: the memory started at zero, or never replaced (then the first or every later
    increment is wrong)."""
    dim, n, h, tau, seed = 4, 40, 0.05, 0.5, 7
    omega = np.array([0.5, 1.0, 1.5, 2.0])
    q0 = np.ones(dim)
    system = dynopt.systems.OverdampedLangevin(Harmonic(omega, dim), temperature=tau)
    traj = dynopt.integrate(system, "lm", q0, h=h, n_steps=n, backend="torch", seed=seed,
                            dtype=torch.float64)
    theta = torch.tensor(q0, requires_grad=True)
    opt = OverdampedLangevin([theta], lr=h, temperature=tau, seed=seed, scheme="lm",
                             **PATHS[path])
    got = _quadratic_run(opt, theta, torch.tensor(omega**2), n)
    np.testing.assert_array_equal(got, traj.q[0, 1:])


@pytest.mark.parametrize("alias,name", [("sgld", "em"), ("euler-maruyama", "em"),
                                        ("EM", "em"), ("leimkuhler-matthews", "lm")])
def test_overdamped_scheme_aliases_name_the_documented_scheme(alias, name):
    """The documented aliases of OverdampedLangevin's schemes run that scheme: "sgld" and
    "euler-maruyama" are Euler–Maruyama, "leimkuhler-matthews" is LM (same seed, same bits), and
    the two schemes differ. Catches an alias mapped to the other scheme."""
    def run(scheme):
        theta = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
        opt = OverdampedLangevin([theta], lr=0.05, temperature=0.3, seed=3, scheme=scheme,
                                 foreach=True)
        return _quadratic_run(opt, theta, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 5)

    assert np.array_equal(run(alias), run(name))
    assert not np.array_equal(run("em"), run("lm"))


def test_diagnostics_kinetic_temperature_with_a_mass():
    """With a mass M ≠ 1 the kinetic temperature Σp²/(M N) of diagnostics() averages to τ: on a
    flat loss (∇L = 0) the stored p is an exact OU chain with ⟨p²⟩ = Mτ (BAOAB's O step
    p ← cp + √((1−c²)τ)M^½R). Batch-means SE, bounded by the independent-draw SE.
    Catches: the mass multiplied instead of divided (or left out) in the diagnostic."""
    tau, mass, n_el, n_steps = 0.3, 4.0, 4000, 240
    theta = torch.zeros(n_el, dtype=torch.float64)
    opt = Langevin([theta], lr=0.5, gamma=4.0, temperature=tau, mass=mass, seed=2)
    series = []
    for _ in range(n_steps):
        theta.grad = torch.zeros_like(theta)
        opt.step()
        series.append(float(opt.diagnostics()[0]["kinetic_temperature"]))
    t = np.array(series[40:])  # c = e^{-2}: stationary after a few steps
    batches = t.reshape(20, -1).mean(1)
    se = batches.std(ddof=1) / math.sqrt(20)
    assert abs(batches.mean() - tau) < 4 * se, (batches.mean(), se)
    # independent p² draws: Var(p²/M) = 2τ²; 200·4000 of them (correlation ≈ e^{-4}: ×1.5 margin)
    assert se < 1.5 * math.sqrt(2 * tau**2 / (n_el * len(t))), se



@pytest.mark.parametrize("path", list(PATHS))
def test_adaptive_langevin_additive_noise_variance_with_a_mass(path):
    """The default scheme "BACDEDCAB" injects the additive noise D_t: p += σ_A√t M^½ R. From
    p = 0, ξ = 0, a flat loss and a negligible ε (ξ stays 0 to 1e-7, so C does nothing), the
    first step's p is the sum of the two D_{h/2} draws: ⟨p²⟩ = σ_A² h M exactly. Checked on
    50 000 elements within 4 SE (SE of a mean of χ²₁/N: √(2/N)).
    Catches: the D step's noise without √M (⟨p²⟩ = σ_A² h) on any path."""
    from dynopt.optim import AdaptiveLangevin

    sigma, h, mass, n = 1.2, 0.05, 4.0, 50_000  # below SERIAL_BELOW: no extra kernel build
    theta = torch.zeros(n, dtype=torch.float64)
    theta.grad = torch.zeros_like(theta)
    opt = AdaptiveLangevin([theta], lr=h, temperature=0.7, sigma_a=sigma, eps=1e-15, xi0=0.0,
                           mass=mass, seed=24, **PATHS[path])
    opt.step()
    z2 = (opt.state[theta]["momentum_buffer"] ** 2 / (sigma**2 * h * mass)).numpy()
    assert abs(float(opt.state[theta]["extras"][0])) < 1e-7
    assert abs(z2.mean() - 1.0) < 4 * math.sqrt(2.0 / n), z2.mean()


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_heavy_ball_momentum_outside_the_unit_interval_is_refused(bad):
    """HeavyBall's momentum is SGD's c = 1 − γh ∈ [0, 1] (docs): c > 1 is a negative friction
    and c < 0 a sign-flipping one. Refused at construction and when set after it, with a
    ValueError naming ``momentum`` and the value; c = 0 and c = 1 are accepted.
    Catches: a dropped bound of the momentum check."""
    from dynopt.optim import HeavyBall

    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=rf"momentum must be in \[0, 1\].*{bad}"):
        HeavyBall([p], lr=0.1, momentum=bad)
    for ok in (0.0, 1.0):
        HeavyBall([p], lr=0.1, momentum=ok)
    opt = HeavyBall([p], lr=0.1, momentum=0.9)
    opt.param_groups[0]["momentum"] = bad
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"momentum"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


def test_heavy_ball_amplifying_friction_is_refused():
    """The friction step p ← (1 − γh)p amplifies the momentum when γh > 2 (|c| > 1): refused at
    the step with a ValueError naming gamma * lr, nothing written; γh = 2 (c = −1, the
    boundary) steps as the formula says. Catches: a loosened γh limit."""
    from dynopt.optim import HeavyBall

    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = HeavyBall([p], lr=1.0, gamma=2.5)
    p.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"gamma \* lr = 2\.5 \* 1\.0"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(3, dtype=torch.float64))
    edge = HeavyBall([p], lr=1.0, gamma=2.0)  # c = −1: p ← −p − ∇L, θ ← θ + p
    one = torch.ones(3, dtype=torch.float64)
    p.grad = one
    edge.step()  # p = −1, θ = 0
    assert torch.equal(edge.state[p]["momentum"], -one) and torch.equal(p.detach(), 0 * one)
    p.grad = one
    edge.step()  # p = 1 − 1 = 0, θ = 0
    assert torch.equal(edge.state[p]["momentum"], 0 * one) and torch.equal(p.detach(), 0 * one)


def _two_layer(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
                               ).double()


def _cold_factory(name):
    from dynopt.optim import HeavyBall

    return {"Langevin": lambda ps, **kw: Langevin(ps, gamma=0.7, temperature=0.0, **kw),
            "OverdampedLangevin": lambda ps, **kw: OverdampedLangevin(ps, temperature=0.0, **kw),
            "HeavyBall": lambda ps, **kw: HeavyBall(ps, gamma=0.5, **kw)}[name]


@pytest.mark.parametrize("name", ["Langevin", "OverdampedLangevin", "HeavyBall"])
@pytest.mark.parametrize("flags", [{}, {"foreach": False}])
def test_each_group_steps_with_its_own_lr_and_weight_decay(name, flags):
    """torch's convention, per-tensor dynamics at τ = 0: a group's own ``lr`` and
    ``weight_decay`` apply to that group only, so two groups with different values step exactly
    as two separate optimizers with those values (bit for bit), and not as two groups that share
    the first group's values. Catches: the step size or the prior read from another group."""
    make = _cold_factory(name)
    settings = [{"lr": 0.03, "weight_decay": 0.0}, {"lr": 0.07, "weight_decay": 0.2}]
    g = torch.Generator().manual_seed(5)
    batches = [(torch.randn(8, 3, generator=g, dtype=torch.float64),
                torch.randn(8, 1, generator=g, dtype=torch.float64)) for _ in range(4)]

    def run(groups_of):
        m = _two_layer()
        opts = groups_of(m)
        for x, y in batches:
            for o in opts:
                o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            for o in opts:
                o.step()
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    layers = lambda m: (list(m[0].parameters()), list(m[2].parameters()))  # noqa: E731
    whole = run(lambda m: [make([{"params": ps, **s} for ps, s in zip(layers(m), settings,
                                                                       strict=True)],
                                **flags)])
    separate = run(lambda m: [make(ps, **s, **flags) for ps, s in zip(layers(m), settings,
                                                                      strict=True)])
    shared = run(lambda m: [make(list(m.parameters()), **settings[0], **flags)])
    assert torch.equal(whole, separate)
    n_first = sum(p.numel() for p in _two_layer()[0].parameters())
    assert not torch.equal(whole[n_first:], shared[n_first:])


@pytest.mark.parametrize("noise", ["gaussian", "discrete"])
def test_bfloat16_resume_is_bit_exact_and_keeps_float32_state(noise):
    """bfloat16 parameters keep their momentum in float32 (executor docs). A checkpoint taken
    mid-run and loaded (weights_only) into a fresh optimizer continues the run bit for bit,
    noise included, with the float32 momentum restored (torch's load casts state to the
    parameter's dtype; dynopt undoes that). Catches: the momentum left in bfloat16 after a
    load (the next step refuses it, or rounds p)."""
    import copy
    import io

    def fresh():
        torch.manual_seed(0)
        return torch.nn.Linear(4, 3).to(torch.bfloat16)

    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)

    def steps(m, opt, n):
        for _ in range(n):
            opt.zero_grad()
            m(x).float().square().mean().backward()
            opt.step()

    m = fresh()
    opt = Langevin(m.parameters(), lr=0.1, gamma=0.5, temperature=1e-2, seed=4, noise=noise)
    steps(m, opt, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    weights = copy.deepcopy(m.state_dict())
    steps(m, opt, 4)
    m2 = fresh()
    m2.load_state_dict(weights)
    opt2 = Langevin(m2.parameters(), lr=0.1, gamma=0.5, temperature=1e-2, seed=99, noise=noise)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for p in m2.parameters():
        assert opt2.state[p]["momentum_buffer"].dtype == torch.float32
    steps(m2, opt2, 4)
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["momentum_buffer"], opt2.state[b]["momentum_buffer"])


def test_heavy_ball_energy_observable_is_loss_plus_half_momentum_squared():
    """HeavyBall's "energy" observable is H = L(θ) + ½|p|² (its port-Hamiltonian), with the
    momentum the step starts from: the value an EnergyBelow event logs equals it to rounding.
    Catches: the kinetic term without its ½ (or the potential term's sign)."""
    from dynopt.events import EnergyBelow
    from dynopt.optim import HeavyBall

    theta = torch.nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    opt = HeavyBall([theta], lr=0.3, gamma=0.2, events=[EnergyBelow(1.0)])
    energies = {}
    for k in range(1, 40):
        opt.zero_grad()
        loss = 0.5 * (w * theta**2).sum()
        loss.backward()
        p = opt.state[theta].get("momentum")
        kinetic = 0.0 if p is None else 0.5 * float((p**2).sum())
        energies[k] = float(loss.detach()) + kinetic
        opt.step(loss=loss)
        if opt.event_log:
            break
    (event,) = list(opt.event_log)  # fired in the k-th call (after k − 1 completed steps)
    assert event.step == k - 1 and k > 2 and energies[k - 1] >= 1.0  # fired with p ≠ 0
    assert event.value == pytest.approx(energies[k], rel=1e-12)
    assert event.value < 1.0
