r"""Exact references for the Gibbs (canonical) measure ρ(q) ∝ exp(−U(q)/τ).

.. math:: \langle f\rangle_\tau = \frac{\int f(x)\, e^{-u(x)/\tau}\,dx}{\int e^{-u(x)/\tau}\,dx},
          \qquad \rho_i(x) = \frac{e^{-u_i(x)/\tau}}{\int e^{-u_i/\tau}} .

**Assumption: separability.** For a separable potential U(q) = Σᵢ uᵢ(qᵢ) the coordinates are
independent under the Gibbs measure, so the marginal of coordinate i is the 1-D density above with
uᵢ(x) = U(x eᵢ) up to a constant (the other coordinates set to 0), computed by
``scipy.integrate.quad``, and a 2-D marginal is the product of two 1-D marginals. The built-ins
:class:`~dynopt.potentials.Harmonic`, :class:`~dynopt.potentials.DoubleWell` and
:class:`~dynopt.potentials.Rastrigin` are separable; any 1-D potential is; a user potential can
declare it with ``potential.separable = True``. For a **non-separable potential of dimension 2**
(Rosenbrock, Ackley(dim=2)) the density is evaluated on a fine grid over the box where
U − min U ≤ 40τ and integrated with the midpoint rule, which is spectrally accurate for smooth
integrands that vanish at the box edges (error ~ exp(−2π²σ²/Δ²) for a local width σ and grid
spacing Δ). Other non-separable marginals are not available and raise ``ValueError``.

Potentials that do not grow at infinity (Ackley tends to a + e) have no normalizable Gibbs
measure; they raise ``ValueError`` unless ``bounds`` are given, in which case the result is the
Gibbs measure restricted to the bounds.

Reference values (double well U = (q² − 1)², τ = 0.25; langevin-thermostats.md §5.5):
⟨q²⟩ = 0.917671, ⟨q⁴⟩ = 0.980171, ⟨U⟩ = 0.144829.

| symbol | code |
|---|---|
| τ | ``temperature`` |
| i | ``coord`` / ``coords`` |
| uᵢ | :func:`marginal_potential` |
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import as_finite_array, check_bool, check_int, check_positive, short_repr
from ..potentials import DoubleWell, Harmonic, Rastrigin
from ..potentials.base import AbstractPotential

__all__ = [
    "GibbsMarginal",
    "bin_probabilities",
    "gibbs_marginal",
    "gibbs_mean_potential",
    "gibbs_moment",
    "gibbs_support",
    "is_separable",
    "marginal_potential",
]

#: Density cut: the support is where U − min U <= CUT·τ (weights below e^{−40} ≈ 4e-18).
CUT = 40.0
#: Built-ins with U(q) = Σᵢ uᵢ(qᵢ).
SEPARABLE_TYPES: tuple[type, ...] = (Harmonic, DoubleWell, Rastrigin)
#: Grid points per axis for the 2-D non-separable quadrature.
N_FINE = 1601
#: Pieces the 1-D support is cut into for ``quad`` (keeps multimodal integrands resolved).
N_PIECES = 64


def _check_potential(potential: Any) -> AbstractPotential:
    if not isinstance(potential, AbstractPotential):
        raise TypeError(f"potential must be a dynopt.potentials potential, got {potential!r}")
    return potential


def is_separable(potential: AbstractPotential) -> bool:
    """Whether U(q) = Σᵢ uᵢ(qᵢ): 1-D potentials, the separable built-ins, or a potential with
    the attribute ``separable = True``."""
    flag = getattr(potential, "separable", None)
    if flag is not None:
        return check_bool("potential.separable", flag)
    return potential.dim == 1 or isinstance(potential, SEPARABLE_TYPES)


def _check_coords(coords: Any, dim: int, max_len: int = 2) -> tuple[int, ...]:
    if isinstance(coords, (int, np.integer)):
        coords = (int(coords),)
    try:
        out = tuple(check_int("coords", c, minimum=0) for c in coords)
    except TypeError:
        raise TypeError("coords must be an int or a tuple of ints, got "
                        f"{short_repr(coords)}") from None
    if not 1 <= len(out) <= max_len or len(set(out)) != len(out):
        raise ValueError(f"coords must be 1 to {max_len} distinct coordinates, got "
                         f"{short_repr(coords)}")
    if max(out) >= dim:
        raise ValueError(f"coords={out} is out of range for dim={dim}")
    return out


def marginal_potential(potential: AbstractPotential, coord: int = 0) -> Callable[[Any], Any]:
    """uᵢ(x) = U(x eᵢ): the 1-D potential of coordinate ``coord`` of a separable potential.

    Raises:
        ValueError: If the potential is not separable (and dim > 1).
    """
    _check_potential(potential)
    (c,) = _check_coords((coord,), potential.dim, 1)
    if not is_separable(potential):
        raise ValueError(
            f"not available: {potential!r} is not separable, so the marginal of coordinate {c} "
            f"needs an integral over the other {potential.dim - 1} coordinate(s); only separable "
            "potentials (and non-separable ones of dim 2, via gibbs_marginal) are supported. "
            "Set potential.separable = True if U(q) = Σᵢ uᵢ(qᵢ)."
        )
    dim = potential.dim

    def u(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float64)
        q = np.zeros((*x.shape, dim))
        q[..., c] = x
        return np.asarray(potential.value(q), dtype=np.float64)

    return u


def _support_1d(u: Callable[[Any], Any], tau: float) -> tuple[float, float, float]:
    """(lo, hi, min u): the interval where u − min u <= CUT·τ, with a margin."""
    half = 1.0
    for _ in range(40):
        x = np.linspace(-half, half, 8001)
        v = u(x)
        vmin = float(v.min())
        if v[0] - vmin > CUT * tau and v[-1] - vmin > CUT * tau:
            far = u(np.array([-4.0 * half, 4.0 * half]))
            if np.any(far - np.array([v[0], v[-1]]) <= CUT * tau):
                break  # does not keep growing: not normalizable
            inside = x[v - vmin <= CUT * tau]
            step = x[1] - x[0]
            lo, hi = float(inside.min() - 2 * step), float(inside.max() + 2 * step)
            return _zoom(u, tau, lo, hi, vmin, len(inside))
        half *= 2.0
    raise ValueError(
        "not normalizable: exp(-U/temperature) has infinite mass because the potential does not "
        "grow at infinity (e.g. Ackley tends to a + e); pass bounds=(lo, hi) to restrict the "
        "measure to an interval"
    )


def _zoom(u: Callable[[Any], Any], tau: float, lo: float, hi: float, vmin: float, n_inside: int
          ) -> tuple[float, float, float]:
    """Narrow (lo, hi) until the grid resolves the support: at a tiny τ the support is far
    narrower than the first grid's step, and the quadrature missed the peak (Z = 0)."""
    for _ in range(60):
        if n_inside >= 200:
            break
        x = np.linspace(lo, hi, 8001)
        v = u(x)
        vmin = min(vmin, float(v.min()))
        inside = x[v - vmin <= CUT * tau]
        if len(inside) == 0:
            break
        step = x[1] - x[0]
        new = float(inside.min() - 2 * step), float(inside.max() + 2 * step)
        if new == (lo, hi):
            break
        lo, hi, n_inside = *new, len(inside)
    return lo, hi, vmin


