"""The intermediate representation between a (system, integrator) pair and a backend.

A :class:`Program` is the list of primitive updates that one step of a scheme performs. A system
*lowers* each letter of a splitting string to an :class:`Op` (it decides the constants: the
physics); a backend *executes* ops (it decides the loops: the discretization machinery). Every
backend implements each op code exactly once, so a new splitting needs no new kernel code, and the
numba kernel, the torch batched runner and the torch optimizers run the same program.

Op semantics (state: coordinates q, momenta p, per-chain extras x; unit vectors R ~ N(0, I) drawn
fresh; M the diagonal mass; N the number of coordinates a thermostat acts on, supplied by the
backend: ``dim`` in ``integrate()``, the number of elements in the thermostat's scope in an
optimizer):

========== ========================================================= ======================
code        update                                                    constants (``f``, ``i``)
========== ========================================================= ======================
DRIFT       q ← q + t M⁻¹ p                                           f = (t,)
KICK        p ← p − t ∇U(q)                                           f = (t,)
OU          p ← c p + d M^½ R                                         f = (c, d)
GRAD_STEP   q ← q − s ∇U(q)                                           f = (s,)
WIENER      q ← q + s R                                               f = (s,)
LM_NOISE    q ← q + s (R_prev + R);  R_prev ← R                       f = (s,), i = (x_off,)
FRICTION    p ← exp(−ξ t) p;  η ← η + ξ t  (η if i[1] >= 0)           f = (t,), i = (ξ, η)
ADD_NOISE   p ← p + s M^½ R                                           f = (s,)
THERMOSTAT  ξ ← ξ + a (pᵀM⁻¹p − b N) / N^e                         f = (a, b, e), i = (ξ,)
OU_XI       p ← e^{−ξt} p + σ √((1 − e^{−2ξt})/(2ξ)) M^½ R            f = (t, σ), i = (ξ,)
NHC         Nosé–Hoover-chain propagation for time t (see below)      see :func:`nhc_op`
========== ========================================================= ======================

``NHC`` follows Martyna–Tuckerman–Klein with ``n_sub`` substeps and Suzuki–Yoshida weights: per
substep of length τₛ, thermostat velocities v_M … v_1 are updated for τₛ/2 (each as a scaling
e^{−τₛ v_{j+1}/4}, a kick τₛ G_j/2, and the same scaling), momenta are scaled by e^{−τₛ v₁},
η_j ← η_j + τₛ v_j, and the velocities are updated again for τₛ/2 from v₁ up to v_M. Here
G₁ = (pᵀM⁻¹p − N kT)/Q₁, G_j = (Q_{j−1} v_{j−1}² − kT)/Q_j, Q₁ = N·q₁, Q_j = q_j.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Op", "OpCode", "Program", "nhc_op"]


class OpCode(enum.IntEnum):
    """Primitive update codes; the table in the module docstring gives their semantics."""

    DRIFT = 1
    KICK = 2
    OU = 3
    GRAD_STEP = 4
    WIENER = 5
    LM_NOISE = 6
    FRICTION = 7
    ADD_NOISE = 8
    THERMOSTAT = 9
    OU_XI = 10
    NHC = 11


#: Op codes that read the gradient of the potential at the current q.
GRADIENT_OPS = frozenset({OpCode.KICK, OpCode.GRAD_STEP})
#: Op codes that change q (and so invalidate a cached gradient).
POSITION_OPS = frozenset({OpCode.DRIFT, OpCode.GRAD_STEP, OpCode.WIENER, OpCode.LM_NOISE})
#: Op codes that draw one normal per coordinate.
NOISE_OPS = frozenset({OpCode.OU, OpCode.WIENER, OpCode.LM_NOISE, OpCode.ADD_NOISE, OpCode.OU_XI})


@dataclass(frozen=True)
class Op:
    """One primitive update with its constants.

    Attributes:
        code: What the update does (see :class:`OpCode`).
        f: Float constants.
        i: Integer constants (offsets into the per-chain extras vector).
        letter: The splitting letter this op came from (for reprs and error messages).
    """

    code: OpCode
    f: tuple[float, ...] = ()
    i: tuple[int, ...] = ()
    letter: str = ""

    @property
    def draws_noise(self) -> bool:
        return self.code in NOISE_OPS


@dataclass(frozen=True)
class Program:
    """The ops of one step, in order.

    Attributes:
        ops: The primitive updates.
        n_extras: Length of the per-chain extras vector the ops address.
    """

    ops: tuple[Op, ...]
    n_extras: int = 0

    @property
    def n_noise_ops(self) -> int:
        """Number of noise vectors (one normal per coordinate each) drawn per step."""
        return sum(op.draws_noise for op in self.ops)

    def pack(self) -> tuple[np.ndarray, ...]:
        """Flatten into arrays for the numba kernel.

        Returns:
            ``(codes, fstart, fpar, istart, ipar)``: op codes, start offsets into the flat float
            and int parameter arrays (each of length ``len(ops) + 1``), and the flat arrays.
        """
        codes = np.array([int(op.code) for op in self.ops], dtype=np.int64)
        fstart = np.zeros(len(self.ops) + 1, dtype=np.int64)
        istart = np.zeros(len(self.ops) + 1, dtype=np.int64)
        for k, op in enumerate(self.ops):
            fstart[k + 1] = fstart[k] + len(op.f)
            istart[k + 1] = istart[k] + len(op.i)
        fpar = np.array([v for op in self.ops for v in op.f] or [0.0], dtype=np.float64)
        ipar = np.array([v for op in self.ops for v in op.i] or [0], dtype=np.int64)
        return codes, fstart, fpar, istart, ipar


def nhc_op(
    t: float,
    kT: float,
    q1_per_dof: float,
    q_rest: Sequence[float],
    weights: Sequence[float],
    n_sub: int,
    xi_offset: int,
    eta_offset: int,
    letter: str = "T",
) -> Op:
    """Build an ``NHC`` op.

    Layout: ``f = (t, kT, q1_per_dof, Q_2..Q_M, w_1..w_nsy)``,
    ``i = (M, n_sub, n_sy, xi_offset, eta_offset)``; chain velocities v_j live at
    ``x[xi_offset + j]`` and positions η_j at ``x[eta_offset + j]``.
    """
    m = 1 + len(q_rest)
    f = (t, kT, q1_per_dof, *map(float, q_rest), *map(float, weights))
    i = (m, n_sub, len(weights), xi_offset, eta_offset)
    return Op(OpCode.NHC, f, i, letter)
