"""Langevin as a torch optimizer: exact equivalences (SGD at τ = 0, integrate() for the same seed)
and parity of the single-tensor, foreach and fused paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt.optim import Langevin, OverdampedLangevin
from dynopt.potentials import Harmonic

PATHS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def _mlp(dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 17), torch.nn.Tanh(),
                               torch.nn.Linear(17, 1)).to(dtype)


def _batches(dtype: torch.dtype, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, generator=g, dtype=dtype),
             torch.randn(8, 1, generator=g, dtype=dtype)) for _ in range(n)]


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, data) -> list[torch.Tensor]:
    """Parameters (flattened) after each step."""
    out = []
    for x, y in data:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        out.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return out


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_temperature_is_sgd_with_momentum(path, dtype):
    """τ = 0: Δₙ₊₁ = cΔₙ − η∇L(θₙ) with c = e^{−γh}, η = h²(1+c)/2, and the trajectory is
    torch.optim.SGD(lr=η, momentum=c) started from step 1 (momentum buffer −Δ₁/η)."""
    h, gamma = 0.3, 0.7
    c, eta = math.exp(-gamma * h), h * h * (1 + math.exp(-gamma * h)) / 2
    data = _batches(dtype, 40)
    model = _mlp(dtype)
    theta0 = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    opt = Langevin(model.parameters(), lr=h, gamma=gamma, temperature=0.0, seed=0,
                   **PATHS[path])
    traj = [theta0, *_train(model, opt, data)]
    # the increment recursion, with the gradients the optimizer saw
    ref = _mlp(dtype)
    grads = []
    for k, (x, y) in enumerate(data):
        with torch.no_grad():
            off = 0
            for p in ref.parameters():
                p.copy_(traj[k][off:off + p.numel()].view_as(p))
                off += p.numel()
        ref.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        grads.append(torch.cat([p.grad.flatten() for p in ref.parameters()]))
    tol = 1e-6 if dtype == torch.float32 else 1e-13
    d1 = traj[1] - traj[0]
    assert torch.allclose(d1, -0.5 * eta * grads[0], rtol=0, atol=tol)
    for n in range(1, len(data)):
        pred = c * (traj[n] - traj[n - 1]) - eta * grads[n]
        assert torch.allclose(traj[n + 1] - traj[n], pred, rtol=0, atol=tol)
    # SGD(lr=η, momentum=c) from θ₁ with buffer −Δ₁/η reproduces θ₂, θ₃, ...
    sgd_model = _mlp(dtype)
    with torch.no_grad():
        off = 0
        for p in sgd_model.parameters():
            p.copy_(traj[1][off:off + p.numel()].view_as(p))
            off += p.numel()
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=eta, momentum=c)
    off = 0
    for p in sgd_model.parameters():
        sgd.state[p]["momentum_buffer"] = (-d1[off:off + p.numel()] / eta).view_as(p).clone()
        off += p.numel()
    sgd_traj = _train(sgd_model, sgd, data[1:])
    scale = max(float(t.abs().max()) for t in traj)
    atol = (2e-6 if dtype == torch.float32 else 1e-12) * scale
    for a, b in zip(traj[2:], sgd_traj, strict=True):
        assert torch.allclose(a, b, rtol=0, atol=atol)


@pytest.mark.parametrize("path", ["single", "foreach"])
@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO"])
def test_quadratic_trajectory_equals_integrate(path, scheme):
    """On L = ½Σω²θ² the optimizer's θ sequence is integrate(Langevin(Harmonic), scheme) with the
    torch backend and the same seed (same noise, one randn(numel) per O step)."""
    dim, omega, n = 6, np.linspace(0.5, 2.0, 6), 200
    h, gamma, tau, seed = 0.2, 0.8, 0.3, 1234
    q0 = np.linspace(-1.0, 1.0, dim)
    system = dynopt.systems.Langevin(Harmonic(omega, dim), gamma=gamma, temperature=tau)
    traj = dynopt.integrate(system, scheme, q0, h=h, n_steps=n, backend="torch", seed=seed,
                            p0=np.zeros(dim), dtype=torch.float64)
    theta = torch.tensor(q0, dtype=torch.float64, requires_grad=True)
    w2 = torch.tensor(omega**2)
    opt = Langevin([theta], lr=h, gamma=gamma, temperature=tau, scheme=scheme, seed=seed,
                   **PATHS[path])
    got = []
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (w2 * theta**2).sum()).backward()
        opt.step()
        got.append(theta.detach().clone().numpy())
    np.testing.assert_allclose(np.array(got), traj.q[0, 1:], rtol=0, atol=1e-12)


def test_overdamped_trajectory_equals_integrate():
    """Euler–Maruyama (SGLD) on a quadratic equals integrate(OverdampedLangevin, 'em')."""
    dim, n, h, tau, seed = 4, 100, 0.05, 0.5, 7
    omega = np.array([0.5, 1.0, 1.5, 2.0])
    q0 = np.ones(dim)
    system = dynopt.systems.OverdampedLangevin(Harmonic(omega, dim), temperature=tau)
    traj = dynopt.integrate(system, "em", q0, h=h, n_steps=n, backend="torch", seed=seed)
    theta = torch.tensor(q0, requires_grad=True)
    opt = OverdampedLangevin([theta], lr=h, temperature=tau, seed=seed, foreach=True)
    w2 = torch.tensor(omega**2)
    got = []
    for _ in range(n):
        opt.zero_grad()
        (0.5 * (w2 * theta**2).sum()).backward()
        opt.step()
        got.append(theta.detach().clone().numpy())
    np.testing.assert_allclose(np.array(got), traj.q[0, 1:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise", ["gaussian", "discrete"])
def test_foreach_equals_single_bit_for_bit(dtype, noise):
    """Same seed → identical parameters and momenta on the single and foreach paths (several
    tensors in one bucket share one flat noise buffer per O step)."""
    data = _batches(dtype, 15)
    runs = []
    for path in ("single", "foreach"):
        model = _mlp(dtype)
        opt = Langevin(model.parameters(), lr=0.2, gamma=0.5, temperature=0.01, seed=3,
                       noise=noise, **PATHS[path])
        runs.append((_train(model, opt, data)[-1],
                     [opt.state[p]["momentum_buffer"] for p in model.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1], strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_equals_foreach_at_zero_temperature(dtype):
    """Zero noise amplitude: the fused kernel reproduces the torch paths bit for bit (same fma
    rounding as torch's add(alpha=...))."""
    data = _batches(dtype, 25)
    finals = []
    for path in ("foreach", "fused"):
        model = _mlp(dtype)
        opt = Langevin(model.parameters(), lr=0.25, gamma=0.1, temperature=0.0, seed=0,
                       **PATHS[path])
        finals.append(_train(model, opt, data)[-1])
    assert torch.equal(finals[0], finals[1])


def test_default_paths():
    """CPU float32/float64 contiguous → fused; foreach=False or differentiable → single;
    bfloat16 → foreach."""
    from dynopt.optim.partitioned import Partitioned

    t32, tbf = torch.zeros(3), torch.zeros(3, dtype=torch.bfloat16)
    opt = Langevin([t32], lr=0.1)
    g = opt.param_groups[0]
    assert Partitioned._path(opt, g, [t32]) == "fused"
    assert Partitioned._path(opt, g, [tbf]) == "foreach"
    assert Partitioned._path(opt, g, [t32.t() if t32.ndim > 1 else t32[::2]]) == "foreach"
    assert Partitioned._path(opt, {**g, "foreach": False}, [t32]) == "single"
    assert Partitioned._path(opt, {**g, "differentiable": True}, [t32]) == "single"
    with pytest.raises(ValueError, match="fused=True"):
        Langevin([t32], lr=0.1, fused=True, foreach=True)


def test_bfloat16_parameters_follow_the_float32_update():
    """bf16 params are updated in float32 (float32 momentum) and rounded once per step: the
    result equals the float32 run's parameters rounded to bf16 at every step (τ = 0)."""
    torch.manual_seed(0)
    w0 = torch.randn(50)
    data = [torch.randn(50) for _ in range(20)]
    a = w0.clone().bfloat16().requires_grad_()
    opt = Langevin([a], lr=0.1, gamma=1.0, temperature=0.0)
    b = a.detach().float().requires_grad_()
    ref = Langevin([b], lr=0.1, gamma=1.0, temperature=0.0, foreach=True)
    for x in data:
        g = (2 * (a.detach().float() - x)).bfloat16()  # a gradient on the bf16 grid
        a.grad, b.grad = g, g.float()
        opt.step()
        ref.step()
        with torch.no_grad():  # keep the reference on the bf16 grid, as the bf16 run is
            b.copy_(b.bfloat16().float())
    assert opt.state[a]["momentum_buffer"].dtype == torch.float32
    assert torch.equal(a.detach().float(), b.detach())
    assert torch.equal(opt.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])


