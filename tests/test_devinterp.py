"""dynopt's SGLD against the real devinterp (its local SGLD, the LLC sampler).

docs/optimizers.md says that devinterp's step Δθ = −(ε/2)(nβ∇L + λθ + γ_loc(θ − θ₀)) + N(0, ε)
is ``OverdampedLangevin(lr=ε/2, temperature=1.0, nbeta=nβ, weight_decay=λ,
localization=γ_loc)`` (Euler–Maruyama). Given the same normals (devinterp draws
``torch.normal`` in float32 from a generator it is handed; dynopt's torch paths draw one
``torch.randn(numel)`` per step from its own generator, whose state devinterp's generator is
given), the two trajectories are the same: bit for bit against devinterp's ``SGLD`` class, to
float32 rounding against ``SGMCMC.sgld`` (it sums the prior terms in another order). devinterp is
installed by ``.ci/setup.sh`` without its dependencies (``devinterp.optim`` needs only torch).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from dynopt.optim import OverdampedLangevin

dv = pytest.importorskip("devinterp.optim")

EPS, NBETA, LOC, WD = 1e-3, 30.0, 5.0, 0.1


def _devinterp(kind: str, w: torch.Tensor) -> torch.optim.Optimizer:
    kw = dict(lr=EPS, nbeta=NBETA, localization=LOC, weight_decay=WD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return dv.SGLD([w], **kw) if kind == "SGLD" else dv.SGMCMC.sgld([w], **kw)


@pytest.mark.parametrize("path", [{"foreach": False}, {"foreach": True}], ids=["single", "foreach"])
@pytest.mark.parametrize("kind", ["SGLD", "SGMCMC.sgld"])
def test_sgld_is_devinterps_local_sgld(kind, path):
    """Catches: a wrong lr or noise mapping (ε/2 vs ε, √ε), a prior term of the wrong sign or
    size, a tether to the wrong θ₀, and an extra draw (an Euler–Maruyama step that also
    fills a noise memory it never reads shifts every later normal)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, generator=g)
    w0 = torch.randn(6, generator=g)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    theirs = _devinterp(kind, a)
    ours = OverdampedLangevin([b], lr=EPS / 2, temperature=1.0, nbeta=NBETA, localization=LOC,
                              weight_decay=WD, seed=123, **path)
    normals = torch.Generator()
    normals.set_state(ours.generator("cpu").get_state())
    for _ in range(50):
        for w, opt in ((a, theirs), (b, ours)):
            opt.zero_grad()
            ((x @ w - y) ** 2).mean().backward()
        theirs.step(noise_generator=normals)
        ours.step()
    assert (b.detach() - w0).abs().max() > 0.5  # it moved: the noise alone is √ε·√50 ≈ 0.2
    if kind == "SGLD":
        assert torch.equal(a.detach(), b.detach())
    else:
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=0)
    assert set(ours.state[b]) == {"step", "anchor"}  # SGLD keeps no noise memory
