"""N in the thermostat update is the number of elements of the tensor (langevin-thermostats.md
§2.3, §6 and §7.3: "Always N = number of elements in that scope").

Two public AdL codes get N wrong for tensors that are not 1-D: choderalab/pinot's E step uses
``p.shape[0]``, and the authors' old notebook used N = 100 for both the (100, 2) weight and the
100-element bias; the authors' optimizer reshapes assuming 2-D weights, so convolutions break.
Every other thermostat test in the suite steps 1-D tensors, where ``shape[0]`` is ``numel``, so
these bugs would pass it. Here a weight of shape (4, 3, 2, 2) (numel 48, shape[0] 4) and one of
shape (10, 2) (numel 20, shape[0] 10) are checked on every path.
"""

from __future__ import annotations

import math

import pytest
import torch

from dynopt.optim import AdaptiveLangevin, NoseHoover

PATHS = {"fused": {}, "foreach": {"foreach": True}, "single": {"foreach": False, "fused": False}}


@pytest.mark.parametrize("path", PATHS)
def test_adaptive_langevin_first_step_uses_numel(path):
    """The first step B½ A½ C½ D½ E D½ C½ A½ with σ_A = 0 from p = 0, by hand:
    ξ₁ = ξ₀ + hε(Σp² − Nτ) with N = 48 (pinot's shape[0] would give 4)."""
    h, tau, eps, xi0 = 0.1, 0.2, 0.5, 0.3
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    grad = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    w = w0.clone()
    opt = AdaptiveLangevin([w], lr=h, temperature=tau, sigma_a=0.0, eps=eps, xi0=xi0, seed=0,
                           **PATHS[path])
    w.grad = grad.clone()
    opt.step()
    p = -0.5 * h * grad
    theta = w0 + 0.5 * h * p
    p = p * math.exp(-0.5 * h * xi0)
    xi1 = xi0 + h * eps * (float((p * p).sum()) - w0.numel() * tau)
    p = p * math.exp(-0.5 * h * xi1)
    theta = theta + 0.5 * h * p
    xi = opt.state[w]["extras"]
    assert xi.numel() == 1  # one scalar ξ per tensor
    assert float(xi[0]) == pytest.approx(xi1, rel=1e-13)
    torch.testing.assert_close(w, theta, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(opt.state[w]["momentum_buffer"], p, rtol=1e-13, atol=1e-15)


MAKERS = {
    "adaptive-langevin": lambda ps, kw: AdaptiveLangevin(
        ps, lr=0.1, temperature=0.2, sigma_a=0.3, eps=0.5, seed=3, **kw),
    "nose-hoover": lambda ps, kw: NoseHoover(ps, lr=0.1, temperature=0.2, tau=0.5, seed=3, **kw),
    "nose-hoover-chain": lambda ps, kw: NoseHoover(ps, lr=0.1, temperature=0.2, tau=0.5,
                                                   chain_length=3, seed=3, **kw),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", MAKERS)
def test_thermostat_is_blind_to_the_tensor_shape(name, path):
    """30 steps on tensors of shapes (4, 3, 2, 2) and (10, 2) equal, bit for bit, the same
    steps on their flattened copies (noise included): the per-tensor ξ sees numel elements, not
    shape[0], and no reshape assumes a 2-D weight."""
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    b0 = torch.randn(10, 2, generator=g, dtype=torch.float64)
    w, b = w0.clone(), b0.clone()
    wf, bf = w0.flatten().clone(), b0.flatten().clone()
    make = MAKERS[name]
    shaped, flat = make([w, b], PATHS[path]), make([wf, bf], PATHS[path])
    for _ in range(30):
        for t in (w, b, wf, bf):
            t.grad = t**3 - t
        shaped.step()
        flat.step()
    assert torch.equal(w.flatten(), wf) and torch.equal(b.flatten(), bf)
    for s, f in ((w, wf), (b, bf)):
        assert torch.equal(shaped.state[s]["extras"], flat.state[f]["extras"])
    # and the run moved the thermostats away from their start (the comparison is not vacuous)
    assert float(shaped.state[w]["extras"][0]) != float(shaped.state[b]["extras"][0])