@pytest.mark.parametrize("path", list(PATHS))
def test_a_changed_lr_is_the_documented_opening_kick(path):
    """When lr changes from h to h', the next call's opening kick (the previous step's closing
    half merged with this step's opening half, at one gradient) is B_{h'}: docs/optimizers.md
    says so and gives the offset (h' - h)/2 * grad from variable-step BAOAB. Written out by hand
    for a quadratic loss in float64: a path that lowered the kick at h, at (h + h')/2, or ran
    the thermostat at the old step would differ by far more than 1e-15."""
    k = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    theta = torch.nn.Parameter(torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64))
    gamma, h1, h2, mass = 0.7, 0.2, 0.05, 1.5
    opt = Langevin([theta], lr=h1, gamma=gamma, temperature=0.0, mass=mass, **PATHS[path])

    def by_hand(kicks):
        q, p = theta.detach().clone(), torch.zeros(4, dtype=torch.float64)
        for h, kick in kicks:
            p = p - kick * k * q
            q = q + (h / 2) * p / mass
            p = math.exp(-gamma * h) * p
            q = q + (h / 2) * p / mass
            yield q

    steps = [(h1, h1 / 2), (h1, h1), (h2, h2), (h2, h2)]
    documented = list(by_hand(steps))
    variable = list(by_hand([*steps[:2], (h2, (h1 + h2) / 2), (h2, h2)]))
    for (h, _), q in zip(steps, documented, strict=True):
        opt.param_groups[0]["lr"] = h
        theta.grad = k * theta.detach()
        opt.step()
        assert torch.allclose(theta.detach(), q, rtol=0, atol=1e-15)
    assert (documented[-1] - variable[-1]).abs().max() > 1e-3  # the test tells them apart
