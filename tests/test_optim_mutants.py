"""Tests written to kill surviving mutants of dynopt/optim (mutation testing, session 11).

Each test states the property it checks and the one-line bug it catches."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt.errors import DivergenceError
from dynopt.events import LossBelow, SetFriction, Stop
from dynopt.optim import (
    BBI,
    LOL,
    AdaptiveLangevin,
    AdLaLa,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
)
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


# --------------------------------------------------------------------------------------------
# dynopt.optim.bound: a step the bound "proves" finite runs without a snapshot, so a bound that
# is too tight (a missing term) lets inf/NaN into the state silently. Each test below places a
# step just past the true bound and requires the nonfinite="raise" contract: DivergenceError,
# and θ and every state tensor left bit-identical (the snapshot path's rollback).
# --------------------------------------------------------------------------------------------
def _overflowing_step_is_refused_and_undone(opt, p, step):
    theta = p.detach().clone()
    saved = {k: v.clone() for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}
    with pytest.raises(DivergenceError, match="non-finite"):
        step()
    assert torch.equal(p.detach(), theta)
    for k, v in saved.items():
        assert torch.equal(opt.state[p][k], v), k


def test_bound_of_kick_then_drift_uses_the_new_momentum():
    """HeavyBall with γ = 0 (c = 1), h = 10, p = 0 and ∇L = 0.8e37 in float32: the kick gives
    |p| = 0.8e38 (finite), the drift θ + h p = −8e38 overflows. The bound Bθ + h(|c|Bp + h Bg)
    refuses the step. Catches a drift bound using the old momentum (Bθ + h Bp: it proves the
    step and −inf is written into θ with no snapshot to undo it)."""
    p = torch.nn.Parameter(torch.zeros(8))
    opt = HeavyBall([p], lr=10.0, gamma=0.0)
    p.grad = torch.zeros(8)
    opt.step()                                   # creates the momentum (θ, p stay 0)
    p.grad = torch.full((8,), 0.8e37)
    _overflowing_step_is_refused_and_undone(opt, p, opt.step)


def test_heavy_ball_bound_covers_the_friction_an_event_sets():
    """HeavyBall with γh = 1 (c = 0: the old momentum is dropped) and LossBelow(0.5) →
    SetFriction(0) firing on step 2, whose update then uses c = 1: θ + h p = 0.8e38 + 4·0.8e38
    overflows float32. The bound takes the largest |c| over the event γ too and refuses it.
    Catches the event γ left out of the bound (it proves the step with c = 0 and +inf is
    written into θ with no snapshot)."""
    p = torch.nn.Parameter(torch.zeros(8))
    opt = HeavyBall([p], lr=4.0, gamma=0.25, events=[LossBelow(0.5, then=SetFriction(0.0))])
    p.grad = torch.zeros(8)
    opt.step(loss=1.0)                           # L₀ = 1: nothing fires; creates the momentum
    with torch.no_grad():
        p.fill_(0.8e38)
        opt.state[p]["momentum"].fill_(0.8e38)
    p.grad = torch.zeros(8)
    _overflowing_step_is_refused_and_undone(opt, p, lambda: opt.step(loss=0.1))


def test_bound_is_not_taken_for_a_group_with_a_prior():
    """Langevin with weight_decay λ = 1e30 and θ = 1e10 in float32: ∇L = 0 (all the bound
    reads) but ∇U = λθ = 1e40 overflows. A prior is outside the bound's table, so the step runs
    the snapshot path. Catches the prior check dropped from the bound (inf written into the
    momentum with no snapshot)."""
    p = torch.nn.Parameter(torch.zeros(8))
    opt = Langevin([p], lr=0.01, temperature=0.0, weight_decay=1e30, seed=0)
    p.grad = torch.zeros(8)
    opt.step()
    with torch.no_grad():
        p.fill_(1e10)
    p.grad = torch.zeros(8)
    _overflowing_step_is_refused_and_undone(opt, p, opt.step)


def test_lm_bound_covers_the_noise_memory():
    """Leimkuhler–Matthews moves θ by s(r + ξ), r the previous step's normal: with r = 1e37 in
    the state and s ≈ 35 (τ = 1e4, h = 0.25), θ + s r overflows float32. The bound
    Bθ + s(Br + Bξ) refuses the step. Catches the memory's term dropped from the LM bound
    (±inf written into θ with no snapshot)."""
    p = torch.nn.Parameter(torch.zeros(8))
    opt = OverdampedLangevin([p], lr=0.25, temperature=1e4, scheme="lm", seed=0)
    p.grad = torch.zeros(8)
    opt.step()
    opt.state[p]["noise_prev"].fill_(1e37)
    p.grad = torch.zeros(8)
    _overflowing_step_is_refused_and_undone(opt, p, opt.step)


@pytest.mark.parametrize("bad", [-3, 2.5, math.inf, True, "4", torch.tensor([1.0, 2.0]),
                                 torch.tensor(math.nan), 2**61],
                         ids=["negative", "fraction", "inf", "bool", "str", "two-elements",
                              "nan-tensor", "past-2**60"])
def test_checkpoint_with_a_bad_per_tensor_step_count_is_refused(bad):
    """A checkpoint whose per-tensor step counter is not a non-negative integer below 2**60 (a
    negative, fractional, infinite or boolean value, a string, a 2-element or NaN tensor, a
    count past the noise counter's range) is refused by load_state_dict with a ValueError
    naming the entry, and the optimizer is left unchanged. Catches the count validation of
    per-tensor state dropped (the bad counter loads silently and reaches the noise counter)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6))
    opt = Langevin([p], lr=0.01, seed=1)
    for _ in range(2):
        p.grad = p.detach().clone()
        opt.step()
    before = copy.deepcopy(opt.state_dict())
    sd = copy.deepcopy(before)
    sd["state"][0]["step"] = bad
    with pytest.raises(ValueError, match=r"cannot load the checkpoint: .*\['step'\]"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert after["state"][0]["step"] == before["state"][0]["step"] == 2
    assert torch.equal(after["state"][0]["momentum_buffer"],
                       before["state"][0]["momentum_buffer"])


@pytest.mark.parametrize("cls", [AdaptiveLangevin, NoseHoover])
@pytest.mark.parametrize("scope", ["tensor", "model"])
def test_a_step_that_would_make_the_thermostat_infinite_is_refused(cls, scope):
    """float64 momenta of 1e160: |p|² overflows to inf, so the thermostat ξ becomes +inf while
    θ and p stay finite (p ← e^{−ξt} p = 0). The result check covers the thermostat state
    wherever it lives (per tensor, or optimizer-level for scope="model"): DivergenceError naming
    the step, and θ, p and ξ left as they were. Catches the check of the optimizer-level state
    dropped (ξ = inf kept: the next step computes 0·inf = NaN)."""
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = cls([p], lr=0.1, seed=0, scope=scope)
    p.grad = torch.zeros_like(p)
    opt.step()
    opt.state[p]["momentum_buffer"].fill_(1e160)
    before = copy.deepcopy(opt.state_dict())
    theta = p.detach().clone()
    p.grad = torch.zeros_like(p)
    with pytest.raises(DivergenceError, match="step 2 would write a non-finite"):
        opt.step()
    assert torch.equal(p.detach(), theta)
    after = opt.state_dict()
    assert torch.equal(after["state"][0]["momentum_buffer"],
                       before["state"][0]["momentum_buffer"])
    assert repr(after["dynopt"]["global"]) == repr(before["dynopt"]["global"])


@pytest.mark.parametrize("kw", [{}, {"foreach": True}, {"bounce_direction": "sphere"}],
                         ids=["fused-cube", "foreach-cube", "sphere"])
def test_bbi_bounce_keeps_the_momentum_norm_and_theta(kw):
    """BBI's bounce step (here the fixed one after t0 = 4 steps) gives Π a random direction
    with the same norm and does not move θ (BBI docstring): |Π|² after the bounce equals |Π|²
    before it to float64 rounding, and Π itself changes. Catches the rescale of the random
    direction without its square root (|Π|² would become |Π|⁴/|u|²)."""
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(40, dtype=torch.float64))
    opt = BBI([theta], lr=0.05, t0=4, n_bounces=1, seed=3, **kw)
    seen = 0
    for _ in range(8):
        opt.zero_grad()
        loss = 0.5 * (theta**2).sum() + 1.0
        loss.backward()
        mom = opt.state.get(theta, {}).get("momentum")
        mom = None if mom is None else mom.clone()
        before = theta.detach().clone()
        bounces = float(opt.global_state.get("bbi", {}).get("bounces", 0.0))
        opt.step(loss=loss.detach())
        if float(opt.global_state["bbi"]["bounces"]) > bounces:
            seen += 1
            new = opt.state[theta]["momentum"]
            assert torch.equal(theta.detach(), before)
            assert float((new**2).sum()) == pytest.approx(float((mom**2).sum()), rel=1e-12)
            assert not torch.allclose(new, mom)
    assert seen == 1


