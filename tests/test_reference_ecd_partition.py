"""BBI and ECDSep do not see how the parameters are split into tensors (energy-conserving-and-
port-hamiltonian.md §1.5, §1.7, §1.8, §6.3: "use global norms").

The public codes normalise per tensor in several places: gbdl/BBI's initial momentum, the
ECD_q1 tangent projection (``p·g`` per tensor). dynopt's maps use global norms everywhere: the
start along −∇ℓ, the projection onto the energy shell, BBI's bounce (a flat draw rescaled to the
global |Π|) and ECDSep's rotation p ← |p|·u/|u|, u = p/|p| + νz. The suite checks the
group split (two groups = one group) and the first step's global norm; a per-tensor norm in the
bounce or the rotation keeps every invariant (|Π| is restored) and passes both. Here a model of
two tensors, (3,) and (2, 2), in two groups is run against one flat tensor of 7 elements through
bounces and rotations: the same run to rounding on every path.
"""

from __future__ import annotations

import pytest
import torch

from dynopt.optim import BBI, ECDSep

PATHS = {
    "bbi": {"fused": {}, "foreach": {"foreach": True}, "single": {"foreach": False,
                                                                   "fused": False}},
    "ecdsep": {"foreach": {"foreach": True}, "single": {"foreach": False}},
}
MAKERS = {
    "bbi": lambda ps, kw: BBI(ps, lr=0.05, delta_energy=0.5, t0=5, n_bounces=3, t1=8, seed=2,
                              **kw),
    "ecdsep": lambda ps, kw: ECDSep(ps, lr=0.05, eta=1.5, nu=0.3, delta_energy=0.4, seed=2,
                                    **kw),
}
CASES = [(name, path) for name in MAKERS for path in PATHS[name]]


def _loss(tensors: list[torch.Tensor], a: torch.Tensor) -> torch.Tensor:
    x = torch.cat([t.flatten() for t in tensors])
    return 0.5 * (a @ x).pow(2).sum() + 0.1 * (x**4).sum() + 0.05


@pytest.mark.parametrize(("name", "path"), CASES)
def test_the_map_is_blind_to_the_split_into_tensors(name, path):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 7, generator=g, dtype=torch.float64)
    x0 = torch.randn(7, generator=g, dtype=torch.float64)
    u = x0[:3].clone().requires_grad_()
    v = x0[3:].clone().view(2, 2).requires_grad_()
    flat = x0.clone().requires_grad_()
    kw = PATHS[name][path]
    split = MAKERS[name]([{"params": [u]}, {"params": [v]}], kw)
    whole = MAKERS[name]([flat], kw)
    for _ in range(30):
        for opt, ts in ((split, [u, v]), (whole, [flat])):
            opt.zero_grad()
            loss = _loss(ts, a)
            loss.backward()
            opt.step(loss=loss)
    torch.testing.assert_close(torch.cat([u.flatten(), v.flatten()]), flat, rtol=1e-12,
                               atol=1e-14)
    mom = "momentum"
    torch.testing.assert_close(
        torch.cat([split.state[u][mom].flatten(), split.state[v][mom].flatten()]),
        whole.state[flat][mom], rtol=1e-12, atol=1e-14)
    if name == "bbi":  # the run went through fixed and progress bounces
        assert float(split.global_state["bbi"]["bounces"]) >= 3
    assert not torch.equal(flat, x0)
