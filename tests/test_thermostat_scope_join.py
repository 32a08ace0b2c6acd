"""A tensor that joins a running shared thermostat (``scope="group"``/``"model"``).

A tensor can get its first gradient after the optimizer has started (a layer unfrozen later, a
branch not taken in the first batches). With a per-tensor thermostat it starts its own dynamics
(the half kick of the first step). A shared ξ must still take exactly one update per step, from
Σp² over every tensor of its scope: the joining tensor starts from zero momentum and takes the
scope's steady step with the others. The reference is one concatenated tensor that holds the
same state, stepped by the same deterministic dynamics (Nosé–Hoover has no noise): the same
values up to the order of the Σp² sum. Before this was fixed, the joining tensors ran as a
cohort of their own and ξ moved twice in that step: θ differed from the reference by a
relative 9e-3 after it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from state_equal import same

from dynopt.optim import NoseHoover

H, TAU = 0.05, 0.3
PATHS = {"fused": {}, "foreach": {"foreach": True}, "single": {"foreach": False}}


def _grads(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(5, generator=g, dtype=torch.float64),
            torch.randn(2, 3, generator=g, dtype=torch.float64)]


def _xi(opt: NoseHoover) -> torch.Tensor:
    (x,) = opt.global_state["extras"].values()
    return x


def _two_tensors(scope: str, chain_length: int, path: dict) -> tuple[NoseHoover, list]:
    g = torch.Generator().manual_seed(7)
    a = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()
    kw = dict(lr=H, temperature=TAU, tau=0.4, chain_length=chain_length, scope=scope, **path)
    groups = [{"params": [a]}, {"params": [b]}] if scope == "model" else [a, b]
    return NoseHoover(groups, **kw), [a, b]


def _reference(opt: NoseHoover, params: list, joined: list[bool], chain_length: int,
               path: dict) -> tuple[NoseHoover, torch.Tensor]:
    """One tensor holding the joined tensors' θ and momenta (zero for the joining ones), the
    shared ξ and the step count: the state the joined step must continue from."""
    c = torch.cat([p.detach().reshape(-1) for p, j in zip(params, joined) if j])
    c.requires_grad_()
    moms = [opt.state[p]["momentum_buffer"].reshape(-1) if opt.state.get(p)
            else torch.zeros(p.numel(), dtype=p.dtype)
            for p, j in zip(params, joined) if j]
    ref = NoseHoover([c], lr=H, temperature=TAU, tau=0.4, chain_length=chain_length,
                     scope="group", **path)
    ref.state[c].update(step=1, momentum_buffer=torch.cat(moms).clone())
    ref.global_state["extras"] = {"group0": _xi(opt).clone()}
    ref.global_state["step"] = opt.global_state["step"]
    return ref, c


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("chain_length", [1, 2])
@pytest.mark.parametrize("scope", ["group", "model"])
def test_a_joining_tensor_shares_one_thermostat_update(scope, chain_length, path):
    opt, (a, b) = _two_tensors(scope, chain_length, PATHS[path])
    a.grad = _grads(0)[0]
    opt.step()  # b has no gradient yet: a alone, its first step
    assert not opt.state.get(b)
    ref, c = _reference(opt, [a, b], [True, True], chain_length, PATHS[path])
    for seed in (1, 2, 3):
        ga, gb = _grads(seed)
        a.grad, b.grad = ga, gb
        c.grad = torch.cat([ga, gb.reshape(-1)])
        opt.step()
        ref.step()
        got = torch.cat([a.detach(), b.detach().reshape(-1)])
        torch.testing.assert_close(got, c.detach(), rtol=1e-13, atol=0)
        mom = torch.cat([opt.state[a]["momentum_buffer"],
                         opt.state[b]["momentum_buffer"].reshape(-1)])
        torch.testing.assert_close(mom, ref.state[c]["momentum_buffer"], rtol=1e-12, atol=0)
        torch.testing.assert_close(_xi(opt), _xi(ref), rtol=1e-12, atol=0)
    assert opt.state[b]["step"] == 3 and opt.state[a]["step"] == 4


@pytest.mark.parametrize("path", PATHS)
def test_a_tensor_joining_alone_continues_the_scope(path):
    """The scope's other tensor sits the step out (no gradient): the joining one still
    continues the scope's ξ with the steady step, it does not restart the dynamics."""
    opt, (a, b) = _two_tensors("group", 1, PATHS[path])
    a.grad = _grads(0)[0]
    opt.step()
    a.grad = None
    ref, c = _reference(opt, [a, b], [False, True], 1, PATHS[path])
    gb = _grads(1)[1]
    b.grad, c.grad = gb, gb.reshape(-1).clone()
    opt.step()
    ref.step()
    torch.testing.assert_close(b.detach().reshape(-1), c.detach(), rtol=0, atol=0)
    torch.testing.assert_close(_xi(opt), _xi(ref), rtol=0, atol=0)


def test_per_tensor_thermostats_start_with_the_half_kick():
    """scope="tensor": a late tensor starts its own ξ at ξ₀ and its dynamics with the first
    step's half kick, exactly as if it were the optimizer's first step."""
    opt, (a, b) = _two_tensors("tensor", 1, {})
    a.grad = _grads(0)[0]
    opt.step()
    fresh, (_, b2) = _two_tensors("tensor", 1, {})
    gb = _grads(1)[1]
    b.grad, b2.grad = gb, gb.clone()
    a.grad = None
    opt.step()
    fresh.step()
    torch.testing.assert_close(b.detach(), b2.detach(), rtol=0, atol=0)
    torch.testing.assert_close(opt.state[b]["extras"], fresh.state[b2]["extras"], rtol=0, atol=0)


def test_a_joining_step_that_overflows_is_undone_whole():
    """The joining tensor's new state is part of the step: a result that overflows (Σp² = inf
    through the joining tensor's huge gradient) is undone, b's state with it, and b joins
    cleanly at the next step."""
    opt, (a, b) = _two_tensors("group", 1, {})
    opt.nonfinite = "skip"
    a.grad = _grads(0)[0]
    opt.step()
    before = (a.detach().clone(), b.detach().clone(), copy.deepcopy(dict(opt.state[a])),
              _xi(opt).clone())
    a.grad, b.grad = _grads(1)[0], torch.full((2, 3), 1e300, dtype=torch.float64)
    opt.step()
    assert opt.global_state["skipped"] == 1 and not opt.state.get(b)
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    assert same(dict(opt.state[a]), before[2]) and torch.equal(_xi(opt), before[3])
    ref, c = _reference(opt, [a, b], [True, True], 1, {})
    ga, gb = _grads(2)
    a.grad, b.grad, c.grad = ga, gb, torch.cat([ga, gb.reshape(-1)])
    opt.step()
    ref.step()
    torch.testing.assert_close(_xi(opt), _xi(ref), rtol=1e-12, atol=0)
