"""Carried bounds (dynopt.optim.bound): a bounded step's output bounds replace the next step's
max-scan of θ and p, only while nothing else has touched them; and dynopt's numba writes count
in torch's version counters, as torch.optim's in-place ops do."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dynopt.errors import DivergenceError
from dynopt.optim import HeavyBall, Langevin, OverdampedLangevin
from dynopt.optim import bound as bound_module
from dynopt.optim.finite import FAST_ABOVE

CASES = [(Langevin, {}), (Langevin, {"noise": "discrete"}), (OverdampedLangevin, {}),
         (OverdampedLangevin, {"scheme": "lm"}), (HeavyBall, {}), (HeavyBall, {"foreach": True}),
         (Langevin, {"mass": 4.0, "scheme": "ABOBA"})]
IDS = ["langevin", "langevin-discrete", "overdamped", "overdamped-lm", "heavyball",
       "heavyball-foreach", "langevin-mass4-aboba"]


@pytest.fixture
def scans(monkeypatch):
    """Counts the state max-scans of dynopt.optim.bound (the gradient scan is elsewhere)."""
    calls = []
    real = bound_module.abs_max

    def counting(ts):
        calls.append(len(ts))
        return real(ts)

    monkeypatch.setattr(bound_module, "abs_max", counting)
    return calls


def _make(cls, kw, n=200, seed=0):
    torch.manual_seed(seed)
    p = torch.nn.Parameter(torch.randn(n))
    opt = cls([p], lr=0.01, seed=5, **kw)
    return p, opt


def _grad(p):
    p.grad = p.detach() * 2.0 + 0.1


def _state_tensors(opt, p):
    return [p] + [v for k, v in opt.state[p].items()
                  if isinstance(v, torch.Tensor) and v.numel() == p.numel()]


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_a_steady_run_scans_the_state_once(cls, kw, scans):
    """Step 1 creates the state (snapshot path), step 2 scans θ and p, steps 3..10 use the
    carried bound: 1 scan in 10 steps, every step but the first proven. Catches: the carry never
    committed, or consumed by a mismatching fingerprint (e.g. versions read before the update)."""
    p, opt = _make(cls, kw)
    for _ in range(10):
        _grad(p)
        opt.step()
    assert opt.result_checks == {"bound": 9, "snapshot": 1}
    assert len(scans) == 1


@pytest.mark.parametrize("cls,kw", CASES, ids=IDS)
def test_carried_bounds_bound_what_the_step_wrote(cls, kw):
    """For 300 steps with large gradients, the carried Bθ, Bp (and Br) are ≥ the true maxima of
    the stored θ, p (and noise memory), and not absurdly loose for p (within 100× of it). Catches:
    a dropped term in an op's bound map, bounds for the wrong buffer, no rounding margin."""
    p, opt = _make(cls, kw)
    for k in range(300):
        p.grad = torch.randn(p.numel(), generator=torch.Generator().manual_seed(k)) * 30.0
        opt.step()
        carry = opt.__dict__.get(bound_module._CARRY)
        if k == 0:
            continue
        assert carry is not None and carry[0] == opt.global_state["step"]
        (_, (b_theta, b_p, b_r)), = carry[1].values()
        st = opt.state[p]
        assert float(p.detach().abs().max()) <= b_theta
        mom = st.get("momentum", st.get("momentum_buffer"))
        if mom is not None:
            top = float(mom.abs().max())
            assert top <= b_p < 100.0 * top + 1.0
        if "noise_prev" in st:
            assert float(st["noise_prev"].abs().max()) <= b_r


def test_the_rounding_margin_covers_the_stored_floats():
    """_rounded_up grows a bound by (1 + 4 eps) per op plus the smallest normal per op: a
    float32 bound of 1.0 after 3 ops is ≥ 1 + 12·2⁻²³ (no margin, or eps/2 only, fails)."""
    (b,) = bound_module._rounded_up((1.0,), 3, torch.float32)
    assert b >= 1.0 + 12 * 2.0 ** -23
    assert b < 1.0 + 13 * 2.0 ** -23
    (z,) = bound_module._rounded_up((0.0,), 2, torch.float64)
    assert z == 2 * torch.finfo(torch.float64).tiny


def _in_place(p, opt):
    with torch.no_grad():
        p.mul_(1.0)


def _momentum_in_place(p, opt):
    st = opt.state[p]
    buf = st.get("momentum", st.get("momentum_buffer"))
    (buf if buf is not None else p.detach()).add_(0.0)


def _reload(p, opt):
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))


def _replace_data(p, opt):
    p.data = p.data.clone()


def _other_optimizer(p, opt):
    other = Langevin([p], lr=0.01, seed=9)
    other.step()


def _skipped_step(p, opt):
    p.grad = torch.full_like(p, math.nan)
    opt.nonfinite = "skip"
    opt.step()
    opt.nonfinite = "raise"