def _check_bounds(bounds: Any) -> tuple[float, float]:
    b = as_finite_array("bounds", bounds, ndim=1)
    if b.shape != (2,) or not b[0] < b[1]:
        raise ValueError(f"bounds must be (lo, hi) with lo < hi, got {short_repr(bounds)}")
    return float(b[0]), float(b[1])


def check_edges(name: str, edges: Any) -> np.ndarray:
    """One coordinate's histogram bin edges: finite, strictly increasing, at least 2."""
    arr = as_finite_array(name, edges, ndim=1)
    if arr.shape[0] < 2 or np.any(np.diff(arr) <= 0):
        k = int(np.argmax(np.diff(arr) <= 0)) + 1 if arr.shape[0] >= 2 else None
        where = "" if k is None else f" (edge {k}, {float(arr[k])}, after {float(arr[k - 1])})"
        raise ValueError(f"{name}: bin edges must be increasing with at least 2 entries, got "
                         f"{short_repr(edges)}{where}")
    return arr


def _quad(fn: Callable[[float], float], lo: float, hi: float) -> float:
    from scipy import integrate  # lazy: keeps `import dynopt` fast

    edges = np.linspace(lo, hi, N_PIECES + 1)
    total = 0.0
    for a, b in itertools.pairwise(edges):
        val, _ = integrate.quad(fn, a, b, epsabs=0.0, epsrel=1e-12, limit=200)
        total += val
    return total


