"""The numba kernel's block width (:func:`dynopt.backends.numba.kernel.block_lanes`): its rule,
and that results do not depend on it (every op acts on each chain alone; noise is a function of
(seed, chain, step))."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import dynopt
from dynopt import potentials, systems
from dynopt.backends.numba.kernel import MAX_LANES, block_lanes


@pytest.mark.parametrize("threads", [1, 2, 3, 16])
@pytest.mark.parametrize("n", [1, 7, 8, 50, 100, 513, 1000, 10_000, 100_000])
def test_block_width_rule(n, threads):
    lanes = block_lanes(n, threads)
    blocks = -(-n // lanes)
    assert lanes % 8 == 0 and 8 <= lanes <= MAX_LANES
    assert blocks * lanes >= n and (blocks - 1) * lanes < n  # no empty block
    if n >= 32 * threads:  # enough chains: (nearly) every thread gets a block
        assert blocks >= 0.75 * threads
    if n >= MAX_LANES * threads:
        assert lanes > MAX_LANES // 2  # large ensembles use wide blocks


SYSTEMS = {
    "Langevin BAOAB": (systems.Langevin(potentials.DoubleWell(dim=2), gamma=1.0,
                                        temperature=0.25), "BAOAB"),
    "AdL (extended ops)": (systems.AdaptiveLangevin(potentials.DoubleWell(dim=2),
                                                    temperature=0.25, sigma_a=1.0), None),
}


@pytest.mark.parametrize("name", list(SYSTEMS))
def test_results_do_not_depend_on_the_block_width(name):
    """100 chains: blocks of 104 lanes on one thread, 56 on two; the trajectories agree bit for
    bit. Catches a lane loop that reads past its block, or noise indexed by block."""
    system, scheme = SYSTEMS[name]
    assert block_lanes(100, 1) != block_lanes(100, 2)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            r = dynopt.integrate(system, scheme, [1.0, -0.5], h=0.05, n_steps=40, n_chains=100,
                                 seed=11, record_every=20, backend="numba")
            runs.append((np.asarray(r.q), np.asarray(r.p)))
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert np.isfinite(runs[0][0]).all() and np.std(runs[0][0][:, -1]) > 0.1  # it moved
