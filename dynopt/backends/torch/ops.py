"""Primitive updates of :mod:`dynopt.program` as in-place torch operations on one tensor.

Each function implements one op code for a batch: ``q`` and ``p`` have shape ``(..., dim)`` and
thermostat variables ``xi`` broadcast against ``p`` (``(chains, 1)`` in ``integrate()``; a 0-d
tensor per parameter tensor in an optimizer). ``kinetic2(p)`` reduces pᵀM⁻¹p over the
thermostat's scope to the shape of ``xi``. These single-tensor functions are the reference path;
the optimizers' foreach path must agree with them.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ...program import NHC_STIFF

__all__ = [
    "add_noise_",
    "drift_",
    "friction_",
    "grad_step_",
    "host_constant",
    "kick_",
    "lm_noise_",
    "nhc_",
    "ou_",
    "ou_thermostat_",
    "ou_thermostat_coefficients",
    "seeded",
    "thermostat_",
    "wiener_",
]

Kinetic = Callable[[Tensor], Tensor]


def drift_(q: Tensor, p: Tensor, t: float, minv: Tensor | float) -> None:
    """DRIFT: q ← q + t M⁻¹p."""
    q.add_(p * minv, alpha=t) if isinstance(minv, Tensor) else q.add_(p, alpha=t * minv)


def kick_(p: Tensor, grad: Tensor, t: float) -> None:
    """KICK: p ← p − t ∇U."""
    p.add_(grad, alpha=-t)


def ou_(p: Tensor, c: float, d: float, sqrtm: Tensor | float, z: Tensor) -> None:
    """OU: p ← c p + d M^½ R."""
    p.mul_(c).add_(z * sqrtm, alpha=d) if isinstance(sqrtm, Tensor) else p.mul_(c).add_(
        z, alpha=d * sqrtm)


def grad_step_(q: Tensor, grad: Tensor, s: float) -> None:
    """GRAD_STEP: q ← q − s ∇U."""
    q.add_(grad, alpha=-s)


#: owner -> {(key, device, dtype): (source array, tensor)}: see :func:`host_constant`.
_HOST_CONSTANTS: weakref.WeakKeyDictionary[Any, dict[Any, tuple[np.ndarray, Tensor]]] = (
    weakref.WeakKeyDictionary())


def host_constant(owner: Any, key: Hashable, source: np.ndarray,
                  make: Callable[[], np.ndarray], like: Tensor) -> Tensor:
    """A constant of ``owner`` computed from its numpy array ``source`` (a potential's
    frequencies or centres, a system's masses), as a tensor of ``like``'s dtype and device.

    Made by ``make()`` once per (owner, key, device, dtype) and reused: a copy from pageable
    host memory to a GPU synchronises the host, so a per-call ``torch.as_tensor(array,
    device=...)`` cost one synchronisation per gradient. The entry belongs to the array object
    ``source`` (owners keep theirs read-only; assigning a new array makes a fresh entry) and
    lives as long as ``owner`` (weakly referenced: nothing is added to the owner, so copies and
    pickles of it are unchanged).
    """
    entries = _HOST_CONSTANTS.get(owner)
    if entries is None:
        entries = _HOST_CONSTANTS[owner] = {}
    full = (key, like.device, like.dtype)
    hit = entries.get(full)
    if hit is not None and hit[0] is source:
        return hit[1]
    t = torch.as_tensor(make(), dtype=like.dtype, device=like.device)
    entries[full] = (source, t)
    return t


def wiener_(q: Tensor, s: float, z: Tensor) -> None:
    """WIENER: q ← q + s R."""
    q.add_(z, alpha=s)


def lm_noise_(q: Tensor, prev: Tensor, s: float, z: Tensor) -> None:
    """LM_NOISE: q ← q + s (R_prev + R); R_prev ← R."""
    q.add_(prev + z, alpha=s)
    prev.copy_(z)


def friction_(p: Tensor, xi: Tensor, t: float, eta: Tensor | None = None) -> None:
    """FRICTION: p ← e^{−ξt} p (and η ← η + ξt)."""
    p.mul_(torch.exp(-t * xi))
    if eta is not None:
        eta.add_(xi, alpha=t)


def add_noise_(p: Tensor, s: float, sqrtm: Tensor | float, z: Tensor) -> None:
    """ADD_NOISE: p ← p + s M^½ R."""
    p.add_(z * sqrtm, alpha=s) if isinstance(sqrtm, Tensor) else p.add_(z, alpha=s * sqrtm)


def thermostat_(xi: Tensor, p: Tensor, a: float, b: float, per_dof: bool, n_dof: float,
                kinetic2: Kinetic) -> None:
    """THERMOSTAT: ξ ← ξ + a (pᵀM⁻¹p − b N) / N^e."""
    inc = (kinetic2(p) - b * n_dof) * (a / (n_dof if per_dof else 1.0))
    xi.add_(inc)


def ou_thermostat_coefficients(xi: Tensor, t: float, sigma: float) -> tuple[Tensor, Tensor]:
    """The OU_XI constants (e^{−ξt}, σ √((1 − e^{−2ξt})/(2ξ))), continuous at ξ = 0 (σ√t)."""
    u = 2.0 * xi * t
    small = u.abs() < 1e-12
    var = torch.where(small, torch.full_like(xi, t), -torch.expm1(-u) / torch.where(
        small, torch.ones_like(xi), 2.0 * xi))
    return torch.exp(-t * xi), sigma * torch.sqrt(var)


def ou_thermostat_(p: Tensor, xi: Tensor, t: float, sigma: float, sqrtm: Tensor | float,
                   z: Tensor) -> None:
    """OU_XI: p ← e^{−ξt} p + σ √((1 − e^{−2ξt})/(2ξ)) M^½ R (value t·σ² variance at ξ = 0)."""
    decay, scale = ou_thermostat_coefficients(xi, t, sigma)
    p.mul_(decay).add_(scale * sqrtm * z)


def nhc_(p: Tensor, v: list[Tensor], eta: list[Tensor], t: float, kT: float, q1: float,
         q_rest: list[float], weights: list[float], n_sub: int, n_dof: float,
         kinetic2: Kinetic) -> None:
    """NHC: Nosé–Hoover-chain propagation for time t (see :mod:`dynopt.program`).

    ``v`` and ``eta`` are the chain velocities and positions (each broadcastable against p),
    updated in place at the end; the propagation itself rebinds fresh tensors (never modifies a
    tensor autograd saved), so it also runs under autograd (``differentiable=True``).

    Stiff chains fall back to forward substeps. A Suzuki–Yoshida composition of order ≥ 3 has
    a negative weight (w₂ = −1.70 for order 3): that substep runs the chain backwards in time,
    where its frictions e^{−ts v_{j+1}/4} and the momentum scaling e^{−ts v₁} *amplify*. Far
    from equilibrium (a kinetic temperature 10⁴ × k_BT, the usual start of training) one step
    drives v₁ to ~10² and v₂ to ~N v₁²·t, so |ts·v| ≫ 1 and the backward substep overflows (NaN
    within a few steps; the optimizer's default ``tau``). The exact chain flow stays finite
    (every v_j is bounded below by −t/τ²), so the dynamics is kept and only its resolution
    changes: if a backward substep had |ts·v_j| > NHC_STIFF, or the result is not finite, the
    call is redone from the same state with the same number of substeps, all forward
    (weights (1/k, …, 1/k), k = n_sub × n_sy): the symmetric Trotter approximation of the same
    flow T_t, second order like the whole splitting, in which every exponential factor decays.
    Non-stiff calls (every equilibrium run, every parity test) are unchanged bit for bit.
    """
    k2_0 = kinetic2(p)
    vs, etas = [x.clone() for x in v], list(eta)
    scale, worst = _nhc_propagate(k2_0, vs, etas, t, kT, q1, q_rest, weights, n_sub, n_dof)
    ok = worst <= NHC_STIFF  # per scope; False for NaN
    # on the CPU the test is free; elsewhere reading it would synchronise the host every call,
    # so the fallback is computed always and selected per scope (the same values either way)
    if not _host_read_is_free(ok) or not bool(ok.all()):
        fv, fe = [x.clone() for x in v], list(eta)
        fscale, _ = _nhc_propagate(k2_0, fv, fe, t, kT, q1, q_rest, [1.0],
                                   n_sub * len(weights), n_dof)
        vs = [torch.where(ok, a, b) for a, b in zip(vs, fv, strict=True)]
        etas = [torch.where(ok, a, b) for a, b in zip(etas, fe, strict=True)]
        scale = torch.where(ok, scale, fscale)
    for dst, src in zip(v + eta, vs + etas, strict=True):
        dst.copy_(src)
    p.mul_(scale)


def _host_read_is_free(t: Tensor) -> bool:
    """Whether reading ``t`` on the host costs no synchronisation (a CPU tensor)."""
    return t.device.type == "cpu"


def _nhc_propagate(k2: Tensor, v: list[Tensor], eta: list[Tensor], t: float, kT: float,
                   q1: float, q_rest: list[float], weights: list[float], n_sub: int,
                   n_dof: float) -> tuple[Tensor, Tensor]:
    """The chain flow for time t with ``n_sub`` × Suzuki–Yoshida substeps, rebinding the entries
    of the lists ``v``/``eta``; returns the momentum scale and max |ts·v_j| over the backward
    (w < 0) substeps per scope (+inf where the scale is not finite)."""
    m = len(v)
    qs = [q1 * n_dof, *q_rest]
    scale = torch.ones_like(k2)
    worst = torch.zeros_like(k2)

    def force(j: int) -> Tensor:
        if j == 0:
            return (k2 - n_dof * kT) / qs[0]
        return (qs[j - 1] * v[j - 1] ** 2 - kT) / qs[j]

    def update(j: int, ts: float) -> None:
        g = force(j)
        if j < m - 1:
            e = torch.exp(-0.25 * ts * v[j + 1])
            v[j] = (v[j] * e + 0.5 * ts * g) * e
        else:
            v[j] = v[j] + 0.5 * ts * g

    for w in weights:
        for _ in range(n_sub):
            ts = w * t / n_sub
            for j in range(m - 1, -1, -1):
                update(j, ts)
            s = torch.exp(-ts * v[0])
            scale = scale * s
            k2 = k2 * s * s
            for j in range(m):
                eta[j] = eta[j] + ts * v[j]
            for j in range(m):
                update(j, ts)
            if w < 0:
                worst = torch.maximum(worst, -ts * torch.stack(v).abs().amax(0))
    worst = torch.where(torch.isfinite(scale), worst, torch.full_like(worst, math.inf))
    return scale, worst


_M64 = (1 << 64) - 1


def seeded(generator: torch.Generator, seed: int) -> torch.Generator:
    """``generator.manual_seed(seed)``, with every bit of a 64-bit seed counting.

    torch's CPU generator (a Mersenne Twister) keeps only the low 32 bits of its seed, so seeds
    1 and 1 + 2³² drew identical runs. On the CPU a seed ≥ 2³² is therefore folded into 32 bits
    by a hash of all 64 (splitmix64's finalizer); smaller seeds are used as they are, so their
    runs are unchanged, and other devices (CUDA's Philox) take the 64 bits directly. Two
    different seeds ≥ 2³² still share a CPU stream with probability 2⁻³², as any two 32-bit
    seeds do.
    """
    if seed >= 1 << 32 and generator.device.type == "cpu":
        z = (seed + 0x9E3779B97F4A7C15) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        seed = (z ^ (z >> 31)) >> 32
    generator.manual_seed(seed)
    return generator


def standard_normal(shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype,
                    device: torch.device, kind: str = "gaussian") -> Tensor:
    """Normals from the run's own generator (``kind="discrete"``: ±√3 w.p. 1/6, else 0).

    ``"gaussian"`` and ``"gaussian-f64"`` are the same here: torch.randn in ``dtype`` (the kinds
    differ only in the numba kernels' transform arithmetic).
    """
    if kind in ("gaussian", "gaussian-f64"):
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    if kind != "discrete":
        raise ValueError(f"noise kind must be 'gaussian', 'gaussian-f64' or 'discrete', got "
                         f"{kind!r}")
    u = torch.rand(shape, generator=generator, dtype=dtype, device=device)
    root3 = math.sqrt(3.0)
    return root3 * ((u < 1.0 / 6.0).to(dtype) - ((u >= 1.0 / 6.0) & (u < 1.0 / 3.0)).to(dtype))