@dataclass(frozen=True)
class _Density1D:
    """exp(−(u − u_min)/τ)/Z of one coordinate of a separable potential."""

    u: Callable[[Any], Any]
    tau: float
    lo: float
    hi: float
    umin: float
    z: float

    @classmethod
    def build(cls, potential: AbstractPotential, tau: float, coord: int,
              bounds: Any = None) -> _Density1D:
        u = marginal_potential(potential, coord)
        if bounds is None:
            lo, hi, umin = _support_1d(u, tau)
        else:
            lo, hi = _check_bounds(bounds)
            umin = float(u(np.linspace(lo, hi, 8001)).min())
        dens = cls(u, tau, lo, hi, umin, 1.0)
        z = _quad(dens.weight, lo, hi)
        if not (math.isfinite(z) and z > 0.0):
            raise ValueError(f"temperature={tau:g}: the Gibbs density of coordinate {coord} "
                             "could not be normalized (its support is below the resolution of "
                             "float64 here)")
        return cls(u, tau, lo, hi, umin, z)

    def weight(self, x: Any) -> Any:
        w = np.exp(-(self.u(np.asarray(x, dtype=np.float64)) - self.umin) / self.tau)
        return float(w) if np.ndim(w) == 0 else w

    def density(self, x: Any) -> np.ndarray:
        return np.asarray(self.weight(np.asarray(x, dtype=np.float64))) / self.z

    def mean(self, f: Callable[[float], float]) -> float:
        return _quad(lambda x: float(f(x)) * self.weight(x), self.lo, self.hi) / self.z

    def bin_masses(self, edges: np.ndarray) -> np.ndarray:
        from scipy import integrate

        out = np.empty(len(edges) - 1)
        for k, (a, b) in enumerate(itertools.pairwise(edges)):
            a, b = max(a, self.lo), min(b, self.hi)
            if b <= a:
                out[k] = 0.0
                continue
            out[k] = integrate.quad(self.weight, a, b, epsabs=0.0, epsrel=1e-10, limit=200)[0]
        return out / self.z


