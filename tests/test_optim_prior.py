"""weight_decay (the Gaussian prior λ|θ|²/2), the tether γ_loc|θ − θ₀|²/2 and nβ, in every
optimizer; torch keys an optimizer does not use are refused."""

from __future__ import annotations

import math

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, data, flat, loss_fn, model

from dynopt.optim import (
    BBI,
    AdaptiveLangevin,
    AdLaLa,
    ECDSep,
    HeavyBall,
    Langevin,
    OverdampedLangevin,
)

PATHS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _set_flat(m, v):
    with torch.no_grad():
        off = 0
        for p in m.parameters():
            p.copy_(v[off:off + p.numel()].view_as(p))
            off += p.numel()


@pytest.mark.parametrize("path", list(PATHS))
def test_langevin_zero_temperature_with_weight_decay_is_sgd(path):
    """τ = 0: Langevin(h, γ, weight_decay=λ) is torch.optim.SGD(lr=h²(1+c)/2, momentum=c =
    e^{−γh}, weight_decay=λ) from the second step on (SGD started at θ₁ with buffer −Δ₁/η;
    BAOAB's first step is a half step from zero momentum); float64, 1e-12."""
    h, gamma, lam = 0.3, 0.7, 0.05
    c = math.exp(-gamma * h)
    eta = h * h * (1 + c) / 2
    batches = data(25)
    m = model()
    theta0 = flat(m)
    opt = Langevin(m.parameters(), lr=h, gamma=gamma, temperature=0.0, weight_decay=lam,
                   seed=0, **PATHS[path])
    traj = [theta0]
    for x, y in batches:
        opt.zero_grad()
        loss_fn(m, x, y).backward()
        opt.step()
        traj.append(flat(m))
    # first step: −(η/2)(∇L + λθ₀)
    ref = model()
    ref.zero_grad()
    loss_fn(ref, *batches[0]).backward()
    g0 = torch.cat([p.grad.flatten() for p in ref.parameters()])
    assert torch.allclose(traj[1] - traj[0], -0.5 * eta * (g0 + lam * theta0), rtol=0,
                          atol=1e-14)
    d1 = traj[1] - traj[0]
    sgd_model = model()
    _set_flat(sgd_model, traj[1])
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=eta, momentum=c, weight_decay=lam)
    off = 0
    for p in sgd_model.parameters():
        sgd.state[p]["momentum_buffer"] = (-d1[off:off + p.numel()] / eta).view_as(p).clone()
        off += p.numel()
    for k, (x, y) in enumerate(batches[1:]):
        sgd.zero_grad()
        loss_fn(sgd_model, x, y).backward()
        sgd.step()
        assert torch.allclose(flat(sgd_model), traj[k + 2], rtol=0, atol=1e-12), k
    # without the weight decay the trajectories differ (the test sees λ)
    m2 = model()
    opt2 = Langevin(m2.parameters(), lr=h, gamma=gamma, temperature=0.0, **PATHS[path])
    for x, y in batches[:3]:
        opt2.zero_grad()
        loss_fn(m2, x, y).backward()
        opt2.step()
    assert (flat(m2) - traj[3]).abs().max() > 1e-6


WD_CLASSES = [n for n in FACTORIES if n != "DDPNOpt"]


def _two_groups(name, m, lam):
    """The zoo optimizer with the first layer in group 0 (weight decay λ) and the rest in
    group 1."""
    opt = FACTORIES[name](m, seed=4)
    if len(opt.param_groups) == 1:
        opt.param_groups[0]["params"] = list(m[0].parameters())
        opt.add_param_group({"params": list(m[2].parameters())})
    assert [id(p) for p in opt.param_groups[0]["params"]] == [id(p) for p in m[0].parameters()]
    opt.param_groups[0]["weight_decay"] = lam
    return opt


