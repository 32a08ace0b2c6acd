"""observe_loss: the loss accumulates like the gradient, for every optimizer that reads it."""

from __future__ import annotations

import pytest
import torch
from optim_zoo import FACTORIES, data, flat, loss_fn, model

from dynopt.events import LossBelow, SetFriction
from dynopt.optim import HeavyBall

LOSS_USERS = ("BBI", "ECDSep", "HeavyBall")


def _dyadic_problem():
    """Linear(2, 1) with weights (1/2, −1/4), bias 1/8 and integer data: every residual,
    square, mean, half and gradient is a short dyadic rational, so all float64 sums are exact
    and the full batch and its two halves agree bit for bit."""
    m = torch.nn.Linear(2, 1).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.5, -0.25]]))
        m.bias.fill_(0.125)
    x = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-1.0, 2.0], [2.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[1.0], [-2.0], [0.0], [3.0]], dtype=torch.float64)
    return m, x, y


@pytest.mark.parametrize("name", LOSS_USERS)
def test_two_half_batches_equal_one_full_batch_bit_for_bit(name):
    m_full, x, y = _dyadic_problem()
    m_half, _, _ = _dyadic_problem()
    if name == "HeavyBall":  # the loss reaches the dynamics through an event that fires
        def make(ps):
            return HeavyBall(ps, lr=0.1, gamma=0.5, seed=2,
                             events=[LossBelow(2.0, then=SetFriction(2.0))])
    else:
        cls = type(FACTORIES[name](model(), seed=0))

        def make(ps):
            return cls(ps, seed=2)
    o_full, o_half = make(m_full.parameters()), make(m_half.parameters())
    full = torch.nn.functional.mse_loss(m_full(x), y)
    full.backward()
    o_full.step(loss=full)
    observed = []
    for sl in (slice(0, 2), slice(2, 4)):
        part = torch.nn.functional.mse_loss(m_half(x[sl]), y[sl]) / 2
        part.backward()
        o_half.observe_loss(part)
        observed.append(part)
    assert torch.equal(observed[0] + observed[1], full)  # the sums are exact
    ret = o_half.step()
    assert torch.equal(ret, full)
    assert torch.equal(m_half.weight, m_full.weight) and torch.equal(m_half.bias, m_full.bias)
    assert not torch.equal(m_full.weight, _dyadic_problem()[0].weight)  # it moved
    assert o_half._observed_loss is None  # reset
    if name == "HeavyBall":
        assert len(o_half.event_log) == len(o_full.event_log) == 1


@pytest.mark.parametrize("name", LOSS_USERS)
def test_accumulation_loop_matches_step_with_the_summed_loss(name):
    """8 steps of 2 accumulated micro-batches: observe_loss + step() is bit-identical to
    step(loss=l₁/2 + l₂/2) (same summation order), and differs from feeding only the last
    micro-batch (what Lightning's closure returns)."""
    batches = data(16)
    runs = []
    for mode in ("observe", "sum", "last"):
        m = model()
        opt = FACTORIES[name](m, seed=5)
        for k in range(0, 16, 2):
            opt.zero_grad()
            parts = []
            for x, y in batches[k:k + 2]:
                part = loss_fn(m, x, y) / 2
                part.backward()
                parts.append(part.detach())
                if mode == "observe":
                    opt.observe_loss(part)
            if mode == "observe":
                opt.step()
            elif mode == "sum":
                opt.step(loss=parts[0] + parts[1])
            else:
                opt.step(loss=parts[1])
        runs.append(flat(m))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_observed_loss_with_a_closure_and_errors():
    """With a closure, the observed sum (including losses observed inside the closure) is the
    step's loss; loss= after observe_loss, a non-scalar and a NaN float raise."""
    batches = data(2)
    m1, m2 = model(), model()
    o1, o2 = FACTORIES["BBI"](m1, seed=1), FACTORIES["BBI"](m2, seed=1)
    parts = []
    for x, y in batches:
        part = loss_fn(m1, x, y) / 2
        part.backward()
        parts.append(part.detach())
    o1.step(loss=parts[0] + parts[1])
    first = loss_fn(m2, *batches[0]) / 2
    first.backward()
    o2.observe_loss(first)

    def closure():
        last = loss_fn(m2, *batches[1]) / 2
        last.backward()
        o2.observe_loss(last)
        return last

    returned = o2.step(closure)
    assert torch.equal(returned.detach(), parts[1])
    assert torch.equal(flat(m1), flat(m2))
    o2.observe_loss(0.5)
    with pytest.raises(ValueError, match="observe_loss"):
        o2.step(loss=torch.tensor(0.5))
    assert o2._observed_loss is None
    with pytest.raises(ValueError, match="scalar"):
        o2.observe_loss(torch.ones(2))
    with pytest.raises(ValueError, match="loss"):
        o2.observe_loss(float("nan"))


def test_uses_loss():
    assert FACTORIES["BBI"](model()).uses_loss and FACTORIES["ECDSep"](model()).uses_loss
    assert FACTORIES["HeavyBall"](model()).uses_loss  # a LossBelow event
    assert not HeavyBall(model().parameters()).uses_loss