@dataclass(frozen=True)
class _Density2D:
    """exp(−(U − U_min)/τ)/Z of a 2-D potential on its support box (midpoint rule)."""

    potential: AbstractPotential
    tau: float
    box: tuple[tuple[float, float], tuple[float, float]]
    umin: float
    z: float

    @classmethod
    def build(cls, potential: AbstractPotential, tau: float) -> _Density2D:
        half = 1.0
        for _ in range(30):
            g = np.linspace(-half, half, 401)
            v = np.asarray(potential.value(np.stack(np.meshgrid(g, g, indexing="ij"), -1)))
            vmin = float(v.min())
            edge = np.concatenate([v[0], v[-1], v[:, 0], v[:, -1]])
            if edge.min() - vmin > CUT * tau:
                far = np.asarray(potential.value(np.array([[4 * half, 4 * half],
                                                           [-4 * half, -4 * half]])))
                if np.any(far - edge.min() <= CUT * tau):
                    break  # does not keep growing: not normalizable
                idx = np.argwhere(v - vmin <= CUT * tau)
                step = g[1] - g[0]
                lo = g[idx.min(axis=0)] - 2 * step
                hi = g[idx.max(axis=0)] + 2 * step
                box = ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
                xs, dx = _midpoints(*box[0], N_FINE)
                ys, dy = _midpoints(*box[1], N_FINE)
                w = cls(potential, tau, box, vmin, 1.0).weight(xs[:, None], ys[None, :])
                umin = vmin
                z = float(w.sum() * dx * dy)
                return cls(potential, tau, box, umin, z)
            half *= 2.0
        raise ValueError(
            f"not normalizable: exp(-U/temperature) of {potential!r} has infinite mass because "
            "the potential does not grow at infinity (Ackley tends to a + e)"
        )

    def weight(self, x: Any, y: Any) -> np.ndarray:
        x, y = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        v = np.asarray(self.potential.value(np.stack([x, y], -1)))
        return np.exp(-(v - self.umin) / self.tau)

    def marginal(self, coord: int, x: np.ndarray) -> np.ndarray:
        """ρ_coord(x), integrating the other coordinate over the box."""
        other, d = _midpoints(*self.box[1 - coord], N_FINE)
        pts = (x[:, None], other[None, :]) if coord == 0 else (other[None, :], x[:, None])
        return self.weight(*pts).sum(axis=1) * d / self.z


def _midpoints(lo: float, hi: float, n: int) -> tuple[np.ndarray, float]:
    d = (hi - lo) / n
    return lo + d * (np.arange(n) + 0.5), d


def gibbs_support(potential: AbstractPotential, temperature: float,
                  coords: Sequence[int] | int = (0,)) -> tuple[tuple[float, float], ...]:
    """Intervals holding all but ~e^{−40} of each marginal's mass (for histogram ranges)."""
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    cs = _check_coords(coords, potential.dim)
    if is_separable(potential):
        out = []
        for c in cs:
            d = _Density1D.build(potential, tau, c)
            out.append((d.lo, d.hi))
        return tuple(out)
    return tuple(_Density2D.build(_need_dim2(potential, cs), tau).box[c] for c in cs)


def _need_dim2(potential: AbstractPotential, coords: tuple[int, ...]) -> AbstractPotential:
    if potential.dim != 2:
        raise ValueError(
            f"not available: {potential!r} is not separable and has dim={potential.dim}; exact "
            f"marginals of coords={coords} exist here for separable potentials and dim = 2 only"
        )
    return potential


def gibbs_moment(
    potential: AbstractPotential,
    temperature: float,
    f: Callable[[float], float],
    *,
    coord: int = 0,
    bounds: Any = None,
) -> float:
    """⟨f(q_coord)⟩ under the Gibbs measure, by 1-D quadrature (``scipy.integrate.quad``).

    Args:
        potential: A separable potential (any 1-D potential; for dim > 1 the 1-D marginal of
            ``coord`` is used, see the module docstring).
        temperature: τ > 0.
        f: A function of one float.
        coord: The coordinate.
        bounds: ``(lo, hi)`` integration interval (default: where u − min u <= 40τ).

    Returns:
        The average.

    Example:
        >>> from dynopt.potentials import DoubleWell
        >>> round(gibbs_moment(DoubleWell(), 0.25, lambda x: x**2), 6)
        0.917671
    """
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    if not callable(f):
        raise TypeError(f"f must be callable, got {f!r}")
    return _Density1D.build(potential, tau, check_int("coord", coord, minimum=0), bounds).mean(f)


