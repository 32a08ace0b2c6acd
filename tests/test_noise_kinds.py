"""The three noise kinds: ``"gaussian"`` (float32 transform), ``"gaussian-f64"``, ``"discrete"``.

Both Gaussian kinds turn the same Philox words into normals; they differ only in the arithmetic
of the Box–Muller transform (float32, widened in float64 kernels, against float64). Checked
here through the public entry points: the numba ensemble kernel and the fused optimizer path
give values within 3e-5 of each other on these draws (the documented bound, 2.5e-4, is reached
only where |z| < 3e-4, tests/test_philox.py) (and not equal: the kind reaches the
kernel), float32 tensors have the one transform, a run resumes bit for bit under either kind,
and a misspelt kind is refused by name. The statistical batteries of both transforms are in
tests/test_noise_quality.py and tests/test_philox.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.backends.numba.philox import NOISE_KINDS
from dynopt.optim import Langevin
from dynopt.stepping import NOISES

#: |z_gaussian − z_gaussian-f64| for the same words (dynopt.backends.numba.philox).
TRANSFORM_GAP = 3e-5


def test_every_noise_name_has_a_kernel_code():
    assert set(NOISES) == set(NOISE_KINDS)
    assert len(set(NOISE_KINDS.values())) == len(NOISE_KINDS)


def _first_o_step(noise: str) -> np.ndarray:
    """p after one OBA step of 64 chains from p = 0 on a flat potential: s √m ξ."""
    system = S.Langevin(P.Harmonic(1e-12, dim=3), gamma=2.0, temperature=0.5,
                        mass=np.array([0.25, 1.0, 4.0]))
    traj = dynopt.integrate(system, "OBA", np.zeros(3), p0=np.zeros(3), n_chains=64, h=0.1,
                            n_steps=1, seed=5, noise=noise, backend="numba")
    return traj.p[:, -1]


def test_ensemble_gaussian_kinds_draw_the_same_words():
    c = math.exp(-2.0 * 0.1)
    s = math.sqrt((1 - c * c) * 0.5) * np.sqrt([0.25, 1.0, 4.0])
    fast, exact = _first_o_step("gaussian"), _first_o_step("gaussian-f64")
    gap = np.abs(fast - exact)
    assert (gap <= s * TRANSFORM_GAP).all()
    assert gap.max() > 0  # the kind reaches the kernel
    z = exact / s
    assert 0.5 < z.std() < 1.5  # normals, not the discrete variable or zeros
    assert not np.allclose(_first_o_step("discrete"), exact, atol=1e-3)


@pytest.mark.parametrize("noise", ["gaussian", "gaussian-f64"])
def test_ensemble_resumes_bit_for_bit_under_each_kind(noise):
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.3)
    kw = {"h": 0.05, "n_chains": 20, "seed": 9, "noise": noise, "backend": "numba"}
    whole = dynopt.integrate(system, "BAOAB", [0.5, -0.5], n_steps=30, **kw)
    first = dynopt.integrate(system, "BAOAB", [0.5, -0.5], n_steps=17, **kw)
    rest = dynopt.integrate(system, "BAOAB", None, n_steps=13, state=first.final_state, **kw)
    np.testing.assert_array_equal(rest.q[:, -1], whole.q[:, -1])
    np.testing.assert_array_equal(rest.p[:, -1], whole.p[:, -1])


def _fused_momentum(noise: str, dtype: torch.dtype) -> torch.Tensor:
    """The momentum after one fused Langevin step from p = 0 with a zero gradient: s·ξ."""
    t = torch.zeros(5000, dtype=dtype)
    t.grad = torch.zeros_like(t)
    opt = Langevin([t], lr=0.1, gamma=1.0, temperature=0.5, seed=3, noise=noise, fused=True)
    opt.step()
    return opt.state[t]["momentum_buffer"].double()


def test_fused_float64_gaussian_kinds_draw_the_same_words():
    fast = _fused_momentum("gaussian", torch.float64)
    exact = _fused_momentum("gaussian-f64", torch.float64)
    s = float(exact.std())
    assert 0.5 * s < float(fast.std()) < 2 * s
    gap = float((fast - exact).abs().max())
    assert 0 < gap <= 2 * s * TRANSFORM_GAP  # s ≈ the amplitude: |ξ| gap ≤ 3e-5


def test_fused_float32_has_one_transform():
    np.testing.assert_array_equal(_fused_momentum("gaussian", torch.float32),
                                  _fused_momentum("gaussian-f64", torch.float32))


@pytest.mark.parametrize("where", ["integrate", "optimizer"])
def test_unknown_noise_kind_is_refused_by_name(where):
    with pytest.raises(ValueError, match=r"noise.*'gaussian64'"):
        if where == "integrate":
            dynopt.integrate(S.Langevin(P.Harmonic(), gamma=1.0, temperature=1.0), "BAOAB",
                             [0.0], h=0.1, n_steps=1, noise="gaussian64")
        else:
            Langevin([torch.zeros(3, requires_grad=True)], lr=0.1, noise="gaussian64")


def test_torch_backend_draws_the_same_normals_for_both_gaussian_kinds():
    """torch.randn has one precision per dtype: "gaussian-f64" is "gaussian" there (documented),
    and is accepted rather than refused."""
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.3)
    kw = {"h": 0.05, "n_chains": 4, "n_steps": 5, "seed": 2, "backend": "torch"}
    a = dynopt.integrate(system, "BAOAB", [0.5, -0.5], noise="gaussian", **kw)
    b = dynopt.integrate(system, "BAOAB", [0.5, -0.5], noise="gaussian-f64", **kw)
    np.testing.assert_array_equal(a.q, b.q)
    assert b.final_state.noise == "gaussian-f64"


@pytest.mark.parametrize("path", ["single", "foreach"])
def test_torch_optimizer_paths_draw_the_same_normals_for_both_gaussian_kinds(path):
    """The single and foreach paths draw torch.randn for both Gaussian kinds (a kind the torch
    paths did not know once fell through to the discrete variable: values in {0, ±√3})."""
    kw = {"foreach": False, "fused": False} if path == "single" else {"foreach": True}

    def momentum(noise: str) -> torch.Tensor:
        t = torch.zeros(4000, dtype=torch.float64)
        t.grad = torch.zeros_like(t)
        opt = Langevin([t], lr=0.1, gamma=1.0, temperature=0.5, seed=3, noise=noise, **kw)
        opt.step()
        return opt.state[t]["momentum_buffer"]

    exact = momentum("gaussian-f64")
    np.testing.assert_array_equal(momentum("gaussian"), exact)
    assert exact.unique().numel() > 100  # continuous normals, not the three-point variable


def _two_step_run(noise: str, resume_noise: str | None = None) -> torch.Tensor:
    """θ after two fused Langevin steps on a quadratic loss, the second one after saving and
    loading the optimizer into a fresh one (constructed with ``resume_noise``)."""
    t = torch.linspace(-1.0, 1.0, 3000, dtype=torch.float64)
    opt = Langevin([t], lr=0.1, gamma=1.0, temperature=0.5, seed=3, noise=noise)
    t.grad = t.clone()
    opt.step()
    if resume_noise is not None:
        sd = opt.state_dict()
        opt = Langevin([t], lr=0.1, gamma=1.0, temperature=0.5,
                       noise=resume_noise)
        opt.load_state_dict(sd)
    t.grad = t.clone()
    opt.step()
    return t.clone()


@pytest.mark.parametrize("noise", ["gaussian", "gaussian-f64", "discrete"])
def test_checkpoint_resumes_bit_for_bit_under_its_noise_kind(noise):
    np.testing.assert_array_equal(_two_step_run(noise, noise), _two_step_run(noise))


def test_checkpoint_of_another_noise_kind_is_refused_and_nothing_changes():
    t = torch.zeros(10, dtype=torch.float64)
    t.grad = torch.ones_like(t)
    saved = Langevin([t], lr=0.1, temperature=0.5, seed=3, noise="discrete")
    saved.step()
    sd = saved.state_dict()
    assert sd["dynopt"]["noise"] == "discrete"
    fresh = Langevin([t], lr=0.1, temperature=0.5, seed=4, noise="gaussian")
    before = fresh.state_dict()
    with pytest.raises(ValueError, match=r"noise='discrete'.*noise='gaussian'"):
        fresh.load_state_dict(sd)
    assert fresh.seed == 4 and fresh.state_dict()["state"] == before["state"]
    del sd["dynopt"]["noise"]  # a checkpoint of a version that did not record the kind
    fresh.load_state_dict(sd)
    assert fresh.seed == 3