def test_presets_keep_the_settings_a_group_gives_itself():
    """AdLaLa and LOL only *default* their per-layer settings: a group that sets its own
    dynamics or scheme keeps it ("any group may override any hyperparameter"). LOL's overdamped
    group with scheme="em" then has independent increments (zero gradient: Δθ = √(2τ dt) ξ),
    where the default LM has lag-1 correlation ½ (Δθₖ = s(Rₖ₋₁ + Rₖ)), measured over 4000
    elements (standard error 1/√4000 ≈ 0.016); AdLaLa's group 0 set to "langevin" carries no
    thermostat. Catches a preset that overwrites the group's own keys."""
    n = 4000

    def lag1(**group1):
        a = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
        b = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
        opt = LOL([{"params": [a]}, {"params": [b], **group1}], lr=0.5, temperature=1.0,
                  seed=4, foreach=True)
        steps = []
        for _ in range(3):
            a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
            before = b.detach().clone()
            opt.step()
            steps.append(b.detach() - before)
        assert opt.param_groups[1]["scheme"] == group1.get("scheme", "lm")
        return float(torch.corrcoef(torch.stack(steps[1:]))[0, 1])

    se = 1.0 / math.sqrt(n)
    assert abs(lag1(scheme="em")) < 5 * se
    assert abs(lag1() - 0.5) < 5 * se
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(3))
    opt = AdLaLa([{"params": [a], "dynamics": "langevin"}, {"params": [b]}], seed=0,
                 foreach=True)
    a.grad, b.grad = torch.ones(3), torch.ones(3)
    opt.step()
    assert opt.param_groups[0]["dynamics"] == "langevin"
    assert "extras" not in opt.state[a]


