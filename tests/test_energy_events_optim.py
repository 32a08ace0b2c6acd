"""The 'energy' observable of BBI's and ECDSep's events is the system's H at the state the event
sees (the parameters and momenta before the step; the loss passed to it). A line-coverage run
showed that no test gave either optimizer an energy event. A ``Threshold`` that never stops
firing (``once=False``) logs the energy at every step, which the test recomputes from the
loss and the momenta it records itself:

* BBI: H = √(V (V + |Π|²)), V = ℓ − v₀ (docs/energy-conserving.md §1);
* ECDSep: H = log(s + |p|²) + η log(F − F₀), F = ℓ + ½ wd |θ|² (§2).

Catches: the wrong |p|² (after instead of before the update), a dropped v₀/F₀ or weight-decay
term, the square root or the η factor missing.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynopt.events import Threshold
from dynopt.optim import BBI, ECDSep


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 1)).double()


def _run(make, n_steps: int = 12):
    m = _model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    opt = make(m.parameters(), events=[Threshold(1e9, observable="energy", once=False)])
    seen = []
    for _ in range(n_steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y) + 0.3
        loss.backward()
        moms = [opt.state[p].get("momentum") for p in m.parameters()]
        p2 = sum(float((q.double() ** 2).sum()) for q in moms if q is not None)
        theta2 = sum(float((p.detach().double() ** 2).sum()) for p in m.parameters())
        seen.append((float(loss.detach()), p2, theta2))
        opt.step(loss=loss)
    log = opt.event_log
    assert [f.step for f in log] == list(range(n_steps))  # the state after step k, k = 0, 1, …
    assert all(f.observable == "energy" for f in log)
    return seen, [float(f.value) for f in log]


@pytest.mark.parametrize("v0", [0.0, 0.1])
def test_bbi_energy_event_reads_the_born_infeld_hamiltonian(v0):
    seen, logged = _run(lambda ps, **kw: BBI(ps, lr=0.05, v0=v0, t0=None, t1=None, **kw))
    expected = [math.sqrt((ell - v0) * (ell - v0 + p2)) for ell, p2, _ in seen]
    assert max(p2 for _, p2, _ in seen[1:]) > 1e-4  # the momentum term matters
    assert logged == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("eta", "s", "wd", "f0"), [(1.0, 1.0, 0.0, 0.0), (2.0, 0.5, 0.1, 0.2)])
def test_ecdsep_energy_event_reads_its_hamiltonian(eta, s, wd, f0):
    seen, logged = _run(lambda ps, **kw: ECDSep(ps, lr=0.05, eta=eta, s=s, F0=f0,
                                                weight_decay=wd, nu=0.0, **kw))
    expected = [math.log(s + p2) + eta * math.log(ell + 0.5 * wd * t2 - f0)
                for ell, p2, t2 in seen]
    assert max(p2 for _, p2, _ in seen[1:]) > 1e-4
    assert logged == pytest.approx(expected, rel=1e-12, abs=1e-12)
