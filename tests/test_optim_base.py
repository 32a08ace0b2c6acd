"""The torch.optim contract implemented by DynamicsOptimizer, on a minimal noisy subclass."""

from __future__ import annotations

import io
import re

import pytest
import torch

from dynopt.errors import DivergenceError
from dynopt.optim import BBI, ECDSep, HeavyBall, Langevin, NoseHoover, OverdampedLangevin
from dynopt.optim.base import DynamicsOptimizer


class NoisyGD(DynamicsOptimizer):
    """θ ← θ − lr·g + σ·R (a test double exercising lr, a schedulable σ and the generator)."""

    schedulable = ("lr", "sigma")

    def __init__(self, params, lr=0.1, sigma=0.1, **kw):
        super().__init__(params, {"lr": lr, "sigma": sigma}, **kw)

    def _validate_group(self, group, index):
        from dynopt._validation import check_nonnegative

        super()._validate_group(group, index)
        self._check_hyper(group, index, "sigma", check_nonnegative)

    def _update(self, loss=None):
        from dynopt._validation import check_nonnegative

        for group in self.param_groups:
            lr = self.hyper(group, "lr")
            sigma = self.hyper(group, "sigma", check_nonnegative)
            for p, g in zip(*self.params_with_grad(group)):
                z = torch.randn(p.shape, generator=self.generator(p.device), dtype=p.dtype)
                p.add_(g, alpha=-lr).add_(z, alpha=sigma)


def _run(opt, params, n):
    out = []
    for _ in range(n):
        for p in params:
            p.grad = p.detach().clone() ** 3
        opt.step()
        out.append(torch.cat([p.detach().flatten().clone() for p in params]))
    return torch.stack(out)


def test_resume_bit_exact_through_weights_only_load():
    torch.manual_seed(0)
    a = [torch.randn(5, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)]
    opt_a = NoisyGD(a, lr=0.05, sigma=lambda k: 0.1 / (1 + k), seed=7)
    _run(opt_a, a, 10)
    buf = io.BytesIO()
    torch.save({"params": [t.clone() for t in a], "opt": opt_a.state_dict()}, buf)
    ref = _run(opt_a, a, 100)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    b = [t.clone() for t in ckpt["params"]]
    opt_b = NoisyGD(b, lr=0.05, sigma=lambda k: 0.1 / (1 + k), seed=999)
    opt_b.load_state_dict(ckpt["opt"])
    assert opt_b.seed == 7 and opt_b.step_count == 10
    assert torch.equal(_run(opt_b, b, 100), ref)


def test_seeded_runs_are_identical_and_do_not_touch_global_rng():
    torch.manual_seed(0)
    x0 = torch.randn(4)
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        p = [x0.clone()]
        runs.append(_run(NoisyGD(p, seed=3), p, 20))
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(state, torch.get_rng_state())


def test_bad_hyperparameters_name_the_parameter():
    p = [torch.zeros(2)]
    with pytest.raises(ValueError, match=re.escape("lr must be >= 0, got -1.0")):
        NoisyGD(p, lr=-1.0)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        NoisyGD(p, sigma=-0.5)
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        NoisyGD(p, nonfinite="maybe")
    opt = NoisyGD(p, sigma=lambda k: -1.0)
    p[0].grad = torch.ones(2)
    msg = re.escape("sigma (schedule value at step 0) must be >= 0")
    with pytest.raises(ValueError, match=msg):
        opt.step()


def test_nonfinite_gradient_raises_without_touching_state():
    p = torch.ones(3)
    opt = NoisyGD([p], seed=1)
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    with pytest.raises(DivergenceError, match="non-finite gradient at step 1"):
        opt.step()
    assert torch.equal(p, torch.ones(3)) and opt.step_count == 0
    skip = NoisyGD([p], seed=1, nonfinite="skip")
    skip.step()
    assert torch.equal(p, torch.ones(3)) and skip.global_state["skipped"] == 1


def test_closure_loss_is_returned_and_scheduler_drives_lr():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = NoisyGD([p], lr=0.5, sigma=0.0, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum() / 2
        loss.backward()
        return loss

    losses = []
    for _ in range(3):
        losses.append(float(opt.step(closure).detach()))
        sched.step()
    # θ ← θ(1 − lr_k) with lr = 0.5, 0.25, 0.125
    assert p.item() == pytest.approx(2.0 * 0.5 * 0.75 * 0.875)
    assert losses[0] == pytest.approx(2.0)


def test_complex_and_sparse_are_rejected():
    with pytest.raises(ValueError, match="complex"):
        NoisyGD([torch.zeros(2, dtype=torch.complex64)])
    p = torch.zeros(3)
    opt = NoisyGD([p])
    p.grad = torch.zeros(3).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("cls", [Langevin, OverdampedLangevin, NoseHoover, HeavyBall, BBI, ECDSep])
def test_a_parameter_listed_twice_in_a_group_is_refused(cls):
    """torch only warns (a deprecation) for a parameter listed twice in one group; the step then
    moved it twice with two momentum buffers of which one was kept, and the paths disagreed
    (0.015 between single and fused at τ = 0). Refused, by construction and add_param_group,
    and a refused group is not kept."""
    w, b = torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.zeros(4))
    with pytest.raises(ValueError, match=r"parameter 2 of param group 0 is parameter 0 again "
                                         r"\(a \(3, 4\) tensor\)"):
        cls([w, b, w], lr=0.01)
    opt = cls((p for p in [w]), lr=0.01)  # a generator is read once
    assert opt.param_groups[0]["params"] == [w]
    with pytest.raises(ValueError, match="parameter 1 of param group 1 is parameter 0 again"):
        opt.add_param_group({"params": iter([b, b])})
    assert len(opt.param_groups) == 1
    opt.add_param_group({"params": b})
    assert opt.param_groups[1]["params"] == [b]