@pytest.mark.parametrize("name", WD_CLASSES)
def test_weight_decay_is_the_gaussian_prior_potential(name):
    """weight_decay=λ ≡ λ|θ|²/2 added to the loss (gradient and, for BBI/ECDSep/HeavyBall
    events, the loss value the dynamics sees); per group: group 0 gets λ, group 1 none."""
    lam = 0.3
    batches = data(8)
    m1, m2 = model(), model()
    opt1, opt2 = _two_groups(name, m1, lam), _two_groups(name, m2, 0.0)
    for x, y in batches:
        for m, opt, extra in ((m1, opt1, False), (m2, opt2, True)):
            opt.zero_grad()
            loss = loss_fn(m, x, y)
            if extra:
                loss = loss + 0.5 * lam * sum((p * p).sum() for p in m[0].parameters())
            loss.backward()
            opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()
    assert torch.allclose(flat(m1), flat(m2), rtol=0, atol=1e-11)
    assert not torch.allclose(flat(m1), flat(model()), rtol=0, atol=1e-3)


def test_tether_and_nbeta_gradient():
    """One overdamped step at τ = 0 from θ₀: Δθ = −dt·nβ∇L (the tether vanishes at θ₀); the
    second: −dt(nβ∇L(θ₁) + γ_loc(θ₁ − θ₀)); θ₀ is saved in the state (and the state_dict)."""
    dt, nb, loc = 0.01, 3.0, 2.0
    m = model()
    theta0 = flat(m)
    opt = OverdampedLangevin(m.parameters(), lr=dt, temperature=0.0, nbeta=nb,
                             localization=loc, foreach=False)
    grads = []
    traj = [theta0]
    for x, y in data(2):
        opt.zero_grad()
        loss_fn(m, x, y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        opt.step()
        traj.append(flat(m))
    assert torch.allclose(traj[1], theta0 - dt * nb * grads[0], rtol=0, atol=1e-15)
    want = traj[1] - dt * (nb * grads[1] + loc * (traj[1] - theta0))
    assert torch.allclose(traj[2], want, rtol=0, atol=1e-15)
    anchors = [s["anchor"] for s in opt.state_dict()["state"].values()]
    assert torch.equal(torch.cat([a.flatten() for a in anchors]), theta0)


@pytest.mark.parametrize(("factory", "key"), [
    (lambda ps: Langevin(ps, betas=(0.9, 0.99)), "betas"),
    (lambda ps: Langevin([{"params": ps, "nesterov": True}]), "nesterov"),
    (lambda ps: Langevin([{"params": ps, "eps": 1e-8}]), "eps"),
    (lambda ps: OverdampedLangevin([{"params": ps, "momentum": 0.9}]), "momentum"),
    (lambda ps: AdaptiveLangevin([{"params": ps, "amsgrad": True}]), "amsgrad"),
    (lambda ps: HeavyBall([{"params": ps, "dampening": 0.1}]), "dampening"),
    (lambda ps: HeavyBall([{"params": ps, "localization": 1.0}]), "localization"),
    (lambda ps: BBI([{"params": ps, "momentum": 0.9}]), "momentum"),
    (lambda ps: ECDSep([{"params": ps, "betas": (0.9, 0.9)}]), "betas"),
    (lambda ps: ECDSep([{"params": ps, "fused": True}]), "fused"),
])
def test_foreign_torch_keys_are_refused(factory, key):
    ps = list(model().parameters())
    with pytest.raises((ValueError, TypeError), match=key):
        factory(ps)


def test_foreign_key_on_the_wrong_dynamics_of_a_mixed_optimizer():
    m = model()
    with pytest.raises(ValueError, match="'eps'"):
        AdLaLa([{"params": m[0].parameters()},
                {"params": m[2].parameters(), "eps": 1e-8}])  # a Langevin group
    AdLaLa([{"params": m[0].parameters(), "eps": 0.01}, {"params": m[2].parameters()}])
    opt = AdLaLa([{"params": m[0].parameters()},
                  {"params": m[2].parameters(), "momentum": 0.9}])  # Langevin: meaningful
    assert opt.param_groups[1]["momentum"] == 0.9


@pytest.mark.parametrize(("key", "value", "match"), [
    ("weight_decay", -0.1, "weight_decay"), ("localization", -1.0, "localization"),
    ("nbeta", 0.0, "nbeta"), ("weight_decay", float("nan"), "weight_decay")])
def test_bad_prior_values_raise(key, value, match):
    with pytest.raises(ValueError, match=match):
        Langevin(model().parameters(), **{key: value})
