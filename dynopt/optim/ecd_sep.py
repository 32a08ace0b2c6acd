"""ECDSep: energy-conserving descent with a separable Hamiltonian, as a torch optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_nonnegative
from ..backends.torch import energy_ops
from ..backends.torch.energy_ops import ECDConstants
from ..events.actions import Stop
from ..events.triggers import Trigger
from ..program import ECD_EXTRAS
from ..systems.ecd_sep import ECDSep as ECDSepSystem
from ._events import as_scalar
from ._paths import bucket, choose_path, mark_written, numba_jit_enabled
from .base import Hyper
from .bbi import ShellSystem, _sum_sq, read_extras, scalar_like, write_extras
from .eventful import EventfulOptimizer, Participants
from .registry import register

__all__ = ["ROTATION_STREAM", "ECDSep"]

#: The Philox stream of the rotation noise on CPU (counter word c1; the streams are listed in
#: :mod:`dynopt.backends.numba.philox`).
ROTATION_STREAM = 5
#: The cache of the rotation noise's flat buffers, ``{(device, dtype): Tensor}``: reused every
#: step (no allocation and no page faults per step), rebuilt in a copy.
_NOISE = "_rotation_noise"


def _t(x: float) -> Tensor:
    return torch.tensor([x], dtype=torch.float64)


class ECDSep(ShellSystem):
    r"""ECDSep: energy-conserving descent with H = log(s + |p|²) + η log(F − F₀).

    The :class:`~dynopt.systems.ECDSep` system's map ``"SBAR"`` on the whole model. With
    F̃ = ℓ + Σ_groups (wd/2)|θ|² at the current parameters, V = (F̃ − F₀)^η and E = V₀(s + δE)
    fixed on the first step (δE → 1 when s ≠ 1, as in the authors' code):

    * if F̃ ≤ F₀ or V ≤ ε₂: nothing;
    * p ← c p, c = √((E/V − s)/|p|²) (projection onto the energy shell);
    * p ← p − Δt·η(∇ℓ + wd·θ)/(F̃ − F₀);
    * θ ← θ + Δt·2p/(s + |p|²)  (so |Δθ| ≤ Δt/√s exactly);
    * p ← |p|·u/|u|, u = p/|p| + νz, z ~ N(0, I) (see "Rotation noise" below).

    All norms are global over groups and tensors; ``lr`` and ``weight_decay`` are read per group
    every step, so LR schedulers change Δt (the authors' ECDSep caches ``lr`` at construction);
    the energy E and |p|² are saved in the ``state_dict``, and so are the
    hyperparameters ``F0`` … ``eps2`` (``state_dict()["dynopt"]["system"]``), which
    ``load_state_dict`` restores as torch restores the param groups'. ECDSep needs the loss
    value every step: ``step(closure)`` or ``step(loss=loss)``.

    | paper | here | authors' ``ECDSep`` kwarg | default |
    |---|---|---|---|
    | Δt | ``lr`` | ``lr`` | 0.1 (authors: required) |
    | F₀ | ``F0`` | ``F0`` | 0 |
    | η | ``eta`` | ``eta`` | 1 (authors: required, ≥ 1) |
    | ν | ``nu`` | ``nu`` | 1e-5 |
    | s | ``s`` | ``s`` | 1 |
    | δE | ``delta_energy`` | ``deltaEn`` | 0 |
    | wd | ``weight_decay`` | ``weight_decay`` | 0 |
    | – | ``consistent_energy`` | ``consEn`` | True |
    | ε₁, ε₂ | ``eps1``, ``eps2`` | ``eps1``, ``eps2`` | 1e-10, 1e-40 |
    | p | ``state[θ]["momentum"]`` | ``momenta`` | |

    Rotation noise: on CPU, float32 and float64 momenta draw z from a counter-based Philox
    generator in a numba kernel (:func:`dynopt.backends.numba.fill_tensor.fill_normals`, the
    float32 Box–Muller transform, widened in float64, as the fused Langevin kernels' default
    noise ``"gaussian"``; parallel above 32,768 normals, on the calling thread below, where
    entering numba's thread pool next to torch's cost more than the draw): the normal of
    element i of the (device, dtype) bucket is a pure
    function of (``seed``, stream :data:`ROTATION_STREAM`, step counter, i), so it does not
    depend on the thread count, every DDP rank draws the same (the seed is rank 0's), and a
    resumed or copied run continues bit for bit with no generator state (such a run saves none;
    an older checkpoint's CPU generator state still loads and goes unused). ``torch.randn``
    from the CPU generator took ~11 ns per normal, most of the step (docs/benchmarks.md,
    "HeavyBall, BBI and ECDSep step"). The normals fill a flat buffer per bucket that is kept
    between steps (one more parameter-sized buffer; the generator's draw allocated and
    page-faulted one every step). Other devices (CUDA) and dtypes (float16, bfloat16) draw
    with ``torch.randn`` from the optimizer's generator on that device, saved in the
    ``state_dict``. Both paths (``foreach``) draw the same numbers.

    Reference: De Luca, Gatti & Silverstein, arXiv 2306.00352; gbdl/ECDSep.

    Args:
        params: Parameters or param groups.
        lr: Time step Δt > 0 (default 0.1).
        F0, eta, nu, s, delta_energy, consistent_energy, eps1, eps2: See the table and
            :class:`dynopt.systems.ECDSep`.
        weight_decay: wd ≥ 0 (per group), added to the objective as (wd/2)|θ|².
        seed: Seed of the rotation noise.
        events: Triggers with ``Stop`` actions.
        foreach: ``False`` selects the single-tensor reference path, which performs the torch
            backend's arithmetic bit for bit (given the same rotation normals); the default
            is the foreach path (there is no fused kernel: a numba one was slower than
            foreach, its float64 reductions and per-call costs outweighing the saved passes,
            when the rotation's normals, then from ``torch.randn``, dominated the step).
        maximize: Must be False: the energy needs the minimized objective's value.
        differentiable: Must be False (refused with a ValueError: the step reads the loss and
            global norms as Python floats, which autograd cannot follow).
        nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` for NaN/inf gradients.
    """

    supported_actions = (Stop,)
    needs_loss = True
    _caches: ClassVar[dict[str, Callable[[], Any]]] = {**ShellSystem._caches, _NOISE: dict}
    extras_keys = {"ecd": ECD_EXTRAS}
    prior_in_step = True  # F̃ = ℓ + Σ (wd/2)|θ|² enters the energy: added in _step
    system_type = ECDSepSystem
    system_keys = ("F0", "eta", "s", "nu", "delta_energy", "consistent_energy", "eps1", "eps2")
    constants_type = ECDConstants

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyper = 0.1,
        F0: float = 0.0,
        eta: float = 1.0,
        nu: float = 1e-5,
        s: float = 1.0,
        delta_energy: float = 0.0,
        weight_decay: float = 0.0,
        consistent_energy: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
        seed: int | None = None,
        *,
        events: Iterable[Trigger] | Trigger | None = None,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        self._set_system(ECDSepSystem(None, F0=F0, eta=eta, s=s, nu=nu,
                                      delta_energy=delta_energy,
                                      consistent_energy=consistent_energy, eps1=eps1,
                                      eps2=eps2))
        defaults = {"lr": lr, "weight_decay": weight_decay, "foreach": foreach,
                    "maximize": maximize,
                    "differentiable": differentiable}
        super().__init__(params, defaults, events=events, seed=seed, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        super()._validate_group(group, index)
        self._check_hyper(group, index, "weight_decay", check_nonnegative)

    def _extras(self) -> dict[str, Tensor]:
        st = self.global_state.get("ecd")
        if st is None:
            st = self.global_state["ecd"] = {k: _t(0.0) for k in ECD_EXTRAS}
        return st

    @torch.compiler.disable  # host-driven (energy, projection): nothing for a compiler to fuse
    def _step(self, loss: Any, parts: Participants) -> None:
        c = self.constants
        nu = self.system.nu
        device = self.device_of(parts)
        items = []  # (path, lr, wd, params, grads, moms)
        for group, ps, gs in parts:
            if ps:
                ms = self._momenta(ps)
                path = choose_path(group, ps + gs + ms, "ECDSep")
                items.append(("foreach" if path == "fused" else path, self.hyper(group, "lr"),
                              self.hyper(group, "weight_decay", check_nonnegative), ps, gs, ms))
        reference = bool(items) and all(it[0] == "single" for it in items)
        sq = _sum_sq if reference else self.norm2
        ftilde = float(loss) + sum(0.5 * wd * sq(ps) for _, _, wd, ps, _, _ in items if wd)
        fd = ftilde - c.f0
        moms = [m for *_, ms in items for m in ms]
        key = self.participation_key()
        cached = self._cached_ps2(key)
        ps2 = float(cached) if cached is not None else sq(moms)
        if len(self._events):
            values = {"loss": as_scalar(loss, device)}
            if self._events.needs("energy"):
                energy = (_log0(c.s + ps2) + c.eta * math.log(fd)) if fd > 0 else math.nan
                values["energy"] = as_scalar(energy, device)
            if self.run_events(values, device):
                return
        st = self._extras()
        now = read_extras(st)  # the shell logic runs on Python floats (one chain)
        g2 = 0.0
        if not now["started"]:
            g2 = sq([_force(wd, p, g) for _, _, wd, ps, gs, _ in items
                     for p, g in zip(ps, gs, strict=True)])
        dec = energy_ops.ecd_control(fd, ps2, g2, now, c)
        write_extras(st, now)
        if not dec.active:
            return
        p2 = 0.0
        for path, lr, wd, ps, gs, ms in items:  # init, projection, kick
            p2 += _kick(path, dec, now["kick_rate"], lr, wd, ps, gs, ms, not reference)
        if reference:  # reduced over all groups at once, in the torch backend's order
            p2 = sq(moms)
        rotate = p2 > 0.0 and nu > 0.0
        pn = float(torch.sqrt(_t(p2)))  # torch's sqrt as the backend's (math.sqrt's bits differ)
        zs = self._normals(moms) if rotate else [None] * len(moms)
        u2 = 0.0
        off = 0
        for path, lr, _, ps, _, ms in items:  # drift with the global |p|², rotation direction
            z = zs[off:off + len(ms)]
            off += len(ms)
            u2 += _drift_rotate(path, _drift_coef(lr, c.s, p2), pn, nu, ps, ms, z,
                                not reference)
        if rotate:  # p ← |p|·u/|u|
            scale = _t(pn) / torch.sqrt(_t(sq(moms) if reference else u2))
            if reference:
                for m in moms:
                    m.mul_(scalar_like(scale, m))
            else:
                for (ms,) in bucket(moms).values():
                    torch._foreach_mul_(ms, float(scale))
        self.global_state["ps2"] = sq(moms) if reference else p2
        self.global_state["ps2_key"] = key

    def _normals(self, moms: list[Tensor]) -> list[Tensor]:
        """z ~ N(0, I) for the rotation: one flat draw per device/dtype bucket, viewed per
        momentum in the order of ``moms`` (every path draws the same numbers).

        CPU float32/float64 buckets are filled from Philox (:meth:`_philox_bucket`), keyed by
        the seed, :data:`ROTATION_STREAM` and the step counter, element i of the k-th such
        bucket at call ``calls + i/4`` (``calls``: the previous Philox buckets' calls), into a
        buffer kept between steps; other buckets draw from the device's generator."""
        views: dict[int, Tensor] = {}
        calls = 0  # Philox calls (4 normals each) taken by this step's earlier buckets
        for (dev, dt), (ms,) in bucket(moms).items():
            n = sum(m.numel() for m in ms)
            if self._philox_bucket(dev, dt, calls, n):
                from ..backends.numba.fill_tensor import fill_normals

                z = self._noise_buffer(dev, dt, n)
                fill_normals(z.numpy(), self.seed, ROTATION_STREAM, self.global_state["step"],
                             calls)
                mark_written([z])  # written through numba: count it as torch would
                calls += (n + 3) // 4
            else:
                z = torch.randn((n,), generator=self.generator(dev), dtype=dt, device=dev)
            off = 0
            for m in ms:
                k = m.numel()
                views[id(m)] = z[off:off + k].view_as(m)
                off += k
        return [views[id(m)] for m in moms]

    @staticmethod
    def _philox_bucket(dev: torch.device, dt: torch.dtype, calls: int, n: int) -> bool:
        """Whether a bucket of ``n`` normals takes its rotation noise from Philox: CPU float32
        or float64 whose calls end within the counter's 2³² (``calls`` taken before it), while
        numba compiles (not under ``NUMBA_DISABLE_JIT=1``: the generator then, as on CUDA);
        4·2³² normals of one dtype would be 16–32 GiB of momenta, which draw from the
        generator instead. (Tests and the benchmark's "before" row override it.)"""
        return (dev.type == "cpu" and dt in (torch.float32, torch.float64)
                and calls + (n + 3) // 4 <= 1 << 32 and numba_jit_enabled())

    def _noise_buffer(self, dev: torch.device, dt: torch.dtype, n: int) -> Tensor:
        """The flat buffer of ``n`` normals of a (device, dtype) bucket, kept between steps."""
        cache: dict[tuple[torch.device, torch.dtype], Tensor] = self.__dict__.setdefault(
            _NOISE, {})
        z = cache.get((dev, dt))
        if z is None or z.numel() != n:
            z = cache[(dev, dt)] = torch.empty((n,), dtype=dt, device=dev)
        return z


def _drift_coef(lr: float, s: float, p2: float) -> float:
    """2Δt/(s + |p|²), the drift's factor of p; 0 where s + |p|² = 0 (s = 0 and every momentum
    0: p = 0 moves nothing, as for s > 0, where the division was a ZeroDivisionError)."""
    d = s + p2
    return lr * 2.0 / d if d > 0.0 else 0.0


def _log0(x: float) -> float:
    """log x, −inf at x = 0 (log(s + |p|²) with s = 0 before the start, where p = 0)."""
    return math.log(x) if x > 0.0 else -math.inf


def _force(wd: float, p: Tensor, g: Tensor) -> Tensor:
    """∇F̃ = ∇ℓ + wd·θ."""
    return g if wd == 0 else g + wd * p


def _kick(path: str, dec: energy_ops.ECDDecision, rate: float, lr: float, wd: float,
          ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], norm: bool) -> float:
    """Start (first step), projection and kick p ← c·p − Δt·η/(F̃ − F₀)·∇F̃ of one group;
    returns the group's new |p|² (0.0 on the single-tensor path unless ``norm``: a model
    whose groups all take it reduces over all groups at once, in the torch backend's order)."""
    init = float(dec.init_coef)
    if path == "foreach":
        for bp, bg, bm in bucket(ps, gs, ms).values():
            bf = torch._foreach_add(bg, bp, alpha=wd) if wd else bg
            if init:
                for m, f in zip(bm, bf, strict=True):
                    m.copy_(f * -init)
            torch._foreach_mul_(bm, float(dec.scale))
            torch._foreach_add_(bm, bf, alpha=-lr * rate)
        return EventfulOptimizer.norm2(ms)
    for p, g, m in zip(ps, gs, ms, strict=True):  # the system's ops, as the torch backend's
        f = _force(wd, p, g)
        if init:
            m.copy_(-scalar_like(dec.init_coef, m) * f)
        m.mul_(scalar_like(dec.scale, m))
        energy_ops.scaled_kick_(m, f, lr, scalar_like(rate, m))
    return _sum_sq(ms) if norm else 0.0


def _drift_rotate(path: str, coef: float, pn: float, nu: float, ps: list[Tensor],
                  ms: list[Tensor], zs: list[Tensor | None], norm: bool) -> float:
    """θ ← θ + coef·p and, with normals ``zs``, p ← p/|p| + ν·z for one group; returns the
    group's |p|² afterwards (0.0 on the single-tensor path unless ``norm``)."""
    rotate = zs[0] is not None if zs else False
    if path == "foreach":
        for bp, bm in bucket(ps, ms).values():
            torch._foreach_add_(bp, bm, alpha=coef)
        if not rotate:
            return 0.0
        for bm, bz in bucket(ms, zs).values():  # type: ignore[arg-type]
            torch._foreach_div_(bm, pn)
            torch._foreach_add_(bm, bz, alpha=nu)
        return EventfulOptimizer.norm2(ms)
    pn_t = _t(pn)
    for p, m, z in zip(ps, ms, zs, strict=True):
        p.add_(m * torch.tensor(coef, dtype=m.dtype, device=m.device))
        if z is not None:
            m.copy_(m / scalar_like(pn_t, m) + nu * z)
    return _sum_sq(ms) if norm else 0.0


@register("ecdsep")
def _make(model_or_params: Any, **kwargs: Any) -> ECDSep:
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else (
        model_or_params)
    return ECDSep(params, **kwargs)
