"""NetworkLoss: a network's loss as a potential of the flat parameter vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dynopt
from dynopt.potentials import NetworkLoss
from dynopt.potentials.minibatch import BatchSchedule, gradient_points
from dynopt.program import GRADIENT_OPS, POSITION_OPS

# tiny models: one intra-op thread (see the fixture in conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp(seed=0, dtype=torch.float64, hidden=5):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 1)).to(dtype)


def _data(n=24, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=dtype), torch.randn(n, 1, generator=g, dtype=dtype)


def _autograd_reference(net, q, x, y, lam):
    """Loss and gradient of one θ by ordinary autograd on the module."""
    vals, grads = [], []
    for row in q:
        torch.nn.utils.vector_to_parameters(row.clone(), net.parameters())
        net.zero_grad()
        loss = F.mse_loss(net(x), y) + 0.5 * lam * (row * row).sum()
        theta = torch.nn.utils.parameters_to_vector(net.parameters())
        (F.mse_loss(net(x), y) + 0.5 * lam * (theta * theta).sum()).backward()
        vals.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    return torch.tensor(vals, dtype=torch.float64), torch.stack(grads)


def test_value_and_grad_equal_autograd_on_the_module_for_every_chain():
    net = _mlp()
    x, y = _data()
    U = NetworkLoss(net, F.mse_loss, (x, y), weight_decay=0.3)
    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    assert U.dim == theta0.numel() == 21
    q = theta0 + 0.3 * torch.randn(4, U.dim, generator=torch.Generator().manual_seed(2),
                                   dtype=torch.float64)
    val, grad = U.value(q), U.grad(q)
    ref_v, ref_g = _autograd_reference(_mlp(), q, x, y, 0.3)
    torch.testing.assert_close(val, ref_v, rtol=0, atol=1e-13)
    torch.testing.assert_close(grad, ref_g, rtol=0, atol=1e-13)
    u2, g2 = U.value_and_grad(q)
    torch.testing.assert_close(u2, val, rtol=0, atol=1e-14)
    torch.testing.assert_close(g2, grad, rtol=0, atol=1e-14)
    # leading axes and numpy input
    assert U.value(q.reshape(2, 2, -1)).shape == (2, 2)
    np.testing.assert_allclose(U.grad(q.numpy()), grad.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(U.value(q[0]).item(), val[0].item(), rtol=0, atol=1e-14)


def test_float32_model_in_float32_and_float64():
    net = _mlp(dtype=torch.float32)
    x, y = _data(dtype=torch.float32)
    U = NetworkLoss(net, F.mse_loss, (x, y))
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    net.zero_grad()
    F.mse_loss(net(x), y).backward()
    ref = torch.cat([p.grad.flatten() for p in net.parameters()])
    g32 = U.grad(theta[None])[0]
    assert g32.dtype == torch.float32
    torch.testing.assert_close(g32, ref, rtol=1e-5, atol=1e-6)
    g64 = U.grad(theta.double()[None])[0]
    assert g64.dtype == torch.float64
    torch.testing.assert_close(g64.float(), ref, rtol=1e-5, atol=1e-6)


def test_flatten_unflatten_and_layer_slices():
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, _data())
    theta = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    torch.testing.assert_close(U.flatten(), theta, rtol=0, atol=0)
    named = U.unflatten(theta)
    for name, p in net.named_parameters():
        assert torch.equal(named[name], p.detach())
        assert torch.equal(theta[U.layers[name]], p.detach().flatten())
    assert list(U.layers) == [n for n, _ in net.named_parameters()]
    batch = U.unflatten(torch.stack([theta, 2 * theta]))
    assert batch["0.weight"].shape == (2, 5, 2)
    other = _mlp(seed=5)
    U.load_into(2 * theta, other)
    torch.testing.assert_close(U.flatten(other), 2 * theta, rtol=0, atol=0)
    with pytest.raises(ValueError, match="dim=21"):
        U.unflatten(theta[:-1])


def test_hutchinson_terms_and_exact_laplacian_equal_the_autograd_hessian():
    net = _mlp(hidden=3)
    x, y = _data()
    U = NetworkLoss(net, F.mse_loss, (x, y), weight_decay=0.2)
    g = torch.Generator().manual_seed(3)
    q = 0.5 * torch.randn(2, U.dim, generator=g, dtype=torch.float64)
    z = (2 * torch.randint(0, 2, (2, 3, U.dim), generator=g) - 1).double()
    terms = U.hutchinson(q, z)
    for c in range(2):
        H = torch.autograd.functional.hessian(
            lambda t: U._single_loss(t, x, y, {}) + 0.1 * (t * t).sum(), q[c])
        for k in range(3):
            torch.testing.assert_close(terms[c, k], z[c, k] * (H @ z[c, k]), rtol=0, atol=1e-12)
        torch.testing.assert_close(U.laplacian(q[c]), torch.trace(H), rtol=0, atol=1e-12)


def test_minibatch_gradients_average_to_the_full_gradient_over_an_epoch():
    x, y = _data(n=24)
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, (x, y), batch_size=6, weight_decay=0.1, seed=4)
    assert U.stochastic and U.schedule.n_batches == 4
    q = torch.randn(3, U.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for epoch in (0, 3):
        ks = range(4 * epoch, 4 * epoch + 4)
        seen = torch.cat([U.schedule.indices(k) for k in ks])
        assert sorted(seen.tolist()) == list(range(24))     # the batches partition the data
        mean = torch.stack([U.grad(q, batch=k) for k in ks]).mean(0)
        torch.testing.assert_close(mean, U.grad(q), rtol=0, atol=1e-13)
        assert not torch.allclose(U.grad(q, batch=ks[0]), U.grad(q), atol=1e-3)
    # a batch is a pure function of (seed, k): a fresh object, any evaluation order
    V = NetworkLoss(net, F.mse_loss, (x, y), batch_size=6, seed=4)
    assert torch.equal(V.schedule.indices(13), U.schedule.indices(13))
    assert torch.equal(V.schedule.indices(1), U.schedule.indices(1))
    W = NetworkLoss(net, F.mse_loss, (x, y), batch_size=6, seed=5)
    assert not torch.equal(W.schedule.permutation(0), U.schedule.permutation(0))


def test_batch_schedule_drops_the_remainder_with_equal_batches():
    s = BatchSchedule(10, 3, seed=0)
    assert s.n_batches == 3
    assert [len(s.indices(k)) for k in range(6)] == [3] * 6
    assert len(set(torch.cat([s.indices(k) for k in range(3)]).tolist())) == 9


@pytest.mark.parametrize("scheme, offsets, per_step", [
    ("BAOAB", [0, -1, -1, -1, 1], 1),
    ("OBABO", [-1, 0, -1, 1, -1], 1),
    ("ABA", [-1, 0, -1], 1),
    ("BAB", [0, -1, 1], 1),
    ("ABABA", [-1, 0, -1, 1, -1], 2),
])
def test_gradient_points_number_the_distinct_gradient_positions(scheme, offsets, per_step):
    sys = dynopt.systems.Langevin(dynopt.potentials.Harmonic(1.0, 1), gamma=1.0, temperature=1.0)
    prog = dynopt.integrators.resolve(scheme).program(sys, 0.1)
    got = gradient_points([op.code in GRADIENT_OPS for op in prog.ops],
                          [op.code in POSITION_OPS for op in prog.ops])
    assert got == (offsets, per_step)


# --- bad inputs ------------------------------------------------------------------------------------
class _Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


class _IntParam(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.steps = nn.Parameter(torch.zeros(2, dtype=torch.int64), requires_grad=False)

    def forward(self, x):
        return self.lin(x)


def test_bad_models_are_rejected_with_the_offender_named():
    x, y = _data()
    bn = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\) is in training mode"):
        NetworkLoss(bn, F.mse_loss, (x, y))
    NetworkLoss(bn.eval(), F.mse_loss, (x, y))   # eval mode: a pure forward
    drop = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    with pytest.raises(ValueError, match=r"Dropout, p=0.5"):
        NetworkLoss(drop, F.mse_loss, (x, y))
    with pytest.raises(ValueError, match="buffer 'calls' changed"):
        NetworkLoss(_Counter().double(), F.mse_loss, (x, y))
    with pytest.raises(TypeError, match="parameter 'steps' has dtype torch.int64"):
        NetworkLoss(_IntParam().double(), F.mse_loss, (x, y))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        NetworkLoss(lambda t: t, F.mse_loss, (x, y))
    with pytest.raises(ValueError, match="model has no parameters"):
        NetworkLoss(nn.Tanh(), F.mse_loss, (x, y))


def test_bad_data_and_hyperparameters_are_rejected_with_the_value_named():
    net = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match=r"data inputs of shape \(24, 3\) do not fit the model"):
        NetworkLoss(net, F.mse_loss, (torch.randn(24, 3, dtype=torch.float64), y))
    with pytest.raises(ValueError, match="data has 24 inputs but 23 targets"):
        NetworkLoss(net, F.mse_loss, (x, y[:-1]))
    with pytest.raises(ValueError, match=r"loss_fn cannot compare .* targets of shape \(24, 3\)"):
        NetworkLoss(net, F.mse_loss, (x, torch.randn(24, 3, dtype=torch.float64)))
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        NetworkLoss(net, lambda o, t: (o - t) ** 2, (x, y))
    with pytest.raises(ValueError, match="data targets contain NaN or inf"):
        NetworkLoss(net, F.mse_loss, (x, torch.full_like(y, float("nan"))))
    with pytest.raises(TypeError, match="data must be a pair"):
        NetworkLoss(net, F.mse_loss, x)
    with pytest.raises(TypeError, match="data targets must be a torch.Tensor"):
        NetworkLoss(net, F.mse_loss, (x, y.numpy()))
    with pytest.raises(TypeError, match="loss_fn must be callable, got 3"):
        NetworkLoss(net, 3, (x, y))
    with pytest.raises(ValueError, match="heldout inputs of shape"):
        NetworkLoss(net, F.mse_loss, (x, y), heldout=(torch.randn(5, 4), torch.randn(5, 1)))
    for kw, pat, err in [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0", ValueError),
        ({"batch_size": 25}, r"batch_size must be <= the number of examples \(24\), got 25",
         ValueError),
        ({"batch_size": 2.5}, "batch_size must be None or an int, got 2.5", TypeError),
        ({"weight_decay": -1.0}, "weight_decay", ValueError),
        ({"weight_decay": float("nan")}, "weight_decay", ValueError),
        ({"seed": -3}, "seed", ValueError),
    ]:
        with pytest.raises(err, match=pat):
            NetworkLoss(net, F.mse_loss, (x, y), **kw)
    U = NetworkLoss(net, F.mse_loss, (x, y))
    with pytest.raises(ValueError, match="heldout_loss needs"):
        U.heldout_loss(torch.zeros(1, U.dim))
    with pytest.raises(ValueError, match="q has 3 coordinates per chain but the model has dim=21"):
        U.grad(torch.zeros(2, 3))


def test_numba_backend_is_refused_and_torch_is_the_default():
    net = _mlp()
    U = NetworkLoss(net, F.mse_loss, _data())
    sys = dynopt.systems.Langevin(U, gamma=1.0, temperature=0.1)
    theta0 = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    with pytest.raises(ValueError, match=r"backend='numba' cannot integrate NetworkLoss"):
        dynopt.integrate(sys, "BAOAB", theta0, h=0.1, n_steps=2, backend="numba", seed=0)
    traj = dynopt.integrate(sys, "BAOAB", theta0, h=0.1, n_steps=2, seed=0)
    assert traj.backend == "torch"


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
def test_lean_mlp_path_computes_the_same_function_as_the_vmap_path(act):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), act(), nn.Linear(5, 3, bias=False), act(),
                        nn.Linear(3, 1)).double()
    x, y = _data()
    fast = NetworkLoss(net, F.mse_loss, (x, y), weight_decay=0.1, batch_size=8)
    slow = NetworkLoss(net, F.mse_loss, (x, y), weight_decay=0.1, batch_size=8, path="vmap")
    assert (fast.path, slow.path) == ("mlp", "vmap")
    q = torch.randn(4, fast.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for batch in (None, 5):
        torch.testing.assert_close(fast.value(q, batch=batch), slow.value(q, batch=batch),
                                   rtol=0, atol=1e-13)
        torch.testing.assert_close(fast.grad(q, batch=batch), slow.grad(q, batch=batch),
                                   rtol=0, atol=1e-13)
    u, g = fast.value_and_grad(q)
    torch.testing.assert_close(g, slow.grad(q), rtol=0, atol=1e-13)
    torch.testing.assert_close(u, slow.value(q), rtol=0, atol=1e-13)
    torch.testing.assert_close(fast.data_loss(q), slow.data_loss(q), rtol=0, atol=1e-13)
    z = torch.randn(4, 3, fast.dim, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    for batch in (None, 5):   # the lean double backward = the vmapped one, probe by probe
        torch.testing.assert_close(fast.hvp(q, z, batch=batch), slow.hvp(q, z, batch=batch),
                                   rtol=0, atol=1e-12)
        for U in (fast, slow):    # grad_and_hvp's gradient (same pass on the lean path) = grad
            g, hz = U.grad_and_hvp(q, z, batch=batch)
            torch.testing.assert_close(g, slow.grad(q, batch=batch), rtol=0, atol=1e-12)
            torch.testing.assert_close(hz, slow.hvp(q, z, batch=batch), rtol=0, atol=1e-12)
    # models the lean path cannot represent take the vmap path, or refuse path="mlp"
    other = nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 1)).double()
    assert NetworkLoss(other, F.mse_loss, (x, y)).path == "vmap"
    with pytest.raises(ValueError, match="path='mlp' needs an nn.Sequential"):
        NetworkLoss(other, F.mse_loss, (x, y), path="mlp")
    with pytest.raises(ValueError, match="path"):
        NetworkLoss(net, F.mse_loss, (x, y), path="fast")


def test_tied_weights_take_the_general_path_and_a_reused_module_is_refused():
    """The fast MLP path listed a repeated module once (a wrong U for Sequential(l, act, l))
    and crashed on tied weights; functorch's functional_call left a batched tensor in a
    reused module. Tied weights now take the general path (exact U and ∇U); a module object
    used twice is refused by name; a shared parameter-free activation is fine."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 3), torch.randn(10, 3)
    lf = torch.nn.functional.mse_loss
    a, b = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    b.weight = a.weight
    act = torch.nn.Tanh()
    tied = torch.nn.Sequential(a, act, b, act)  # the activation object is shared too
    U = NetworkLoss(tied, lf, (x, y))
    assert U.path == "vmap"
    theta = torch.nn.utils.parameters_to_vector(tied.parameters()).detach()
    assert U.dim == theta.numel() == 15
    ref = lf(tied(x), y)
    assert U.value(theta[None]).item() == pytest.approx(ref.item(), rel=1e-6)
    g = torch.autograd.grad(ref, list(tied.parameters()))
    assert torch.allclose(U.grad(theta[None])[0], torch.cat([t.reshape(-1) for t in g]),
                          atol=1e-6)
    lin = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="'2' is the same object as '0'"):
        NetworkLoss(torch.nn.Sequential(lin, torch.nn.Tanh(), lin), lf, (x, y))


def test_wrongly_shaped_q_gets_a_clear_error_on_every_entry_point():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    U = NetworkLoss(net, F.mse_loss, (x, y), heldout=(x, y))
    wide = torch.zeros(2, U.dim + 1)
    for call in (U.value, U.grad, U.data_loss, U.heldout_loss):
        with pytest.raises(ValueError, match=f"q has {U.dim + 1} coordinates"):
            call(wide)
    for q in (torch.zeros(U.dim), np.zeros((1, U.dim))):
        with pytest.raises(ValueError, match="value_and_grad needs a torch tensor q of shape"):
            U.value_and_grad(q)