def _probe_values(u: Callable[[Any], Any], x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(u(x), dtype=np.float64)


#: Points per support width of the probe two marginals must agree on to share a quadrature.
N_CHECK = 1024


def _check_points(lo: float, hi: float) -> np.ndarray:
    """The probe of a coordinate's marginal: dense on its support (lo, hi), sparser on a width
    either side and at the far points :func:`_support_1d` tests, placed by a Weyl sequence (no
    lattice that a periodic difference, like sin²(10πq) on a 0.1 grid, could hide between)."""
    width = hi - lo
    frac = np.sort((np.arange(1, N_CHECK + 1) * 0.6180339887498949) % 1.0)
    side = frac[::8]
    far = 4.0 * max(abs(lo), abs(hi), width) * np.array([-4.0, -1.0, 1.0, 4.0])
    return np.concatenate([lo + width * frac, lo - width * side, hi + width * side, far])


def gibbs_mean_potential(potential: AbstractPotential, temperature: float) -> float:
    """⟨U⟩ under the Gibbs measure.

    For separable U, ⟨U⟩ = Σᵢ ⟨U(x eᵢ)⟩ᵢ − (dim − 1)·U(0) (each term U(x eᵢ) carries the
    other coordinates' uⱼ(0)); for non-separable dim-2 potentials, 2-D quadrature.
    """
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    if is_separable(potential):
        total = 0.0
        # coordinates with one marginal (the usual case) share its quadrature: O(dim²) potential
        # evaluations otherwise (a study at dim 200 spent 26 s here). A cheap probe on [-3, 3]
        # finds the candidates; a coordinate then shares a quadrature only if its marginal also
        # agrees with the candidate's on a dense probe over three times that candidate's support
        # (the probe on [-3, 3] alone merged u = q²/2 with q²/2 + 5(|q| − 3)₊², ⟨U⟩ 10.0 for
        # 8.08 at τ = 10, and marginals that differ between its grid points).
        done: dict[bytes, list[tuple[np.ndarray, np.ndarray, float]]] = {}
        probe = np.linspace(-3.0, 3.0, 61)
        for c in range(potential.dim):
            u = marginal_potential(potential, c)
            key = _probe_values(u, probe).tobytes()
            for points, values, shared in done.get(key, []):
                if np.array_equal(_probe_values(u, points), values, equal_nan=True):
                    mean = shared
                    break
            else:
                d = _Density1D.build(potential, tau, c)
                mean = d.mean(lambda x, u=d.u: float(u(np.array(x))))
                points = _check_points(d.lo, d.hi)
                done.setdefault(key, []).append((points, _probe_values(u, points), mean))
            total += mean
        u0 = float(np.asarray(potential.value(np.zeros(potential.dim))))
        return total - (potential.dim - 1) * u0
    dens = _Density2D.build(_need_dim2(potential, (0, 1)), tau)
    xs, _ = _midpoints(*dens.box[0], N_FINE)
    ys, _ = _midpoints(*dens.box[1], N_FINE)
    q = np.stack(np.broadcast_arrays(xs[:, None], ys[None, :]), -1)
    v = np.asarray(potential.value(q))
    w = np.exp(-(v - dens.umin) / tau)
    return float((w * v).sum() / w.sum())


@dataclass(frozen=True)
class GibbsMarginal:
    """An exact marginal density on a grid.

    Attributes:
        coords: The coordinates (1 or 2).
        axes: Grid points, one array per coordinate.
        density: Density values, shape ``tuple(len(a) for a in axes)``.
        temperature: τ.
    """

    coords: tuple[int, ...]
    axes: tuple[np.ndarray, ...]
    density: np.ndarray
    temperature: float


def gibbs_marginal(
    potential: AbstractPotential,
    temperature: float,
    coords: Sequence[int] | int = (0,),
    *,
    grid: Any = None,
    n_grid: int = 201,
) -> GibbsMarginal:
    """Exact 1-D or 2-D marginal density of exp(−U/τ) on a grid.

    Args:
        potential: A separable potential (any dim), or a non-separable one of dim 2.
        temperature: τ > 0.
        coords: ``(i,)`` or ``(i, j)``.
        grid: Grid points: an array for one coordinate, a pair of arrays for two (default:
            ``n_grid`` points spanning :func:`gibbs_support`).
        n_grid: Points per axis of the default grid.

    Returns:
        :class:`GibbsMarginal`.
    """
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    cs = _check_coords(coords, potential.dim)
    n_grid = check_int("n_grid", n_grid, minimum=2)
    if grid is None:
        axes = tuple(np.linspace(lo, hi, n_grid)
                     for lo, hi in gibbs_support(potential, tau, cs))
    else:
        raw = (grid,) if len(cs) == 1 else tuple(grid)
        if len(raw) != len(cs):
            raise ValueError(f"grid must have one array per coordinate ({len(cs)}), got {len(raw)}")
        axes = tuple(as_finite_array("grid", a, ndim=1) for a in raw)
    if is_separable(potential):
        parts = [_Density1D.build(potential, tau, c).density(a) for c, a in zip(cs, axes,
                                                                                strict=True)]
        dens = parts[0] if len(parts) == 1 else np.multiply.outer(parts[0], parts[1])
    else:
        d2 = _Density2D.build(_need_dim2(potential, cs), tau)
        if len(cs) == 1:
            dens = d2.marginal(cs[0], axes[0])
        else:
            a, b = axes if cs == (0, 1) else axes[::-1]
            dens = d2.weight(a[:, None], b[None, :]) / d2.z
            if cs != (0, 1):
                dens = dens.T
    return GibbsMarginal(cs, axes, np.asarray(dens), tau)


def bin_probabilities(
    potential: AbstractPotential,
    temperature: float,
    coords: Sequence[int] | int,
    edges: Sequence[np.ndarray],
) -> np.ndarray:
    """Exact Gibbs probability of each histogram bin (1-D or 2-D), shape ``(n_bins...)``.

    Separable potentials use ``quad`` per bin; non-separable dim-2 potentials the midpoint rule
    with each bin refined to ~1600 points per axis in total.

    Raises:
        ValueError: If ``edges`` does not hold one finite, strictly increasing array of at
            least 2 edges per coordinate.
    """
    tau = check_positive("temperature", temperature)
    _check_potential(potential)
    cs = _check_coords(coords, potential.dim)
    if len(edges) != len(cs):
        raise ValueError(f"edges must have one array per coordinate ({len(cs)}), got {len(edges)}")
    edges = [check_edges("edges", e) for e in edges]
    if is_separable(potential):
        parts = [_Density1D.build(potential, tau, c).bin_masses(e)
                 for c, e in zip(cs, edges, strict=True)]
        return parts[0] if len(parts) == 1 else np.multiply.outer(parts[0], parts[1])
    d2 = _Density2D.build(_need_dim2(potential, cs), tau)
    refined = []
    for e in edges:
        s = max(4, math.ceil(N_FINE / (len(e) - 1)))
        frac = (np.arange(s) + 0.5) / s
        width = np.diff(e)
        pts = e[:-1, None] + width[:, None] * frac[None, :]
        refined.append((pts, width / s, s))
    if len(cs) == 1:
        (pts, dw, s) = refined[0]
        dens = d2.marginal(cs[0], pts.ravel()).reshape(pts.shape)
        return (dens * dw[:, None]).sum(axis=1)
    (px, dwx, _), (py, dwy, _) = refined
    a, b = (px, py) if cs == (0, 1) else (py, px)
    w = d2.weight(a.ravel()[:, None], b.ravel()[None, :]) / d2.z
    if cs != (0, 1):
        w = w.T
    w = w.reshape(px.shape[0], px.shape[1], py.shape[0], py.shape[1])
    return np.einsum("iajb,i,j->ij", w, dwx, dwy)
