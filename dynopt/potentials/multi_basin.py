"""The BBI paper's two-basin potential (the measure / ergodicity test)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_finite_array, check_nonnegative, check_positive, check_real
from .base import AbstractPotential, Array, namespace


class MultiBasin(AbstractPotential):
    r"""Two Gaussian wells of different curvature, tied by a weak quartic confinement.

    .. math:: U(x) = -w_1 e^{-a_1|x-c_1|^2} - w_2 e^{-a_2|x-c_2|^2}
              + k\,|x-c_1|^2\,|x-c_2|^2 + u_0 .

    With the defaults (the BBI paper's §4.3 function, De Luca, Gatti & Silverstein, ICML 2022):
    a₁ = 0.4, a₂ = 0.8, w₁ = 1, w₂ = 1 − 2.75·10⁻⁶ (equalises the two minima to ~10⁻⁸),
    k = 0.001, u₀ = 1, c₁ = (−2, −2), c₂ = (2, 2). Both minima have U ≈ 0; their Hessians are
    isotropic with eigenvalues λ₁ = 2a₁w₁ + 2k|c₁−c₂|² = 0.864 and λ₂ = 1.664 (neglecting the
    other well's 10⁻⁶ tail), so the microcanonical (Liouville) prediction for the ratio of
    visits is n₁/n₂ = √(det H₂ / det H₁) = λ₂/λ₁ = 1.926 in 2-D.

    | symbol | code |
    |---|---|
    | a₁, a₂ | ``a1``, ``a2`` |
    | w₁, w₂ | ``w1``, ``w2`` |
    | k | ``coupling`` |
    | u₀ | ``offset`` |
    | c₁, c₂ | ``c1``, ``c2`` |

    Args:
        dim: Number of coordinates (the paper: 2).
        c1, c2: Well centres (length ``dim``; default ∓2 in every coordinate).
        a1, a2: Well widths (> 0).
        w1, w2: Well depths (> 0).
        coupling: k ≥ 0.
        offset: u₀.
    """

    numba_kind = 7
    name = "multi-basin"

    def __init__(self, dim: int = 2, *, c1: Any = None, c2: Any = None, a1: float = 0.4,
                 a2: float = 0.8, w1: float = 1.0, w2: float = 1.0 - 2.75e-6,
                 coupling: float = 0.001, offset: float = 1.0) -> None:
        super().__init__(dim)
        self.c1 = self._centre("c1", c1, -2.0)
        self.c2 = self._centre("c2", c2, 2.0)
        self.a1 = check_positive("a1", a1)
        self.a2 = check_positive("a2", a2)
        self.w1 = check_positive("w1", w1)
        self.w2 = check_positive("w2", w2)
        self.coupling = check_nonnegative("coupling", coupling)
        self.offset = check_real("offset", offset)

    def _centre(self, name: str, value: Any, default: float) -> np.ndarray:
        if value is None:
            c = np.full(self.dim, default)
        else:
            c = as_finite_array(name, value, ndim=1)
            if c.shape[0] != self.dim:
                raise ValueError(f"{name} has {c.shape[0]} entries but dim={self.dim}")
        c.flags.writeable = False  # its device copies are cached (assign a new array)
        return c

    def _parts(self, q: Array) -> tuple[Array, Array, Array, Array, Array, Array]:
        xp = namespace(q)
        c1, c2 = self.c1, self.c2
        if xp.__name__ == "torch":
            from ..backends.torch.ops import host_constant

            c1 = host_constant(self, "c1", c1, c1.copy, q)
            c2 = host_constant(self, "c2", c2, c2.copy, q)
        d1, d2 = q - c1, q - c2
        r1, r2 = (d1 * d1).sum(-1), (d2 * d2).sum(-1)
        return d1, d2, r1, r2, xp.exp(-self.a1 * r1), xp.exp(-self.a2 * r2)

    def value(self, q: Array) -> Array:
        _, _, r1, r2, e1, e2 = self._parts(q)
        return -self.w1 * e1 - self.w2 * e2 + self.coupling * r1 * r2 + self.offset

    def grad(self, q: Array) -> Array:
        d1, d2, r1, r2, e1, e2 = self._parts(q)
        g1 = (2.0 * self.a1 * self.w1 * e1 + 2.0 * self.coupling * r2)[..., None]
        g2 = (2.0 * self.a2 * self.w2 * e2 + 2.0 * self.coupling * r1)[..., None]
        return g1 * d1 + g2 * d2

    def basin_curvatures(self) -> tuple[float, float]:
        """(λ₁, λ₂): the isotropic Hessian eigenvalue at c₁ and at c₂ (other well neglected)."""
        sep2 = float(((self.c1 - self.c2) ** 2).sum())
        return (2.0 * self.a1 * self.w1 + 2.0 * self.coupling * sep2,
                2.0 * self.a2 * self.w2 + 2.0 * self.coupling * sep2)

    def numba_params(self) -> np.ndarray:
        return np.concatenate([[self.a1, self.a2, self.w1, self.w2, self.coupling, self.offset],
                               self.c1, self.c2])

    def __repr__(self) -> str:
        default = MultiBasin(self.dim)
        parts = [f"dim={self.dim}"]
        for name in ("c1", "c2", "a1", "a2", "w1", "w2", "coupling", "offset"):
            value = getattr(self, name)
            if not np.array_equal(value, getattr(default, name)):
                parts.append(f"{name}={value.tolist() if isinstance(value, np.ndarray) else value}")
        return f"MultiBasin({', '.join(parts)})"