TOUCHES = [_in_place, _momentum_in_place, _reload, _replace_data, _other_optimizer,
           _skipped_step]


@pytest.mark.parametrize("touch", TOUCHES, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("cls,kw", [CASES[0], CASES[4]], ids=["langevin", "heavyball"])
def test_anything_that_touches_the_state_forces_a_scan(cls, kw, touch, scans):
    """After each kind of outside write (an in-place op on θ or on the momentum, a reload, a
    new ``.data``, another dynopt optimizer's numba step on the same θ, a skipped step) the next
    step scans again. Catches: a fingerprint without the version, address, identity or step."""
    p, opt = _make(cls, kw)
    for _ in range(3):
        _grad(p)
        opt.step()
    assert len(scans) == 1
    _grad(p)
    touch(p, opt)
    _grad(p)
    opt.step()
    assert len(scans) == 2


@pytest.mark.parametrize("cls,kw", [CASES[0], CASES[2], CASES[4]],
                         ids=["langevin", "overdamped", "heavyball"])
@pytest.mark.parametrize("n", [100, FAST_ABOVE + 3])
def test_a_huge_value_written_between_steps_is_still_caught(cls, kw, n):
    """θ set to the largest float32 by an in-place op after several carried steps, then a step
    that pushes it up (∇L = −1e37): the carried bound (about |θ| ≤ 3, with which the proof would
    pass) must not be used, so the step is refused and undone exactly. Catches: a carry trusted
    without checking the version counter."""
    p, opt = _make(cls, kw, n=n)
    for _ in range(4):
        _grad(p)
        opt.step()
    with torch.no_grad():
        p[n // 3] = torch.finfo(torch.float32).max
    before = [t.detach().clone() for t in _state_tensors(opt, p)]
    p.grad = torch.full_like(p, -1e37)
    with pytest.raises(DivergenceError, match="step 5 would write a non-finite"):
        opt.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, _state_tensors(opt, p),
                                                             strict=True))


def test_a_nan_written_through_data_stays_in_its_element():
    """The documented hole: ``p.data`` writes escape the version counter, so the carried bound
    is used; the NaN at θ[7] stays at θ[7] (every other θ and every p finite), and the next
    gradient check reports it. Catches: an op that mixes elements (which would make the hole
    spread), and documents the behaviour."""
    p, opt = _make(Langevin, {})
    for _ in range(3):
        _grad(p)
        opt.step()
    p.data[7] = math.nan
    _grad(p)
    p.grad[7] = 0.0
    opt.step()
    assert opt.result_checks["bound"] == 3
    bad = ~torch.isfinite(p.detach())
    assert bad.nonzero().flatten().tolist() == [7]
    assert torch.isfinite(opt.state[p]["momentum_buffer"]).all()
    _grad(p)  # the gradient at θ[7] = NaN is NaN
    with pytest.raises(DivergenceError, match="non-finite gradient at step 5"):
        opt.step()


@pytest.mark.parametrize("cls,kw", [CASES[0], CASES[4], (Langevin, {"fused": False})],
                         ids=["langevin-fused", "heavyball-fused", "langevin-foreach"])
def test_a_step_counts_as_an_in_place_op_for_autograd(cls, kw):
    """As with torch.optim.SGD, backward through a graph that saved θ fails after a step changed
    θ in place, on the numba paths too. Catches: raw-memory writes not counted in the version."""
    p, opt = _make(cls, kw)
    _grad(p)
    opt.step()
    loss = (p * p).sum()
    version = p._version
    _grad(p)
    opt.step()
    assert p._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    q = torch.nn.Parameter(torch.randn(10))
    sgd = torch.optim.SGD([q], lr=0.1)
    loss = (q * q).sum()
    q.grad = torch.ones(10)
    sgd.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("cls,kw", [CASES[0], CASES[4]], ids=["langevin", "heavyball"])
def test_a_carried_bound_too_loose_to_prove_the_step_is_refreshed_by_a_scan(cls, kw, scans):
    """Carried bounds inflated to 1e38, past the proof's limit (float32 max / 4 ≈ 8.5e37), as a
    very long run could make them: the step does not
    fall back to the snapshot but scans once, proves the step from the true maxima and carries
    tight bounds again. Catches: a loose carry sending every later step to the snapshot."""
    p, opt = _make(cls, kw)
    for _ in range(3):
        _grad(p)
        opt.step()
    step, plans = opt.__dict__[bound_module._CARRY]
    (plan, (fingerprint, _)), = plans.items()
    opt.__dict__[bound_module._CARRY] = (step, {plan: (fingerprint, (1e38, 1e38, 1e38))})
    n_scans = len(scans)
    _grad(p)
    opt.step()
    assert opt.result_checks == {"bound": 3, "snapshot": 1}
    assert len(scans) == n_scans + 1
    (_, (_, bounds)), = opt.__dict__[bound_module._CARRY][1].items()
    assert max(bounds) < 100.0
