"""Euler–Maruyama keeps no noise memory; Leimkuhler–Matthews keeps one, also when a run switches.

The overdamped system declares an LM noise memory (the previous normal), which only the LM
scheme reads. An EM optimizer step used to allocate and fill it anyway: one parameter-sized
buffer per tensor, a full draw of normals on the first step (shifting every later normal of the
torch paths), and one more tensor in every checkpoint.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.optim import OverdampedLangevin

PATHS = {"fused": {}, "foreach": {"foreach": True}, "single": {"foreach": False}}


def _run(steps: int, scheme: str = "em", path: str = "fused", opt=None, theta=None):
    if theta is None:
        theta = torch.linspace(-1, 1, 7, dtype=torch.float64).requires_grad_()
    if opt is None:
        opt = OverdampedLangevin([theta], lr=0.01, temperature=0.5, scheme=scheme, seed=4,
                                 **PATHS[path])
    for _ in range(steps):
        opt.zero_grad()
        (theta**4).sum().backward()
        opt.step()
    return theta, opt


@pytest.mark.parametrize("path", PATHS)
def test_em_state_is_the_step_count_only(path):
    theta, opt = _run(3, path=path)
    assert set(opt.state[theta]) == {"step"}
    assert set(opt.state_dict()["state"][0]) == {"step"}
    theta, opt = _run(3, scheme="lm", path=path)
    assert set(opt.state[theta]) == {"step", "noise_prev"}


@pytest.mark.parametrize("path", ["foreach", "single"])
def test_em_first_step_draws_one_normal_per_element(path):
    """The torch paths' normals come from the optimizer's generator: after n EM steps it has
    advanced by exactly n draws of numel normals (an unread memory would add one more)."""
    _, opt = _run(3, path=path)
    ref = torch.Generator()
    ref.set_state(OverdampedLangevin([torch.zeros(1)], seed=4).generator("cpu").get_state())
    for _ in range(3):
        torch.randn(7, generator=ref, dtype=torch.float64)
    assert torch.equal(opt.generator("cpu").get_state(), ref.get_state())


@pytest.mark.parametrize("path", PATHS)
def test_switching_em_to_lm_mid_run_starts_a_fresh_memory(path):
    """A group switched from "em" to "lm" after some steps: its running tensors get a fresh
    noise memory (normals, as on a first step) instead of a refusal, and the LM increments
    then have the right size: θ moves by √(τ dt/2)·(ξ_prev + ξ) − dt ∇U per step."""
    theta, opt = _run(4, path=path)
    opt.param_groups[0]["scheme"] = "lm"
    _run(1, opt=opt, theta=theta)
    prev = opt.state[theta]["noise_prev"]
    assert prev.shape == theta.shape and prev.dtype == theta.dtype
    assert 0.1 < float(prev.std()) < 3.0 and bool(torch.isfinite(prev).all())
    before, z_prev = theta.detach().clone(), prev.clone()
    _run(1, opt=opt, theta=theta)
    z = opt.state[theta]["noise_prev"]
    moved = before - 0.01 * 4 * before**3 + np.sqrt(0.5 * 0.01 / 2) * (z_prev + z)
    torch.testing.assert_close(theta.detach(), moved, rtol=1e-12, atol=1e-14)


def test_an_older_em_checkpoint_with_a_memory_loads_and_drops_it():
    """Checkpoints of earlier versions hold an EM group's (unused) noise memory: it loads, the
    run continues exactly as a checkpoint without it, and the memory is not kept."""
    theta, opt = _run(3)
    sd = opt.state_dict()
    old = {**sd, "state": {0: {**sd["state"][0], "noise_prev": torch.randn(7, dtype=torch.float64)}}}
    runs = []
    for ckpt in (sd, old):
        t2 = theta.detach().clone().requires_grad_()
        o2 = OverdampedLangevin([t2], lr=0.01, temperature=0.5, seed=4)
        o2.load_state_dict(ckpt)
        assert set(o2.state[t2]) == {"step"}
        runs.append(_run(2, opt=o2, theta=t2)[0].detach())
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_integrate_em_draws_no_memory_and_equals_the_optimizer(backend):
    """integrate() with EM leaves the overdamped system's noise memory at zero (drawn for LM
    only), as the optimizer keeps none; the torch backend's EM run then equals the optimizer's
    (tests/test_local_sampling.py::test_system_options_equal_the_optimizer)."""
    system = S.OverdampedLangevin(P.DoubleWell(dim=2), temperature=0.5)
    traj = dynopt.integrate(system, "em", [0.3, -0.2], h=0.01, n_steps=20, seed=5,
                            backend=backend)
    assert np.all(np.asarray(traj.final_state.x) == 0.0)
    lm = dynopt.integrate(system, "lm", [0.3, -0.2], h=0.01, n_steps=20, seed=5,
                          backend=backend)
    assert np.all(np.asarray(lm.final_state.x) != 0.0)


@pytest.mark.parametrize("path", PATHS)
def test_lm_em_lm_resumed_during_em_equals_the_uninterrupted_run(path):
    """A group switched LM → EM drops its memory (EM keeps none), so switching back to LM starts
    a fresh one both in the uninterrupted run and in a run resumed from a checkpoint taken
    during the EM phase. Catches: an old memory kept through EM and reused by the second LM
    phase, while the checkpoint (which drops it) draws a fresh one."""
    theta, opt = _run(3, scheme="lm", path=path)
    opt.param_groups[0]["scheme"] = "em"
    _run(1, opt=opt, theta=theta)
    assert set(opt.state[theta]) == {"step"}
    sd, saved = copy.deepcopy(opt.state_dict()), theta.detach().clone()
    opt.param_groups[0]["scheme"] = "lm"
    straight = _run(2, opt=opt, theta=theta)[0].detach().clone()
    t2 = saved.clone().requires_grad_()
    o2 = OverdampedLangevin([t2], lr=0.01, temperature=0.5, scheme="em", seed=4, **PATHS[path])
    o2.load_state_dict(sd)
    o2.param_groups[0]["scheme"] = "lm"
    assert torch.equal(_run(2, opt=o2, theta=t2)[0].detach(), straight)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_an_em_state_continued_by_lm_gets_the_memory_lm_draws(backend):
    """integrate(state=<EM final state>) with "lm": the zero memory of the EM state is replaced
    by the one LM's own start draws, so LM's first step has its full noise variance τh on a
    flat potential (4 SE, SE bounded), not τh/2 from R₀ = 0; a state that already holds a
    memory is continued as it is."""
    system = S.OverdampedLangevin(P.Harmonic(np.array([1e-6]), 1), temperature=1.0)
    n = 20_000
    em = dynopt.integrate(system, "em", np.zeros(1), h=1.0, n_steps=1, n_chains=n, seed=2,
                          backend=backend)
    q0 = np.asarray(em.final_state.q).copy()
    lm = dynopt.integrate(system, "lm", None, h=1.0, n_steps=1, state=em.final_state)
    step = np.asarray(lm.q[:, -1, 0]) - q0[:, 0]
    se = step.var() * np.sqrt(2.0 / n)
    assert se < 0.015 and abs(step.var() - 1.0) < 4 * se
    assert np.all(np.asarray(lm.final_state.x) != 0.0)
    again = dynopt.integrate(system, "lm", None, h=1.0, n_steps=1, state=lm.final_state)
    mem = np.asarray(lm.final_state.x)
    moved = np.asarray(again.q[:, -1, 0]) - np.asarray(lm.final_state.q)[:, 0]
    assert abs(np.corrcoef(moved, mem[:, 0])[0, 1] - np.sqrt(0.5)) < 0.02  # R_prev carried
