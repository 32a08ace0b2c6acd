"""TrainingMonitor: records equal direct recomputation, and training is unchanged by it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynopt.diagnostics import model_top_eigenvalue
from dynopt.monitor import TrainingMonitor
from dynopt.optim import AdaptiveLangevin, Langevin


def _problem(seed: int = 0) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(seed)
    x = torch.randn(120, 2, dtype=torch.float64)
    y = (x[:, :1] * x[:, 1:]).sign()
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 1)).double()
    return model, (x, y)


LOSS = torch.nn.MSELoss()


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, data: tuple, steps: int,
           monitor: TrainingMonitor | None = None, hook: object = None) -> None:
    x, y = data
    g = torch.Generator().manual_seed(1)
    for k in range(steps):
        idx = torch.randint(0, len(x), (16,), generator=g)  # minibatches: U is the full batch
        opt.zero_grad()
        LOSS(model(x[idx]), y[idx]).backward()
        opt.step()
        if monitor is not None:
            monitor.step()
        if hook is not None:
            hook(k + 1)


@pytest.mark.parametrize("kind", ["sgd", "langevin"])
def test_records_equal_direct_recomputation(kind: str) -> None:
    """loss, per-layer kinetic energy (from the documented momentum mapping) and |∇_L U|² at
    each record step equal a direct computation from saved θ and optimizer state (1e-12)."""
    model, data = _problem()
    if kind == "sgd":
        lr, mu = 0.05, 0.9
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=mu)
        to_p = lambda b: -math.sqrt(lr) * b  # noqa: E731  (p = −(η/h) b, h = √η)
        key = "momentum_buffer"
    else:
        opt = Langevin(model.parameters(), lr=0.05, gamma=1.0, temperature=1e-3, mass=2.0,
                       seed=3)
        to_p = lambda b: b  # noqa: E731
        key = "momentum_buffer"
    mon = TrainingMonitor(model, opt, LOSS, data, every=5)
    saved = {}

    def hook(step: int) -> None:
        if step % 5 == 0:
            saved[step] = ([p.detach().clone() for p in model.parameters()],
                           [to_p(opt.state[p][key].clone()) for p in model.parameters()])

    _train(model, opt, data, 20, mon, hook)
    traj = mon.trajectory()
    np.testing.assert_array_equal(traj.t, [0, 5, 10, 15, 20])
    mass = 2.0 if kind == "langevin" else 1.0
    names = [n for n, _ in model.named_parameters()]
    probe, _ = _problem()
    for r, step in enumerate([5, 10, 15, 20], start=1):
        thetas, moms = saved[step]
        with torch.no_grad():
            for p, t in zip(probe.parameters(), thetas, strict=True):
                p.copy_(t)
        loss = LOSS(probe(data[0]), data[1])
        grads = torch.autograd.grad(loss, list(probe.parameters()))
        assert traj.extras["loss"][0, r] == pytest.approx(loss.item(), abs=1e-12)
        for n, m, gr in zip(names, moms, grads, strict=True):
            assert traj.extras[f"kinetic:{n}"][0, r] == pytest.approx(
                float(0.5 * (m * m).sum() / mass), rel=1e-12, abs=1e-300)
            assert traj.extras[f"grad2:{n}"][0, r] == pytest.approx(float((gr * gr).sum()),
                                                                    rel=1e-10)


def test_layer_temperatures_of_a_monitor_trajectory_skip_record_zero() -> None:
    """Record 0 precedes the first step, so its kinetic energies are NaN (no momenta yet);
    ``layer_temperatures(traj)`` as documented (burn_in=0) then gives T_kin of records 1, 2,
    ... exactly as burn_in=1 does (it raised "x must be finite, got nan")."""
    from dynopt.observables import layer_temperatures

    model, data = _problem()
    opt = Langevin(model.parameters(), lr=0.05, gamma=1.0, temperature=1e-3, seed=3)
    mon = TrainingMonitor(model, opt, LOSS, data, every=2)
    _train(model, opt, data, 40, mon)
    traj = mon.trajectory()
    assert np.isnan(traj.extras["kinetic:0.weight"][0, 0])
    assert np.all(np.isfinite(traj.extras["kinetic:0.weight"][0, 1:]))
    all_records = layer_temperatures(traj)
    after_zero = layer_temperatures(traj, burn_in=1)
    assert set(all_records) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    for name, t in all_records.items():
        assert t.kinetic is not None and t.kinetic == after_zero[name].kinetic, name

def test_sgd_momentum_reading_is_the_velocity() -> None:
    """With p = −(η/h)·buffer, h = √η: θₖ₊₁ − θₖ = h pₖ₊₁ (the heavy-ball reading)."""
    model, data = _problem()
    lr = 0.04
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.8)
    mon = TrainingMonitor(model, opt, LOSS, data, every=1, observables=["theta",
                                                                        "layer_kinetic"])
    _train(model, opt, data, 6, mon)
    traj = mon.trajectory()
    theta = traj.q[0]
    moms = np.concatenate([np.sqrt(2 * traj.extras[f"kinetic:{n}"][0, -1:])
                           for n, _ in model.named_parameters()])
    dq = theta[-1] - theta[-2]
    # |h p| per layer equals |Δθ| per layer
    offs = 0
    for k, (_, p) in enumerate(model.named_parameters()):
        n = p.numel()
        assert np.linalg.norm(dq[offs:offs + n]) == pytest.approx(math.sqrt(lr) * moms[k],
                                                                  rel=1e-12)
        offs += n


@pytest.mark.parametrize("every", [100, 7])
@pytest.mark.parametrize("kind", ["sgd", "langevin", "adaptive"])
def test_monitor_does_not_change_training(kind: str, every: int) -> None:
    """Bit-equal parameters after 120 steps with and without the monitor (with λ_max too)."""
    finals = []
    for use in (False, True):
        model, data = _problem()
        if kind == "sgd":
            opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05,
                                                         momentum=0.9)
        elif kind == "langevin":
            opt = Langevin(model.parameters(), lr=0.05, gamma=1.0, temperature=1e-3, seed=3)
        else:
            opt = AdaptiveLangevin(model.parameters(), lr=0.05, temperature=1e-3, seed=3)
        torch.manual_seed(11)
        mon = (TrainingMonitor(model, opt, LOSS, data, every=every, curvature_every=2)
               if use else None)
        _train(model, opt, data, 120, mon)
        finals.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone())
        finals.append(torch.rand(1))  # the global generator is untouched too
    assert torch.equal(finals[0], finals[2])
    assert torch.equal(finals[1], finals[3])


def test_curvature_and_limit_records() -> None:
    model, data = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mon = TrainingMonitor(model, opt, LOSS, data, every=10, curvature_every=2)
    _train(model, opt, data, 40, mon)
    traj = mon.trajectory()
    lam = traj.extras["lambda_max"][0]
    assert np.isnan(lam[1]) and np.isnan(lam[3]) and np.all(np.isfinite(lam[[0, 2, 4]]))
    assert lam[-1] == pytest.approx(model_top_eigenvalue(model, LOSS, data).value, rel=1e-4)
    np.testing.assert_allclose(traj.extras["stability_limit"][0, [0, 2, 4]], 2 * 1.9 / 0.05,
                               rtol=1e-10)


def test_thermostat_recorded_for_adaptive_langevin() -> None:
    model, data = _problem()
    opt = AdaptiveLangevin(model.parameters(), lr=0.05, temperature=1e-3, xi0=0.3, seed=0)
    mon = TrainingMonitor(model, opt, LOSS, data, every=3)
    _train(model, opt, data, 9, mon)
    xi = mon.trajectory().extras["xi:group0"][0]
    assert xi[-1] == pytest.approx(float(opt.diagnostics(host=True)[0]["xi"]), rel=1e-12)
    assert xi[0] == 0.3  # record 0, before the first step: ξ₀ (it was NaN)
    assert np.all(xi[1:] != 0.3)


def test_optimizers_without_momenta_and_bad_inputs() -> None:
    model, data = _problem()
    adam = torch.optim.Adam(model.parameters())
    traj_keys = TrainingMonitor(model, adam, LOSS, data, every=1).trajectory().extras
    assert "loss" in traj_keys and not any(k.startswith("kinetic:") for k in traj_keys)
    with pytest.raises(ValueError, match="Adam keeps no momenta"):
        TrainingMonitor(model, adam, LOSS, data, observables=["layer_kinetic"])
    with pytest.raises(ValueError, match="every"):
        TrainingMonitor(model, adam, LOSS, data, every=0)
    with pytest.raises(ValueError, match="curvature_every"):
        TrainingMonitor(model, adam, LOSS, data, curvature_every=0)
    with pytest.raises(TypeError, match="optimizer"):
        TrainingMonitor(model, "sgd", LOSS, data)
    with pytest.raises(TypeError, match="model"):
        TrainingMonitor("mlp", adam, LOSS, data)
    with pytest.raises(ValueError, match="curvature_tol must be > 0, got -1"):
        TrainingMonitor(model, adam, LOSS, data, curvature_tol=-1)


@pytest.mark.parametrize("layer", [torch.nn.Dropout(0.3), torch.nn.BatchNorm1d(8)])
def test_a_model_in_training_mode_with_dropout_or_batch_norm_is_monitored(layer) -> None:
    """The monitor evaluates in eval mode, but it built its loss with the model as given and
    refused Dropout/BatchNorm in training mode ("call model.eval() first")."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), layer, torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    mon = TrainingMonitor(net, opt, LOSS, (x, y), every=1)
    assert net.training
    for _ in range(2):
        opt.zero_grad()
        LOSS(net(x), y).backward()
        opt.step()
        mon.step()
    assert net.training
    net.eval()
    with torch.no_grad():
        want = float(LOSS(net(x), y))
    assert mon.trajectory().extras["loss"][0, -1] == pytest.approx(want, rel=1e-6)


