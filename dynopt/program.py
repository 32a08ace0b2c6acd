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
LIN_FRIC    p ← (1 − t γ) p,  γ = x[k] (explicit-Euler friction)      f = (t,), i = (k,)
SC_KICK     p ← p − t x[k] ∇U(q)   (rate x[k] set by a shell op)      f = (t,), i = (k,)
SC_DRIFT    q ← q + t x[k] M⁻¹p    (rate x[k] set by a shell op)      f = (t,), i = (k,)
BBI_SHELL   Born–Infeld energy shell and bounces (see below)          see :func:`bbi_shell_op`
ECD_SHELL   ECDSep energy shell (see below)                           see :func:`ecd_shell_op`
ECD_DRIFT   q ← q + x[k] · 2t p / (s + |p|²)                          f = (t, s), i = (k,)
ROTATE      p ← |p| u/|u|, u = p/|p| + ν R  (if x[k] ≠ 0, |p| > 0)      f = (ν,), i = (k,)
========== ========================================================= ======================

``NHC`` follows Martyna–Tuckerman–Klein with ``n_sub`` substeps and Suzuki–Yoshida weights: per
substep of length τₛ, thermostat velocities v_M … v_1 are updated for τₛ/2 (each as a scaling
e^{−τₛ v_{j+1}/4}, a kick τₛ G_j/2, and the same scaling), momenta are scaled by e^{−τₛ v₁},
η_j ← η_j + τₛ v_j, and the velocities are updated again for τₛ/2 from v₁ up to v_M. Here
G₁ = (pᵀM⁻¹p − N kT)/Q₁, G_j = (Q_{j−1} v_{j−1}² − kT)/Q_j, Q₁ = N·q₁, Q_j = q_j.

Energy-conserving descent (De Luca, Gatti & Silverstein, BBI arXiv 2201.11137 and ECDSep arXiv
2306.00352) is projection-based: a *shell* op reads U(q) at the start of the step, puts p back on
the energy shell, decides bounces and writes per-chain rates that the following ``SC_KICK`` /
``SC_DRIFT`` / ``ECD_DRIFT`` / ``ROTATE`` ops read (a rate of 0 makes them no-ops: a bounce step
or a frozen chain). Both shells act only on the momenta and the extras, never on q.

``BBI_SHELL`` (extras from offset o: E₀, V, kick rate, drift rate, started, c₀, c₁, n_fixed,
V_min, n_bounces; f = (v₀, δE, T₀, N_b, T₁, ε₁, ε₂, project, cube)): V = U(q) − v₀; if V ≤ ε₂
the rates are set to 0 and nothing else happens. On the first active step E₀ = V + δE and, if
p = 0, p = −∇U/|∇U| · √(E₀²/V − V). If c₀ = T₀ and n_fixed < N_b (a fixed bounce) or c₁ = T₁ (a
progress bounce), p gets a random direction with the same norm (uniform in the cube
[−½, ½)^d then normalised if ``cube``, else Gaussian; drawn from the run's generator), the rates
are 0, c₁ ← 0, and for a fixed bounce n_fixed += 1 and c₀ ← 0 while n_fixed < N_b (else
c₀ + 1). Otherwise, with ``project``, p ← r p with r = √(V((E₀/V)² − 1)/|p|²) (r = 1 if the
mismatch is below ε₁, the target is negative or p = 0), kick rate ½(V/E₀ + E₀/V), drift rate
V/E₀, c₀ += 1, c₁ += 1, and c₁ ← 0, V_min ← V on a new minimum.

``ECD_SHELL`` (extras from offset o: E, F − F₀, kick rate, moving, started; f = (F₀, η, s, δE,
ε₁, ε₂, project)): V = (U − F₀)^η; inactive (rates 0) unless U > F₀ and V > ε₂. On the first
active step E = V (s + δE) and, if p = 0, p = −∇U · √(δE/|∇U|²). With ``project``,
p ← c p, c = √((E/V − s)/|p|²) (c = 1 if the mismatch is below ε₁, the target is negative or
p = 0); kick rate η/(U − F₀), moving = 1.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NHC_STIFF", "Op", "OpCode", "Program", "bbi_shell_op", "ecd_shell_op", "nhc_op"]


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
    LIN_FRIC = 12
    SC_KICK = 13
    SC_DRIFT = 14
    BBI_SHELL = 15
    ECD_SHELL = 16
    ECD_DRIFT = 17
    ROTATE = 18


#: Op codes that read the gradient of the potential at the current q.
GRADIENT_OPS = frozenset({OpCode.KICK, OpCode.GRAD_STEP, OpCode.SC_KICK, OpCode.BBI_SHELL,
                          OpCode.ECD_SHELL})
#: Op codes that change q (and so invalidate a cached gradient).
POSITION_OPS = frozenset({OpCode.DRIFT, OpCode.GRAD_STEP, OpCode.WIENER, OpCode.LM_NOISE,
                          OpCode.SC_DRIFT, OpCode.ECD_DRIFT})
#: Op codes that draw one normal per coordinate.
NOISE_OPS = frozenset({OpCode.OU, OpCode.WIENER, OpCode.LM_NOISE, OpCode.ADD_NOISE, OpCode.OU_XI,
                       OpCode.ROTATE})


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


#: Stiffness bound of the NHC op: a backward (negative-weight) Suzuki–Yoshida substep with
#: |ts·v_j| above it makes the backends redo that thermostat with forward substeps (see
#: :func:`dynopt.backends.torch.ops.nhc_`).
NHC_STIFF = 1.0


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


#: Order of the Born–Infeld extras addressed by ``BBI_SHELL`` (from its offset).
BBI_EXTRAS = ("E0", "V", "kick_rate", "drift_rate", "started", "counter0", "counter",
              "fixed_bounces", "min_V", "bounces")
#: Order of the ECDSep extras addressed by ``ECD_SHELL`` (from its offset).
ECD_EXTRAS = ("E", "F", "kick_rate", "moving", "started")


def bbi_shell_op(v0: float, delta_energy: float, t0: float, n_bounces: float, t1: float,
                 eps1: float, eps2: float, project: bool, cube: bool, offset: int,
                 letter: str = "S") -> Op:
    """Build a ``BBI_SHELL`` op (``T0``/``T1`` may be ``inf``: never)."""
    f = (v0, delta_energy, t0, n_bounces, t1, eps1, eps2, float(project), float(cube))
    return Op(OpCode.BBI_SHELL, tuple(map(float, f)), (offset,), letter)


def ecd_shell_op(f0: float, eta: float, s: float, delta_energy: float, eps1: float, eps2: float,
                 project: bool, offset: int, letter: str = "S") -> Op:
    """Build an ``ECD_SHELL`` op."""
    f = (f0, eta, s, delta_energy, eps1, eps2, float(project))
    return Op(OpCode.ECD_SHELL, tuple(map(float, f)), (offset,), letter)
