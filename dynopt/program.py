"""The intermediate representation between a (system, integrator) pair and a backend.

A :class:`Program` is the list of primitive updates that one step of a scheme performs. A system
*lowers* each letter of a splitting string to an :class:`Op` (it decides the constants: the
physics); a backend *executes* ops (it decides the loops: the discretization machinery). Each
execution path implements each op code once or refuses it by name (:func:`require`), so a new
splitting needs no new kernel code, and the numba kernel, the torch batched runner and the torch
optimizers run the same program. What every path needs to know about an op (its named constants,
whether it reads ∇U, moves q, draws normals, ...) is its row of :data:`OPS`.

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

__all__ = ["GRADIENT_OPS", "MERGEABLE_OPS", "MOMENTUM_OPS", "NHC_STIFF", "NOISE_OPS", "OPS",
           "POSITION_OPS", "SEGMENT_END_OPS", "Op", "OpCode", "OpInfo", "Program", "bbi_shell_op",
           "ecd_shell_op", "nhc_op", "noise_counts", "normals_per_step", "require",
           "skippable_amplitudes"]


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


@dataclass(frozen=True)
class OpInfo:
    """What every backend, the optimizer executor and the diagnostics need to know about an op.

    This table (:data:`OPS`) is the one place these facts are written; every other list or count
    (:data:`GRADIENT_OPS`, :data:`POSITION_OPS`, :data:`NOISE_OPS`, the kernels' noise counts,
    :mod:`dynopt.diagnostics.order`, the executor's segment cuts, the optimizer-form merging) is
    derived from it.

    Attributes:
        f: Names of the float constants ``Op.f`` in order (a trailing ``"*name"`` marks a
            variable-length tail, described in the module docstring).
        i: Names of the integer constants ``Op.i`` in order (same convention).
        reads_gradient: Reads ∇U at the current q (a cached gradient may serve it).
        moves_q: Changes q (invalidates a cached gradient).
        normals: Noise vectors drawn per application, each one normal per coordinate.
        amplitude: Index in ``f`` of the noise amplitude (0 there makes the op deterministic);
            None for ops that draw no normals.
        keeps_normals: Stores its normals in the state (LM's memory), so it draws them even
            at amplitude 0.
        momentum: Reads or writes the momenta p (illegal on a state without momenta).
        elementwise: Acts on each coordinate independently given the per-chain extras, so the
            optimizer executor can run it over parameter blocks.
        ends_segment: A scalar reduction over the thermostat's scope (Σp²/M): the optimizer
            executor cuts its elementwise segments here.
        merges: Two adjacent applications with times t₁, t₂ equal one with t₁ + t₂ (exact
            composition, no noise): the optimizer form merges such neighbours.
    """

    f: tuple[str, ...]
    i: tuple[str, ...] = ()
    reads_gradient: bool = False
    moves_q: bool = False
    normals: int = 0
    amplitude: int | None = None
    keeps_normals: bool = False
    momentum: bool = True
    elementwise: bool = True
    ends_segment: bool = False
    merges: bool = False


_C = OpCode
#: The op table: one :class:`OpInfo` per :class:`OpCode` (semantics in the module docstring).
OPS: dict[OpCode, OpInfo] = {
    _C.DRIFT: OpInfo(("t",), moves_q=True, merges=True),
    _C.KICK: OpInfo(("t",), reads_gradient=True, merges=True),
    _C.OU: OpInfo(("c", "d"), normals=1, amplitude=1),
    _C.GRAD_STEP: OpInfo(("s",), reads_gradient=True, moves_q=True, momentum=False),
    _C.WIENER: OpInfo(("s",), moves_q=True, normals=1, amplitude=0, momentum=False),
    _C.LM_NOISE: OpInfo(("s",), ("x_off",), moves_q=True, normals=1, amplitude=0,
                        momentum=False,
                        keeps_normals=True),
    _C.FRICTION: OpInfo(("t",), ("xi", "eta")),
    _C.ADD_NOISE: OpInfo(("s",), normals=1, amplitude=0),
    _C.THERMOSTAT: OpInfo(("a", "b", "e"), ("xi",), elementwise=False, ends_segment=True),
    _C.OU_XI: OpInfo(("t", "sigma"), ("xi",), normals=1, amplitude=1),
    _C.NHC: OpInfo(("t", "kT", "q1_per_dof", "*q_rest_weights"),
                   ("M", "n_sub", "n_sy", "xi_offset", "eta_offset"), elementwise=False,
                   ends_segment=True),
    _C.LIN_FRIC: OpInfo(("t",), ("k",)),
    _C.SC_KICK: OpInfo(("t",), ("k",), reads_gradient=True),
    _C.SC_DRIFT: OpInfo(("t",), ("k",), moves_q=True),
    _C.BBI_SHELL: OpInfo(("v0", "delta_energy", "t0", "n_bounces", "t1", "eps1", "eps2",
                          "project", "cube"), ("offset",), reads_gradient=True,
                         elementwise=False),
    _C.ECD_SHELL: OpInfo(("f0", "eta", "s", "delta_energy", "eps1", "eps2", "project"),
                         ("offset",), reads_gradient=True, elementwise=False),
    _C.ECD_DRIFT: OpInfo(("t", "s"), ("k",), moves_q=True, elementwise=False),
    _C.ROTATE: OpInfo(("nu",), ("k",), normals=1, amplitude=0, elementwise=False),
}
del _C
if set(OPS) != set(OpCode):  # pragma: no cover - an op added to OpCode but not to the table
    raise AssertionError(f"op table misses {sorted(set(OpCode) - set(OPS))}")

#: Op codes that read the gradient of the potential at the current q.
GRADIENT_OPS = frozenset(c for c, o in OPS.items() if o.reads_gradient)
#: Op codes that change q (and so invalidate a cached gradient).
POSITION_OPS = frozenset(c for c, o in OPS.items() if o.moves_q)
#: Op codes that draw normals (:attr:`OpInfo.normals` vectors of one normal per coordinate).
NOISE_OPS = frozenset(c for c, o in OPS.items() if o.normals > 0)
#: Op codes that act on the momenta.
MOMENTUM_OPS = frozenset(c for c, o in OPS.items() if o.momentum)
#: Op codes where the optimizer executor ends an elementwise segment (scope reductions).
SEGMENT_END_OPS = frozenset(c for c, o in OPS.items() if o.ends_segment)
#: Op codes whose adjacent applications merge exactly (t₁ + t₂).
MERGEABLE_OPS = frozenset(c for c, o in OPS.items() if o.merges)


def normals_per_step(codes: Sequence[int]) -> int:
    """Noise vectors drawn by one step of ops with these codes (from :data:`OPS`)."""
    return sum(OPS[OpCode(c)].normals for c in codes)


def skippable_amplitudes() -> np.ndarray:
    """``fields[code]`` = index in ``f`` of the op's noise amplitude where a zero amplitude lets a
    kernel skip the draw, else −1 (no normals, or normals the op keeps); indexable by int code."""
    out = np.full(max(OpCode) + 1, -1, dtype=np.int64)
    for c, o in OPS.items():
        if o.normals and not o.keeps_normals:
            out[int(c)] = o.amplitude
    return out


def noise_counts() -> np.ndarray:
    """``counts[code]`` = noise vectors the op draws, indexable by int code (for kernels)."""
    out = np.zeros(max(OpCode) + 1, dtype=np.int64)
    for c, o in OPS.items():
        out[int(c)] = o.normals
    return out


def require(ops: Sequence[Op], supported: frozenset[OpCode] | set[OpCode], path: str) -> None:
    """Raise ValueError naming the first op of ``ops`` that ``path`` does not implement.

    Every execution path calls this with the codes it implements before running, so an op it
    lacks is refused up front with the op's name and letter (never a silent no-op or a
    NotImplementedError deep in a loop).
    """
    for op in ops:
        if op.code not in supported:
            where = f" (letter {op.letter!r})" if op.letter else ""
            raise ValueError(
                f"the {path} does not implement op {op.code.name}{where}; it implements "
                f"{sorted(c.name for c in supported)}")


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
        return OPS[self.code].normals > 0

    @property
    def info(self) -> OpInfo:
        """The op's row of :data:`OPS`."""
        return OPS[self.code]

    def field(self, name: str) -> float | int:
        """The constant named ``name`` in :data:`OPS` (float constants first, then integer)."""
        info = OPS[self.code]
        if name in info.f:
            return self.f[info.f.index(name)]
        if name in info.i:
            return self.i[info.i.index(name)]
        raise KeyError(f"op {self.code.name} has no field {name!r}; it has {info.f + info.i}")


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
        return sum(op.info.normals for op in self.ops)

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