def test_monitor_in_a_training_mode_loop_with_a_warmup_from_zero():
    """A loop in model.train() (dropout) made the monitor's vmapped evaluation fail with raw
    functorch errors, and an SGD group at lr = 0 (a warm-up's first step) divided by zero in
    the momentum scaling. U is now the network in eval mode, the loop's modes are restored,
    and training is unchanged by the monitor."""
    from dynopt.monitor import TrainingMonitor

    def run(monitored):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Dropout(0.3),
                                  torch.nn.Linear(8, 1))
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 3, generator=g), torch.randn(32, 1, generator=g)
        lf = torch.nn.functional.mse_loss
        net.eval()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 3))
        mon = TrainingMonitor(net, opt, lf, (x, y), every=1, curvature_every=2) if monitored \
            else None
        net.train()
        for _ in range(6):
            opt.zero_grad()
            lf(net(x), y).backward()
            opt.step()
            sched.step()
            if mon is not None:
                mon.step()
        return net, mon, lf, x, y

    net, mon, lf, x, y = run(True)
    plain, *_ = run(False)
    assert net.training and net[2].training
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), plain.parameters(),
                                                  strict=True))
    tr = mon.trajectory()
    net.eval()
    with torch.no_grad():
        assert tr.extras["potential"][0, -1] == pytest.approx(lf(net(x), y).item(), rel=1e-6)
    assert np.isfinite(tr.extras["lambda_max"][0, ::2]).all()


def test_monitor_refuses_an_optimizer_of_another_model():
    """It recorded zero kinetic energies and no limit for an optimizer of other parameters."""
    from dynopt.monitor import TrainingMonitor

    net = torch.nn.Sequential(torch.nn.Linear(2, 1))
    other = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="holds none of the model's parameters"):
        TrainingMonitor(net, other, torch.nn.functional.mse_loss,
                        (torch.zeros(4, 2), torch.zeros(4, 1)))
