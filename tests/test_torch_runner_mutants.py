"""Three mutants of the torch backend that survived the suite (session 16), each pinned by the
property it breaks: per-chain LM memories (runner.start_extras), BBI's float64 V near the floor
v₀ (runner, BBI_SHELL) and the float32 rounding of BBI's momentum factors, where the torch
backend and the optimizer's reference path must agree bit for bit (energy_ops.bbi_shell_,
optim.bbi)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import stepping, systems
from dynopt.backends.torch import energy_ops
from dynopt.integrators import EulerMaruyama, LeimkuhlerMatthews
from dynopt.optim import BBI
from dynopt.optim.bbi import scalar_like
from dynopt.program import BBI_EXTRAS
from dynopt.systems import BornInfeld

F32 = torch.float32


# --- 1. an Euler–Maruyama state continued by LM: each chain's memory from its own stream ------

def _em_then_lm(backend: str, **kw):  # type: ignore[no-untyped-def]
    """3 Euler–Maruyama steps, then 5 LM steps from that state (the memory LM's start draws is
    filled in: stepping.fill_memory), by integrate(state=) and by stepping.run."""
    s = systems.OverdampedLangevin(P.DoubleWell(dim=2), temperature=0.25)
    st = stepping.init(s, EulerMaruyama(), [0.5, 0.1], backend=backend, seed=3, **kw)
    st = stepping.run(s, EulerMaruyama(), st, n_steps=3, h=0.05)
    tr = dynopt.integrate(s, LeimkuhlerMatthews(), None, state=st, n_steps=5, h=0.05,
                          record_every=1)
    new = stepping.run(s, LeimkuhlerMatthews(), st, n_steps=5, h=0.05)
    x = new.x.numpy() if isinstance(new.x, torch.Tensor) else new.x
    return tr.q, np.asarray(x)


def test_an_em_state_continued_by_lm_draws_each_chains_memory_from_its_own_stream():
    """With ``chain_ids`` a chain's path does not depend on who runs beside it, across the
    switch from Euler–Maruyama (no memory) to Leimkuhler–Matthews (memory drawn at the
    switch): chain k alone equals chain k of a run over [2, 5, 7], bit for bit. Catches: every
    chain's memory drawn from chain 0's generator (the mutant of runner.start_extras that
    survived: each chain of the wide run then differs from itself alone)."""
    ids = [2, 5, 7]
    wide_q, wide_x = _em_then_lm("torch", chain_ids=ids)
    assert not np.array_equal(wide_x[0], wide_x[1])
    for k, c in enumerate(ids):
        q, x = _em_then_lm("torch", chain_ids=[c])
        np.testing.assert_array_equal(q[0], wide_q[k])
        np.testing.assert_array_equal(x[0], wide_x[k])


def test_numba_keys_the_lm_memory_by_the_local_chain_index():
    """numba has no ``chain_ids``: its start memory comes from Philox keyed by (seed, local
    chain), so chain 0 alone is chain 0 of three chains (and chain 1 differs)."""
    one_q, one_x = _em_then_lm("numba", n_chains=1)
    three_q, three_x = _em_then_lm("numba", n_chains=3)
    np.testing.assert_array_equal(one_q[0], three_q[0])
    np.testing.assert_array_equal(one_x[0], three_x[0])
    assert not np.array_equal(three_q[0], three_q[1])


# --- 2. BBI near its floor v₀ in float32: V = U − v₀ in float64 --------------------------------

V0 = 0.1  # not a float32 number: fl32(0.1) − 0.1 = 1.49e-9
FLOOR = P.Custom(2, value=lambda q: V0 + 0.5 * (q * q).sum(-1), grad=lambda q: q.clone())
FLOOR_KW = {"v0": V0, "delta_energy": 0.1, "t0": 10**9, "n_bounces": 0, "t1": 10**9}


def test_float32_bbi_reads_v_as_the_float64_difference_near_the_floor():
    """U = v₀ + |q|²/2 with v₀ = 0.1, float32, 400 steps down to U(q) = fl32(v₀): the shell's V
    at step n is float64(U₃₂(qₙ₋₁)) − v₀ (what the optimizer computes from the float32 loss),
    rounded once when stored, so the chain keeps moving where U₃₂ = fl32(v₀) (V = 1.49e-9 > ε₂).
    Catches: V computed in float32 (U₃₂ − fl32(v₀) = 0 there: the chain freezes, 6e-4 from the
    optimizer's trajectory)."""
    tr = dynopt.integrate(BornInfeld(FLOOR, **FLOOR_KW), None, [1.0, -0.5], h=0.05,
                          n_steps=400, seed=3, backend="torch", dtype=F32, record_every=1)
    u = tr.extras["potential"][0]
    want = (u[:-1] - V0).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(tr.extras["V"][0, 1:], want)
    assert np.float32(u.min()) == np.float32(V0)  # the run reaches the float32 floor
    assert tr.extras["V"][0, -1] > 0 and not np.array_equal(tr.q[0, -1], tr.q[0, -2])
    th = torch.tensor([1.0, -0.5], dtype=F32)
    opt = BBI([th], lr=0.05, seed=3, foreach=False, fused=False, **FLOOR_KW)
    path = []
    for _ in range(400):
        th.grad = FLOOR.grad(th)
        opt.step(loss=FLOOR.value(th))
        path.append(th.double().clone())
    # not bit for bit: integrate's float32 state stores E₀ in float32 (the optimizer: float64)
    np.testing.assert_allclose(tr.q[0, 1:], torch.stack(path).numpy(), rtol=0, atol=1e-7)


# --- 3. float32 momenta: each factor rounded to float32 first, as the optimizer does -----------

# E₀ = U(θ₀) + δE = 2 exactly in float32, so integrate's float32 extras hold the optimizer's
# float64 values; then the two must agree bit for bit, projections and bounces included
ANISO = P.Custom(2, value=lambda q: 0.5 * (q * q * torch.tensor([1.0, 3.0], dtype=q.dtype)).sum(-1),
                 grad=lambda q: q * torch.tensor([1.0, 3.0], dtype=q.dtype))
ANISO_Q0 = [1.0, 0.5773502691896258]


@pytest.mark.parametrize("t0", [20, 10**9], ids=["bounces", "no-bounces"])
def test_float32_bbi_integrate_equals_the_reference_optimizer_bit_for_bit(t0):
    """300 float32 steps of integrate(backend="torch") and of BBI(foreach=False, fused=False)
    on one tensor: equal bit for bit, with 4 bounces or none. Catches: the projection factor r
    applied in float64 (p·r rounded once instead of p·fl32(r): the survived mutant; 4e-8 off
    from step 13), the bounce factor √(|p|²/|u|²) applied in float64, and the reference path
    summing a float32 |Π|² in float32 (the backend sums in float64): each was 1-2 ulp per step
    apart (1.5e-8 from step 18 without bounces)."""
    kw = {"v0": 0.0, "delta_energy": 1.0, "t0": t0, "n_bounces": 4, "t1": 40}
    tr = dynopt.integrate(BornInfeld(ANISO, **kw), None, ANISO_Q0, h=0.05, n_steps=300, seed=3,
                          backend="torch", dtype=F32, record_every=1)
    assert tr.extras["E0"][0, 1] == 2.0
    assert tr.extras["bounces"][0, -1] == (4 if t0 == 20 else 0)
    th = torch.tensor(ANISO_Q0, dtype=F32)
    opt = BBI([th], lr=0.05, seed=3, foreach=False, fused=False, **kw)
    path = []
    for _ in range(300):
        th.grad = ANISO.grad(th)
        opt.step(loss=ANISO.value(th))
        path.append(th.clone())
    np.testing.assert_array_equal(tr.q[0, 1:], torch.stack(path).double().numpy())
    np.testing.assert_array_equal(tr.final_state.p[0].numpy(),
                                  opt.state[th]["momentum"].numpy())


def test_bbi_shell_projects_float32_momenta_with_the_float32_factor():
    """One projection of 4 chains × 257 float32 momenta: p ← p·fl32(r), the optimizer's
    ``m.mul_(scalar_like(r, m))``, bit for bit (not p·r rounded once, which differs here)."""
    g = torch.Generator().manual_seed(0)
    p = torch.randn(4, 257, generator=g, dtype=F32)
    p0 = p.clone()
    st = {k: torch.zeros(4, 1, dtype=F32) for k in BBI_EXTRAS}
    st["started"].fill_(1.0)
    st["E0"].fill_(2.0)
    st["min_V"].fill_(float("inf"))
    c = energy_ops.BBIConstants(0.0, 1.0, float("inf"), 0.0, float("inf"), 1e-10, 1e-40,
                                True, True)
    v = torch.full((4, 1), 0.7, dtype=torch.float64)
    dec = energy_ops.bbi_shell_(p, torch.zeros_like(p), v, st, c, torch.Generator())
    assert not bool(dec.bounce.any()) and bool((dec.scale != 1).all())
    want = torch.stack([p0[i].clone().mul_(scalar_like(dec.scale[i], p0[i])) for i in range(4)])
    assert torch.equal(p, want)
    assert not torch.equal(want, (p0.double() * dec.scale).to(F32))  # the test can fail
