"""Session 16's mutation testing of session 15's changes: each test here kills a one-line mutant
of the changed code that the existing tests let survive (the mutant named in each docstring),
and each mutant is a bug a user could hit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynopt.optim import DDPNOpt, HeavyBall, Langevin


# --- optim/base.py: LRSchedule ---------------------------------------------------------------
def _schedule(step: int) -> float:
    return 0.1 / (1.0 + step)


@pytest.mark.parametrize("op", [
    lambda lr: lr * 0.5, lambda lr: 0.5 * lr, lambda lr: lr / 2.0, lambda lr: 2.0 / lr,
    lambda lr: lr + 1.0, lambda lr: 1.0 + lr, lambda lr: lr - 1.0, lambda lr: 1.0 - lr,
    lambda lr: -lr])
def test_every_arithmetic_on_an_lr_schedule_is_refused_naming_it(op):
    """Mutant: ``__rmul__`` dropped from LRSchedule's refusals. Code that computes
    ``factor * group["lr"]`` (a scheduler or a framework written that way round) then got
    Python's bare "unsupported operand type(s) for *: 'float' and 'LRSchedule'" instead of the
    refusal that says what happened and what to do; each operand order is refused alike.
    (``float(lr)`` reads the value the next step uses, for loggers: tests/test_integ_probe16.py.)"""
    opt = Langevin(nn.Linear(2, 1).parameters(), lr=_schedule, seed=0)
    lr = opt.param_groups[0]["lr"]
    with pytest.raises(TypeError, match=r"lr is a dynopt schedule \(<function _schedule"):
        op(lr)
    assert lr(3) == _schedule(3)


# --- optim/base.py: prior_value --------------------------------------------------------------
def test_prior_value_sums_the_priors_of_every_group():
    """Mutant: prior_value kept only the last group's prior (``total = v``). U = loss + Σ
    λ_g|θ_g|²/2 over the groups is what the energy and loss events read; two groups with their
    own weight decay must both count."""
    torch.manual_seed(0)
    m = nn.Linear(3, 2).double()
    opt = HeavyBall([{"params": [m.weight], "weight_decay": 0.1},
                     {"params": [m.bias], "weight_decay": 0.3}], lr=0.05, gamma=1.0)
    m(torch.randn(4, 3, dtype=torch.float64)).square().mean().backward()
    got = opt.prior_value()
    want = 0.5 * 0.1 * m.weight.detach().square().sum() + 0.5 * 0.3 * m.bias.detach().square(
    ).sum()
    assert got.dtype == torch.float64 and float(got) == pytest.approx(float(want), rel=1e-13)
    m.bias.grad = None                      # only tensors with a gradient count
    assert float(opt.prior_value()) == pytest.approx(
        float(0.5 * 0.1 * m.weight.detach().square().sum()), rel=1e-13)


# --- optim/ddpnopt.py ------------------------------------------------------------------------
def _ddp_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _ddp_step(model: nn.Module, opt: DDPNOpt) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_ddpnopt_takes_lr_zero_at_construction(base):
    """Mutant: the group check at construction back at ``check_positive`` for optimizers that
    cannot pause a group (DDPNOpt), while the step takes lr = 0 (session 15). A frozen layer
    (``{"params": layer0, "lr": 0}``) or a warm-up whose first lr is 0 given as the lr itself
    was refused at construction. Now it constructs, the lr-0 layer stays exactly, the other
    layer moves."""
    model = _ddp_model()
    opt = DDPNOpt(model, base=base, lr=0.05, terminal_hessian="identity",
                  params=[{"params": list(model[0].parameters()), "lr": 0.0},
                          {"params": list(model[2].parameters())}])
    first = [p.detach().clone() for p in model[0].parameters()]
    last = [p.detach().clone() for p in model[2].parameters()]
    _ddp_step(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(first, model[0].parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(last, model[2].parameters(), strict=True))
    whole = DDPNOpt(_ddp_model(), base=base, lr=0.0, terminal_hessian="identity")
    assert whole.param_groups[0]["lr"] == 0.0


def test_ddpnopt_step_time_check_names_the_group_that_holds_the_value():
    """Mutant: the step-time hyperparameter check reported every bad value as param group 0's.
    A value set after construction on group 1 must be named as group 1's."""
    model = _ddp_model()
    opt = DDPNOpt(model, lr=0.05, params=[{"params": list(model[0].parameters())},
                                          {"params": list(model[2].parameters())}])
    _ddp_step(model, opt)
    opt.param_groups[1]["vxx_reg"] = float("nan")
    with pytest.raises(ValueError, match=r"vxx_reg must be finite.*param group 1.*DDPNOpt step 2"):
        _ddp_step(model, opt)


