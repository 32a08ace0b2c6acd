"""Elementary functions written so that LLVM vectorizes them (no Intel SVML needed).

``exp`` reduces x = k ln 2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln 2), evaluates e^r by its
Taylor polynomial to degree 13 (truncation error < 4e-18 relative) and builds 2^k from the
exponent bits; arguments are clamped to [−700, 700], far beyond anything a thermostat step
produces. ``tests/test_vecmath.py`` checks it against ``math.exp`` to 2 ulp.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .cache import CACHE
from .intrinsics import u64_as_f64

__all__ = ["exp"]

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.0 / math.log(2.0)


@nb.njit(inline="always", cache=CACHE, error_model="numpy")
def exp(x: float) -> float:
    """e^x for |x| ≤ 700, vectorizable."""
    x = min(700.0, max(-700.0, x))
    k = math.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    p = 1.0 / 6227020800.0
    p = 1.0 / 479001600.0 + r * p
    p = 1.0 / 39916800.0 + r * p
    p = 1.0 / 3628800.0 + r * p
    p = 1.0 / 362880.0 + r * p
    p = 1.0 / 40320.0 + r * p
    p = 1.0 / 5040.0 + r * p
    p = 1.0 / 720.0 + r * p
    p = 1.0 / 120.0 + r * p
    p = 1.0 / 24.0 + r * p
    p = 1.0 / 6.0 + r * p
    p = 0.5 + r * p
    p = 1.0 + r * p
    p = 1.0 + r * p
    return p * u64_as_f64(np.uint64(np.int64(k) + 1023) << np.uint64(52))
