"""Copies of every optimizer (deepcopy, pickle, torch.save of the object) continue bit for bit."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from optim_zoo import FACTORIES, data, model, train


def _pickle(obj):
    return pickle.loads(pickle.dumps(obj))


def _torch_save(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _same(a, b) -> bool:
    """Equal nested dicts/lists of tensors and numbers (tensors: equal and not shared)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a is not b and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


COPIES = {"deepcopy": copy.deepcopy, "pickle": _pickle, "torch.save": _torch_save}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_copy_continues_bit_exactly(name, how):
    """Train 6 steps, copy (model, optimizer) together, train both 8 more steps on the same
    batches: identical parameters (noise, generators, thermostats, BBI/ECD energy, events and
    DDPNOpt's recording hooks all travel with the copy), and the copy does not share state
    with the original."""
    batches = data(14)
    m = model()
    opt = FACTORIES[name](m, seed=3)
    train(m, opt, batches[:6], name)
    m2, opt2 = COPIES[how]((m, opt))
    assert opt2 is not opt and opt2.seed == opt.seed
    assert _same(opt2.global_state, opt.global_state)
    ref = train(m, opt, batches[6:], name)
    got = train(m2, opt2, batches[6:], name)
    assert torch.equal(got, ref)
    assert opt2.step_count == opt.step_count == 14
    # the copy's parameters are its own: the original stepped, yet the copy matched it
    assert all(p2 is not p for p2, p in zip(m2.parameters(), m.parameters(), strict=True))


def test_copy_of_fresh_optimizer_draws_the_same_noise():
    """A copy made before the first step owns a generator in the same state (τ > 0)."""
    m = model()
    opt = FACTORIES["Langevin"](m, seed=5, temperature=0.1)
    m2, opt2 = copy.deepcopy((m, opt))
    batches = data(3)
    assert torch.equal(train(m, opt, batches, "Langevin"), train(m2, opt2, batches, "Langevin"))


def test_copy_drops_hooks_like_torch():
    """torch's Optimizer pickles without hooks (they may be closures); so does dynopt."""
    m = model()
    opt = FACTORIES["Langevin"](m, seed=5)
    calls = []
    opt.register_step_post_hook(lambda *a: calls.append(1))
    _, opt2 = copy.deepcopy((m, opt))
    assert len(opt2._optimizer_step_post_hooks) == 0
    assert len(opt._optimizer_step_post_hooks) == 1


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_copy_with_a_scheduler_attached_steps_itself(name, how):
    """An LR scheduler wraps ``step`` on the optimizer instance. The copy used to keep the
    original's wrapper, so ``opt2.step()`` stepped the original (with its stale gradients) and
    pickle/torch.save failed on the closure. Now the copy (with its scheduler) continues like the
    original would, the original does not move, and neither warns about the call order."""
    batches = data(12)
    m = model()
    opt = FACTORIES[name](m, seed=3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train(m, opt, batches[:4], name, sched)
    m2, opt2, sched2 = COPIES[how]((m, opt, sched))
    frozen = torch.cat([p.detach().flatten().clone() for p in m.parameters()])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = train(m2, opt2, batches[4:], name, sched2)
    assert torch.equal(torch.cat([p.detach().flatten() for p in m.parameters()]), frozen)
    assert opt.step_count == 4 and opt2.step_count == 12
    assert opt2.param_groups[0]["lr"] == sched2.get_last_lr()[0]
    assert torch.equal(got, train(m, opt, batches[4:], name, sched))