def _nose_hoover_run(**kw):
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    opt = NoseHoover([theta], lr=0.05, temperature=0.5, foreach=True, **kw)
    with torch.no_grad():
        for _ in range(3):
            theta.grad = 2.0 * theta.detach()
            opt.step()
    return theta.detach().clone()


@pytest.mark.parametrize("chain_length", [1, 3])
def test_nose_hoover_default_period_is_100_lr_and_thermostat_mass_gives_q(chain_length):
    """NoseHoover's documented defaults: without ``tau`` the thermostat period is τ_NH =
    100·lr (bit-identical to passing tau=100·lr, and different from tau=10·lr); with
    ``thermostat_mass`` q instead, Q = N·q, i.e. the period √(q/k_BT) (bit-identical to passing
    that tau; checked on a chain, where q reaches the system through the period). Catches a
    wrong default period factor, or q/k_BT inverted."""
    nh = {"chain_length": chain_length}
    default = _nose_hoover_run(**nh)
    assert torch.equal(default, _nose_hoover_run(tau=5.0, **nh))
    assert not torch.equal(default, _nose_hoover_run(tau=0.5, **nh))
    if chain_length > 1:
        q = 2.0
        assert torch.equal(_nose_hoover_run(thermostat_mass=q, **nh),
                           _nose_hoover_run(tau=math.sqrt(q / 0.5), **nh))


def test_every_event_that_fires_in_a_step_applies_its_actions():
    """Two events firing on the same step (LossBelow → SetFriction(3) and LossBelow → Stop):
    both act: the friction override is set, the optimizer stops (θ not moved by that step),
    and the log holds both firings. Catches the actions of all but the last firing event
    dropped."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = HeavyBall([p], lr=0.1, gamma=0.5, events=[LossBelow(0.5, then=SetFriction(3.0)),
                                                    LossBelow(0.4, then=Stop())])
    p.grad = torch.ones(3)
    opt.step(loss=1.0)                           # L₀ = 1: nothing fires
    assert not opt.stopped and "gamma_override" not in opt.global_state
    theta = p.detach().clone()
    p.grad = torch.ones(3)
    opt.step(loss=0.1)                           # both fire
    assert opt.stopped and opt.global_state["gamma_override"] == 3.0
    assert torch.equal(p.detach(), theta)
    assert len(opt.event_log) == 2
