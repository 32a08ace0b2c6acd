"""differentiable=True: autograd through two optimizer steps (thermostats included), checked by
torch.autograd.gradcheck; optimizers whose step cannot be differentiated refuse it clearly."""

from __future__ import annotations

import pytest
import torch

from dynopt.optim import (
    BBI,
    LOL,
    AdaptiveLangevin,
    AdLaLa,
    DDPNOpt,
    ECDSep,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
    Partitioned,
)

T = 0.01  # temperature > 0: the noise is fixed by the seed, so the map stays differentiable

CASES = {
    "langevin": lambda ps, **kw: Langevin(ps, lr=0.1, gamma=0.5, temperature=T, **kw),
    "langevin-prior": lambda ps, **kw: Langevin(ps, lr=0.1, temperature=T, weight_decay=0.1,
                                                localization=0.5, nbeta=2.0, **kw),
    "sgld": lambda ps, **kw: OverdampedLangevin(ps, lr=0.05, temperature=T, **kw),
    "lm": lambda ps, **kw: OverdampedLangevin(ps, lr=0.05, temperature=T, scheme="lm", **kw),
    "adl": lambda ps, **kw: AdaptiveLangevin(ps, lr=0.1, temperature=T, **kw),
    "badodab": lambda ps, **kw: AdaptiveLangevin(ps, lr=0.1, temperature=T, scheme="BAEOEAB",
                                                 **kw),
    "adl-model": lambda ps, **kw: AdaptiveLangevin(ps, lr=0.1, temperature=T, scope="model",
                                                   **kw),
    "nh": lambda ps, **kw: NoseHoover(ps, lr=0.1, temperature=T, **kw),
    "nhc": lambda ps, **kw: NoseHoover(ps, lr=0.1, temperature=T, chain_length=3, **kw),
    "nhc-group": lambda ps, **kw: NoseHoover(ps, lr=0.1, temperature=T, chain_length=2,
                                             scope="group", **kw),
    "adlala": lambda ps, **kw: AdLaLa([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1, **kw),
    "lol": lambda ps, **kw: LOL([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1, **kw),
    "partitioned": lambda ps, **kw: Partitioned(
        [{"params": ps[:1], "dynamics": "nose-hoover", "chain_length": 2},
         {"params": ps[1:], "dynamics": "langevin"}], lr=0.1, temperature=T, **kw),
    "heavyball": lambda ps, **kw: HeavyBall(ps, lr=0.1, gamma=0.5, weight_decay=0.1, **kw),
}


def _loss(pa, pb, a):
    """A coupled loss whose autograd graph saves only tensors derived from the parameters:
    as in torch's differentiable optimizers, the step updates the parameters in place, so a
    graph that saved a parameter itself could not be back-propagated after the step."""
    return ((pa - a) ** 2).sum() + 0.3 * (pa.sum() * pb.sum()) ** 2 + ((pb - 0.5) ** 2).sum()


def _two_steps(make, wa, wb, a, **kw):
    pa, pb = wa.clone(), wb.clone()
    opt = make([pa, pb], seed=3, **kw)
    for _ in range(2):
        loss = _loss(pa, pb, a)
        pa.grad, pb.grad = torch.autograd.grad(loss, [pa, pb], create_graph=True)
        if isinstance(opt, HeavyBall):
            opt.step(loss=loss)
        else:
            opt.step()
    return pa, pb


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_through_two_steps(name):
    g = torch.Generator().manual_seed(0)
    wa = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    wb = torch.randn(2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)

    def f(wa, wb, a):
        return _two_steps(CASES[name], wa, wb, a, differentiable=True)

    assert torch.autograd.gradcheck(f, (wa, wb, a))
    # the values are those of the single-tensor path without autograd
    with torch.no_grad():
        ref = _plain(CASES[name], wa.detach(), wb.detach(), a.detach())
    got = f(wa, wb, a)
    assert all(torch.equal(x.detach(), y) for x, y in zip(got, ref, strict=True))


def _plain(make, wa, wb, a):
    pa, pb = wa.clone(), wb.clone()
    opt = make([pa, pb], seed=3, foreach=False)
    for _ in range(2):
        with torch.enable_grad():
            pa_, pb_ = pa.detach().requires_grad_(), pb.detach().requires_grad_()
            loss = _loss(pa_, pb_, a)
            ga, gb = torch.autograd.grad(loss, [pa_, pb_])
        pa.grad, pb.grad = ga, gb
        opt.step(loss=loss.detach()) if isinstance(opt, HeavyBall) else opt.step()
    return pa, pb


@pytest.mark.parametrize("factory", [
    lambda ps: BBI(ps, differentiable=True), lambda ps: ECDSep(ps, differentiable=True),
    lambda ps: HeavyBall(ps, differentiable=True, fused=True),
])
def test_refused_where_the_step_is_not_differentiable(factory):
    with pytest.raises(ValueError, match="differentiable"):
        factory([torch.zeros(2, requires_grad=True)])


def test_ddpnopt_refuses_differentiable():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="differentiable"):
        DDPNOpt(model, params=[{"params": list(model.parameters()), "differentiable": True}])
