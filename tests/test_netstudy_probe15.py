"""Bug hunt 15, "a network's training is the system": NetworkLoss, replicas, training helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import dynopt
from dynopt import replicas
from dynopt.potentials import NetworkLoss

torch.set_num_threads(1)


def _data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, torch.sin(x[:, :1])


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))


# --- a loss that sums over the batch, with minibatches --------------------------------------------


def test_summed_loss_with_minibatches_is_refused():
    """reduction='sum' made minibatch k's gradient an estimate of b/n times ∇U (the full-batch
    sum): the dynamics ran at a temperature n/b times too high, silently."""
    x, y = _data()

    def summed(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(o, t, reduction="sum")

    with pytest.raises(ValueError, match=r"loss_fn sums over the batch.*batch_size=10"):
        NetworkLoss(_mlp(), summed, (x, y), batch_size=10)
    net3 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    with pytest.raises(ValueError, match="batch_size=6"):
        NetworkLoss(net3, nn.CrossEntropyLoss(reduction="sum"), (x, torch.arange(30) % 3),
                    batch_size=6)


def test_mean_losses_with_minibatches_still_pass():
    """The check refuses sums only: batch means (also weighted and 'batchmean' ones) pass, and
    a summed loss over the full batch stays allowed (it is a posterior at temperature τ)."""
    x, y = _data()
    net3 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
    yc = torch.arange(30) % 3
    NetworkLoss(_mlp(), F.mse_loss, (x, y), batch_size=10)
    NetworkLoss(net3, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0])), (x, yc),
                batch_size=10)
    NetworkLoss(net3, lambda o, t: F.kl_div(F.log_softmax(o, -1), F.one_hot(t, 3).float(),
                                            reduction="batchmean"), (x, yc), batch_size=10)
    U = NetworkLoss(_mlp(), lambda o, t: F.mse_loss(o, t, reduction="sum"), (x, y))
    q = U.flatten().double()[None]
    net64 = _mlp().double()
    torch.nn.utils.vector_to_parameters(q[0], net64.parameters())
    ref = F.mse_loss(net64(x.double()), y.double(), reduction="sum").detach()
    assert float(U.value(q)[0]) == pytest.approx(float(ref), rel=1e-12)


# --- models the batched general path cannot evaluate ----------------------------------------------


class _FunctionalDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.lin(x), 0.5, training=self.training)


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(x)[0][:, -1])


def test_random_forward_without_a_dropout_module_is_refused_at_construction():
    """F.dropout(training=True) in a custom forward (no Dropout module for the mode check)
    passed construction and failed at the first evaluation with torch's raw vmap error."""
    x, y = _data()
    with pytest.raises(ValueError, match=r"_FunctionalDropout cannot be evaluated.*model\.eval"):
        NetworkLoss(_FunctionalDropout(), F.mse_loss, (x, y))
    with pytest.raises(ValueError, match="Sequential cannot be evaluated"):
        NetworkLoss(nn.Sequential(nn.Linear(3, 4), nn.RReLU(), nn.Linear(4, 1)), F.mse_loss,
                    (x, y))
    m = _FunctionalDropout().eval()  # in eval mode it is a deterministic function
    U = NetworkLoss(m, F.mse_loss, (x, y))
    q = U.flatten().double()[None]
    assert torch.equal(U.value(q), U.value(q))


def test_recurrent_model_is_refused_at_construction():
    """A GRU batches under torch.func's grad but not in a plain vmapped value: the potential
    was built, its gradient worked, and U.value (recorded every record) raised later."""
    x = torch.randn(8, 5, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="_Recurrent cannot be evaluated.*gru"):
        NetworkLoss(_Recurrent(), F.mse_loss, (x, x[:, -1, :1]))


# --- replicas keep q0's device ---------------------------------------------------------------------


def test_integrate_distributed_hands_integrate_q0_and_p0_as_tensors(monkeypatch):
    """integrate_distributed turned a torch q0 (and p0) into numpy before calling integrate(),
    whose device defaults to q0's: a CUDA q0 silently ran on the CPU. Rows stay tensors on
    their device now (checked through what integrate() receives; the study is unchanged)."""
    x, y = _data(12)
    U = NetworkLoss(_mlp(), F.mse_loss, (x, y))
    sys = dynopt.systems.Langevin(U, gamma=1.0, temperature=0.01)
    q0 = U.flatten().double().repeat(3, 1) + 0.01 * torch.arange(3.0, dtype=torch.float64)[:, None]
    p0 = torch.zeros_like(q0)
    seen = []
    real = replicas.integrate

    def spy(system, integ, q, **kw):
        seen.append((q, kw["p0"]))
        return real(system, integ, q, **kw)

    monkeypatch.setattr(replicas, "integrate", spy)
    traj = replicas.integrate_distributed(sys, "BAOAB", q0, n_chains=3, p0=p0, h=0.05,
                                          n_steps=3, seed=1, observables=["theta"])
    q, p = seen[0]
    assert isinstance(q, torch.Tensor) and q.device == q0.device and torch.equal(q, q0)
    assert isinstance(p, torch.Tensor) and torch.equal(p, p0)
    alone = dynopt.integrate(sys, "BAOAB", q0, n_chains=3, p0=p0, h=0.05, n_steps=3, seed=1,
                             chain_ids=range(3), observables=["theta"])
    assert (traj.q == alone.q).all()


# --- model_top_eigenvalue reads the model, it does not train it ------------------------------------


def test_model_top_eigenvalue_leaves_batch_norm_statistics_unchanged():
    """In training mode its forward updated batch norm's running mean, variance and counter
    (its docstring: 'nothing is changed'), so a later eval-mode evaluation of the model moved."""
    from dynopt.diagnostics import model_top_eigenvalue

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 1))
    x, y = _data(40)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    lam = model_top_eigenvalue(m, F.mse_loss, [(x[:20], y[:20]), (x[20:], y[20:])]).value
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert m.training and lam == model_top_eigenvalue(m, F.mse_loss,
                                                      [(x[:20], y[:20]), (x[20:], y[20:])]).value


def test_fit_names_a_fractional_seed():
    """fit(seed=1.5) failed inside torch ('manual_seed expected a long')."""
    from dynopt.data import make_spirals
    from dynopt.training import fit, mlp

    split = make_spirals(n_train=20, n_test=20)
    model = mlp(2, 1, (4,), sigmoid_output=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"seed must be an integer, got 1\.5"):
        fit(model, opt, split, epochs=1, batch_size=5, seed=1.5)