# --- optim/fused.py: kick_drift --------------------------------------------------------------
@pytest.mark.parametrize("which", ["gradient", "momentum"])
def test_kick_drift_refuses_a_gradient_or_momentum_of_another_size(which):
    """Mutant: the gradient's element count left unchecked. The kernel does no bounds checks:
    a shorter gradient was read past its end (garbage or a crash), a longer one half used. The
    call is refused, naming the tensor and its shape, before anything is written."""
    from dynopt.optim.fused import kick_drift

    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(5, generator=g), torch.randn(3, generator=g)]
    gs = [torch.randn(5, generator=g), torch.randn(3, generator=g)]
    ms = [torch.randn(5, generator=g), torch.randn(3, generator=g)]
    ({"gradient": gs, "momentum": ms}[which])[1] = torch.randn(2, generator=g)
    before = [t.clone() for t in ps + ms]
    with pytest.raises(ValueError, match=rf"the {which} of parameter 1 \(torch.float32, shape "
                                         r"\(2,\)"):
        kick_drift(ps, gs, ms, 0.9, 0.1, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, ps + ms, strict=True))


@pytest.mark.parametrize("path", [{"fused": True}, {"foreach": True}])
def test_a_heavy_ball_step_is_seen_by_autograd_in_the_momenta_it_writes(path):
    """Mutant: the fused kernel's raw-memory writes marked in the parameters' version counters
    only. A graph that saved a momentum buffer (a diagnostic, a meta-learning term) then
    back-propagated silently through the overwritten values; as after the foreach path's
    in-place ops, autograd must refuse it."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6))
    opt = HeavyBall([p], lr=0.1, gamma=0.5, **path)
    p.grad = torch.randn(6)
    opt.step()
    w = torch.ones(6, requires_grad=True)
    y = (w * opt.state[p]["momentum"]).sum()     # saves the momentum for dy/dw
    p.grad = torch.randn(6)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()



# --- events/run.py: the LM noise memory across a SwitchDynamics -----------------------------
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_an_lm_run_switched_to_the_same_lm_dynamics_is_the_uninterrupted_run(backend):
    """Mutants: every chain switched into an LM mode given a fresh memory (``need = fired``),
    and the state's memory flag ignored for the values (``x != 0``). A chain that already
    holds LM's memory keeps it: an anneal by SwitchDynamics from LM to LM must not restart the
    noise (a fresh R_prev breaks LM's increments, and on torch it also consumes the run's
    generator). Discrete noise in one dimension makes a genuine memory all zeros at most
    steps, so the flag, not the values, must decide. Switching to the same system and
    integrator changes nothing, bit for bit."""
    import numpy as np

    import dynopt
    from dynopt import events as E
    from dynopt import potentials as P
    from dynopt import systems as S

    def system():
        return S.OverdampedLangevin(P.DoubleWell(dim=1), temperature=0.3)

    q0 = np.array([[0.3], [-0.2], [0.5], [0.1], [-0.4], [0.0]])
    kw = dict(h=0.02, n_steps=12, seed=5, backend=backend, noise="discrete")
    plain = dynopt.integrate(system(), "lm", q0, **kw)
    assert (plain.extras["noise_prev"][:, 5] == 0.0).any()   # the zero-memory case occurs
    switched = dynopt.integrate(system(), "lm", q0, events=[
        E.AtStep(5, then=E.SwitchDynamics(system(), "lm"))], **kw)
    np.testing.assert_array_equal(switched.q, plain.q)
    assert switched.final_state.noise_memory is True
    # resumed where some chains' (genuine) memory is all zeros, then switched at once
    a = 5
    head = dynopt.integrate(system(), "lm", q0, **{**kw, "n_steps": a})
    zero = np.all(np.asarray(head.final_state.x) == 0.0, axis=1)
    assert zero.any() and not zero.all()
    calls = []

    def at_the_first_observation(q, p):
        calls.append(1)
        return np.full(q.shape[0], len(calls) == 1)

    tail = dynopt.integrate(system(), "lm", None, h=0.02, n_steps=12 - a, state=head.final_state,
                            events=[E.StateCondition(at_the_first_observation,
                                                     then=E.SwitchDynamics(system(), "lm"))])
    np.testing.assert_array_equal(tail.q, plain.q[:, a:])


# --- surfing/surf.py: a snapshot's shapes ----------------------------------------------------
def test_a_snapshot_tensor_with_the_right_size_but_another_shape_is_named():
    """Mutant: the snapshot check comparing element counts instead of shapes. A bias saved as a
    column, (6, 1) for the model's (6,), has the right count but broadcasts inside
    functional_call: on one code the output is (6, 6), so with 6 chains surf ran silently on
    an outer sum instead of the network. The key and both shapes are named."""
    import copy

    from dynopt.surfing import surf

    torch.manual_seed(0)
    snaps = [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6)).double()
             for _ in range(2)]
    sds = [copy.deepcopy(s.state_dict()) for s in snaps]
    sds[1]["2.bias"] = sds[1]["2.bias"].reshape(6, 1)
    with pytest.raises(ValueError, match=r"snapshot 1 does not fit model: '2.bias' has shape "
                                         r"\(6, 1\) but the model's has \(6,\)"):
        surf(sds, torch.linspace(-1.0, 1.0, 6, dtype=torch.float64),
             model=copy.deepcopy(snaps[0]), x0=torch.zeros(6, 3, dtype=torch.float64),
             steps_per_snapshot=2, lr=0.1)


# --- backends/torch/energy_ops.py: BBI's per-chain scalars in float64 -----------------------
def test_the_torch_bbi_shell_reads_a_float32_norm_beyond_float32_s_range():
    """Mutant: |p|² summed in p's dtype (``p.square().sum()``, no ``.double()``). Near BBI's
    floor the momenta reach |p| > 1.8e19, where a float32 |p|² is inf: the shell then read an
    infinite |p|² (a projection to 0). It is summed in float64, finite and exact here."""
    from dynopt.backends.torch.energy_ops import BBIConstants, bbi_shell_
    from dynopt.program import BBI_EXTRAS

    p = torch.full((2, 4), 3e19, dtype=torch.float32)
    want = p.double().square().sum(-1, keepdim=True)
    grad = torch.ones(2, 4, dtype=torch.float32)
    st = {k: torch.zeros(2, 1, dtype=torch.float32) for k in BBI_EXTRAS}
    st["started"].fill_(1.0)
    c = BBIConstants(v0=0.0, delta_energy=1.0, t0=float("inf"), n_bounces=0.0, t1=float("inf"),
                     eps1=0.0, eps2=1e-12, project=True, cube=False)
    dec = bbi_shell_(p, grad, torch.ones(2, 1, dtype=torch.float64), st, c,
                     torch.Generator().manual_seed(0))
    assert dec.ps2.dtype == torch.float64 and torch.equal(dec.ps2, want)
