"""ECDSep: energy-conserving descent with a separable Hamiltonian, as a torch optimizer."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

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
from ._paths import bucket, choose_path
from .base import Hyper
from .eventful import EventfulOptimizer, Participants
from .registry import register

__all__ = ["ECDSep"]


def _t(x: float) -> Tensor:
    return torch.tensor([x], dtype=torch.float64)


def _sum_sq(tensors: list[Tensor]) -> float:
    return float(sum(float((t * t).sum()) for t in tensors)) if tensors else 0.0


class ECDSep(EventfulOptimizer):
    r"""ECDSep: energy-conserving descent with H = log(s + |p|²) + η log(F − F₀).

    The :class:`~dynopt.systems.ECDSep` system's map ``"SBAR"`` on the whole model. With
    F̃ = ℓ + Σ_groups (wd/2)|θ|² at the current parameters, V = (F̃ − F₀)^η and E = V₀(s + δE)
    fixed on the first step (δE → 1 when s ≠ 1, as in the authors' code):

    * if F̃ ≤ F₀ or V ≤ ε₂: nothing;
    * p ← c p, c = √((E/V − s)/|p|²) (projection onto the energy shell);
    * p ← p − Δt·η(∇ℓ + wd·θ)/(F̃ − F₀);
    * θ ← θ + Δt·2p/(s + |p|²)  (so |Δθ| ≤ Δt/√s exactly);
    * p ← |p|·u/|u|, u = p/|p| + νz, z ~ N(0, I) from the optimizer's generator.

    All norms are global over groups and tensors; ``lr`` and ``weight_decay`` are read per group
    every step, so LR schedulers change Δt (the authors' ECDSep caches ``lr`` at construction);
    the energy E, |p|² and the generator are saved in the ``state_dict``. ECDSep needs the loss
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

    Reference: De Luca, Gatti & Silverstein, arXiv 2306.00352; gbdl/ECDSep.

    Args:
        params: Parameters or param groups.
        lr: Time step Δt > 0 (default 0.1).
        F0, eta, nu, s, delta_energy, consistent_energy, eps1, eps2: See the table and
            :class:`dynopt.systems.ECDSep`.
        weight_decay: wd ≥ 0 (per group), added to the objective as (wd/2)|θ|².
        seed: Seed of the rotation noise.
        events: Triggers with ``Stop`` actions.
        foreach: ``False`` selects the single-tensor reference path.
        maximize: Must be False: the energy needs the minimized objective's value.
        differentiable: Must be False (refused with a ValueError: the step reads the loss and
            global norms as Python floats, which autograd cannot follow).
        nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` for NaN/inf gradients.
    """

    supported_actions = (Stop,)
    needs_loss = True
    extras_keys = {"ecd": ECD_EXTRAS}
    prior_in_step = True  # F̃ = ℓ + Σ (wd/2)|θ|² enters the energy: added in _step

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
        #: The continuous system; it validates the hyperparameters and supplies the constants.
        self.system = ECDSepSystem(None, F0=F0, eta=eta, s=s, nu=nu, delta_energy=delta_energy,
                                   consistent_energy=consistent_energy, eps1=eps1, eps2=eps2)
        self.constants = ECDConstants.from_op(self.system.lower("S", 0.0).f)
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
        reference = bool(parts) and all(
            choose_path(gr, ps + gs, "ECDSep") == "single" for gr, ps, gs in parts if ps)
        sq = _sum_sq if reference else self.norm2
        items = []  # (lr, wd, params, grads, moms)
        for group, ps, gs in parts:
            if ps:
                items.append((self.hyper(group, "lr"),
                              self.hyper(group, "weight_decay", check_nonnegative), ps, gs,
                              [self.momentum(p) for p in ps]))
        ftilde = float(loss) + sum(0.5 * wd * sq(ps) for _, wd, ps, _, _ in items if wd)
        fd = ftilde - c.f0
        moms = [m for *_, ms in items for m in ms]
        key = self.participation_key()
        cached = self.global_state.get("ps2_key") == key and "ps2" in self.global_state
        ps2 = float(self.global_state["ps2"]) if cached else sq(moms)
        if len(self._events):
            values = {"loss": as_scalar(loss, device)}
            if self._events.needs("energy"):
                energy = (math.log(c.s + ps2) + c.eta * math.log(fd)) if fd > 0 else math.nan
                values["energy"] = as_scalar(energy, device)
            if self.run_events(values, device):
                return
        st = self._extras()

        def force(wd: float, p: Tensor, g: Tensor) -> Tensor:
            return g if wd == 0 else g + wd * p

        g2 = 0.0
        if not float(st["started"]):
            g2 = sq([force(wd, p, g) for _, wd, ps, gs, _ in items
                     for p, g in zip(ps, gs, strict=True)])
        dec = energy_ops.ecd_control(_t(fd), _t(ps2), _t(g2), st, c)
        if not bool(dec.active):
            return
        init = float(dec.init_coef) != 0.0
        for lr, wd, ps, gs, ms in items:  # init, projection, kick
            for p, g, m in zip(ps, gs, ms, strict=True):
                f = force(wd, p, g)
                if init:
                    m.copy_(-dec.init_coef.to(m) * f)
                m.mul_(dec.scale.to(m))
                energy_ops.scaled_kick_(m, f, lr, st["kick_rate"].to(m))
        p2 = sq(moms)
        for lr, _, ps, _, ms in items:  # drift with the global |p|²
            coef = lr * 2.0 / (c.s + p2)
            if reference:
                for p, m in zip(ps, ms, strict=True):
                    p.add_(m * torch.tensor([coef], dtype=m.dtype, device=m.device))
            else:
                for bp, bm in bucket(ps, ms).values():
                    torch._foreach_add_(bp, bm, alpha=coef)
        if p2 > 0.0 and nu > 0.0:
            self._rotate(moms, p2, nu, sq)
        self.global_state["ps2"] = sq(moms) if reference else p2
        self.global_state["ps2_key"] = key

    def _rotate(self, moms: list[Tensor], p2: float, nu: float, sq: Any) -> None:
        """p ← |p|·u/|u|, u = p/|p| + νz (one flat normal draw per device/dtype bucket).

        The norms are float64 torch scalars, so the single-tensor path performs exactly the
        arithmetic of the torch backend's ``ROTATE`` op.
        """
        pn = torch.sqrt(_t(p2))
        for (dev, dt), (ms,) in bucket(moms).items():
            z = torch.randn((sum(m.numel() for m in ms),), generator=self.generator(dev),
                            dtype=dt, device=dev)
            off = 0
            for m in ms:
                k = m.numel()
                m.copy_(m / pn.to(m) + nu * z[off:off + k].view_as(m))
                off += k
        scale = pn / torch.sqrt(_t(sq(moms)))
        for m in moms:
            m.mul_(scale.to(m))


@register("ecdsep")
def _make(model_or_params: Any, **kwargs: Any) -> ECDSep:
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else (
        model_or_params)
    return ECDSep(params, **kwargs)
