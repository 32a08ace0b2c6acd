"""Surfing with Adam as the inner optimizer (issue 12): one snapshot is torch's Adam on the
codes; the moments are carried across snapshots; work bookkeeping; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_surfing import generator, path, targets

from dynopt.surfing import surf


def _adam_reference(snaps, y, x0, steps, lr):
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, foreach=False)
    for g in snaps:
        for _ in range(steps):
            opt.zero_grad()
            (0.5 * ((g(x) - y) ** 2).sum()).backward()
            opt.step()
    return x.detach()


def test_one_snapshot_inner_adam_is_torch_adam_on_the_codes():
    g = generator(0)
    _, y = targets(g)
    x0 = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    res = surf([g], y, x0=x0, steps_per_snapshot=40, lr=0.05, inner="adam")
    ref = _adam_reference([g], y, x0, 40, 0.05)
    assert torch.allclose(res.x, ref, rtol=0, atol=1e-13)
    assert res.state.step == 40
    assert np.allclose(res.loss[0], 0.5 * ((g(ref) - y) ** 2).sum(1).detach().numpy(),
                       rtol=0, atol=1e-12)


def test_adam_moments_are_carried_across_snapshots():
    """Several snapshots equal ONE torch Adam run through them (state not reset), and differ
    from a fresh Adam per snapshot."""
    snaps = path(3)
    _, y = targets(snaps[-1])
    x0 = torch.zeros(4, 3, dtype=torch.float64)
    res = surf(snaps, y, x0=x0, steps_per_snapshot=15, lr=0.03, inner="adam")
    ref = _adam_reference(snaps, y, x0, 15, 0.03)
    assert torch.allclose(res.x, ref, rtol=0, atol=1e-13)
    fresh = x0
    for g in snaps:
        fresh = _adam_reference([g], y, fresh, 15, 0.03)
    assert (fresh - res.x).abs().max() > 1e-6
    # W is the sum of the potential jumps at the switching points; U is the energy (no p)
    assert np.allclose(res.dynamics_energy_change,
                       res.energy_end - res.energy_start - res.work, rtol=0, atol=0)
    assert np.allclose(res.energy_end, res.loss[-1], rtol=0, atol=1e-12)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(inner="sgd"), r"inner must be one of \['dynamics', 'adam'\], got 'sgd'"),
    (dict(inner="adam", dynamics="langevin"), "inner='adam' replaces the dynamics"),
    (dict(inner="adam", betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    (dict(inner="adam", betas=0.9), "betas must be a pair"),
])
def test_bad_inner_options_are_named(kw, match):
    g = generator(0)
    _, y = targets(g)
    with pytest.raises(ValueError, match=match):
        surf([g], y, steps_per_snapshot=2, lr=0.01, **kw)
