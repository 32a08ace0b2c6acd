"""A non-finite potential energy at a finite state stops integrate(), as a non-finite state does.

A potential that is +inf (or NaN) outside its domain while its gradient stays finite there (a
hard wall, a log barrier clipped in the gradient) let a chain walk out of the domain: q, p and
the extras stayed finite, so integrate() recorded U = inf and returned, and every statistic of
the energy was inf or NaN. U is evaluated at the record steps only (it costs a potential
evaluation per chain), so that is where it is checked: the run now stops with a
DivergenceError naming the first such record step and its first chain, on both backends (and
with events= or observables=), as the optimizers refuse a non-finite loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.errors import DivergenceError


def _nU(q):
    return 0.5 * q[0] * q[0] if q[0] < 1.0 else math.inf


def _ngU(q, out):
    out[0] = q[0]


def _U(q):
    v = 0.5 * q[..., 0] ** 2
    if isinstance(q, torch.Tensor):
        return torch.where(q[..., 0] < 1.0, v, torch.full_like(v, math.inf))
    return np.where(q[..., 0] < 1.0, v, np.inf)


def _gU(q):
    return q.clone() if isinstance(q, torch.Tensor) else np.array(q, copy=True)


#: U = q²/2 for q < 1, +inf beyond; its gradient q everywhere (finite outside the domain too).
WALL = P.Custom(1, value=_U, grad=_gU, numba_value=_nU, numba_grad=_ngU, name="wall")
#: The same gradient with U finite everywhere: the same dynamics, never refused.
INSIDE = P.Custom(1, value=lambda q: 0.5 * q[..., 0] ** 2, grad=_gU,
                  numba_value=lambda q: 0.5 * q[0] * q[0], numba_grad=_ngU, name="inside")
P0 = [[0.5], [3.0], [0.8], [3.0]]  # chains 1 and 3 leave the domain first, at the same step
KW = dict(h=0.1, n_steps=60, n_chains=4, p0=P0, seed=0, progress=False)


def _first_exit(record_every: int) -> int:
    """The first record step at which some chain has q >= 1 (from the unrefused run)."""
    traj = dynopt.integrate(S.Hamiltonian(INSIDE), "leapfrog", [0.0], backend="numba",
                            record_every=record_every, **KW)
    out = np.flatnonzero((traj.q[:, :, 0] >= 1.0).any(axis=0))
    assert out.size and (traj.q[1, :, 0] == traj.q[3, :, 0]).all()
    return int(out[0]) * record_every


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("record_every", [1, 3])
def test_a_chain_that_leaves_the_domain_stops_the_run(backend, record_every):
    step = _first_exit(record_every)
    assert step > 0
    with pytest.raises(DivergenceError, match=f"diverged at step {step} .*the potential "
                                              "energy of chain 1 was not finite") as info:
        dynopt.integrate(S.Hamiltonian(WALL), "leapfrog", [0.0], backend=backend,
                         record_every=record_every, **KW)
    err = info.value
    assert (err.step, err.chain) == (step, 1)
    kept = err.trajectory
    assert kept.n_draws == step // record_every  # the records before the refused one
    assert np.isfinite(kept.extras["potential"]).all() and np.isfinite(kept.energy).all()


def test_the_first_chain_of_the_step_is_named_across_numba_blocks():
    """Chains in different numba blocks leave at the same step: the lowest is named."""
    p0 = np.full((40, 1), 0.5)
    p0[[17, 33]] = 3.0
    kw = dict(KW, n_chains=40, p0=p0)
    for backend in ("numba", "torch"):
        with pytest.raises(DivergenceError) as info:
            dynopt.integrate(S.Hamiltonian(WALL), "leapfrog", [0.0], backend=backend, **kw)
        assert info.value.chain == 17, backend


def test_events_and_observables_runs_check_the_recorded_potential_too():
    step = _first_exit(1)
    from dynopt.events import AtStep

    for backend in ("numba", "torch"):
        with pytest.raises(DivergenceError, match="potential energy of chain 1") as info:
            dynopt.integrate(S.Hamiltonian(WALL), "leapfrog", [0.0], backend=backend,
                             events=[AtStep(10_000)], **KW)
        assert info.value.step == step
    with pytest.raises(DivergenceError, match="potential energy of chain 1") as info:
        dynopt.integrate(S.Hamiltonian(WALL), "leapfrog", [0.0], backend="torch",
                         observables=[lambda s: s.q[:, 0]], **KW)
    assert info.value.step == step


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_a_start_outside_the_domain_is_recorded_and_stops_at_the_first_record(backend):
    """q0 is not refused for its U (a design choice: finite q0 is valid input, and record 0
    holds U(q0) as given), but the run stops at its first record step, naming the chain."""
    q0 = [[0.0], [0.5], [1.5], [2.0]]
    with pytest.raises(DivergenceError, match="diverged at step 2 .*potential energy of "
                                              "chain 2") as info:
        dynopt.integrate(S.Hamiltonian(WALL), "leapfrog", q0, p0=np.zeros((4, 1)), h=0.1,
                         n_steps=5, record_every=2, backend=backend)
    np.testing.assert_array_equal(info.value.trajectory.extras["potential"][:, 0],
                                  [0.0, 0.125, np.inf, np.inf])
