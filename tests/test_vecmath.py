"""The vectorizable exp used inside the numba kernel."""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from dynopt.backends.numba.vecmath import exp


@nb.njit(cache=True)
def _exp_many(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = exp(x[i])
    return out


def test_exp_matches_libm_to_two_ulp():
    x = np.concatenate([np.linspace(-700, 700, 200_001), np.random.default_rng(0).normal(0, 3, 10**5),
                        [0.0, -0.0, 1e-300, -1e-300, math.log(2.0), -math.log(2.0)]])
    got = _exp_many(x)
    ref = np.exp(x)
    assert np.all(np.abs(got - ref) <= 2 * np.spacing(ref))
