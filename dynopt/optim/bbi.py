"""BBI: Born–Infeld energy-conserving descent as a torch optimizer."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..backends.torch import energy_ops
from ..backends.torch.energy_ops import BBIConstants
from ..events.actions import Action, Bounce, Stop
from ..events.triggers import Trigger
from ..program import BBI_EXTRAS
from ..systems.born_infeld import BornInfeld
from ._events import as_scalar
from ._paths import bucket, choose_path
from .base import Hyper
from .bound import bbi_bounded
from .eventful import EventfulOptimizer, Participants
from .fused import kick_drift
from .registry import register

__all__ = ["BBI"]


#: ``opt.__dict__`` key of the shell logic's result computed by
#: :func:`~dynopt.optim.bound.bbi_bounded` on a copy of the state, as ``(inputs, new state,
#: decision)``: the step adopts it instead of running the logic again when its inputs are the
#: same (:meth:`BBI._control_key`; a NaN in the state never compares equal, so it reruns).
TRIAL = "_bbi_trial"
#: ``opt.__dict__`` key of the host values of a step, ``((step, participation), loss, (loss
#: value, |Π|²))``, read by :meth:`BBI._host_inputs` in one transfer (in
#: :func:`~dynopt.optim.bound.bbi_bounded` when it runs, else in the step) and used by both.
READ = "_bbi_read"


def _t(x: float) -> Tensor:
    return torch.tensor([x], dtype=torch.float64)


class ShellSystem(EventfulOptimizer):
    """What BBI and ECDSep share: hyperparameters held by the continuous system
    (``self.system``), not by the param groups, and one momentum per parameter.

    The system's hyperparameters travel in the checkpoint as plain Python values,
    ``state_dict()["dynopt"]["system"]``, and ``load_state_dict`` restores them (validated as
    the constructor validates them), as torch restores the param groups' hyperparameters: a
    resumed run continues with the dynamics it was saved with, whatever the new optimizer was
    built with. A checkpoint written before they were recorded keeps the current values.
    """

    #: The system class, built as ``system_type(None, **hyperparameters)``.
    system_type: ClassVar[type[Any]]
    #: Its constructor arguments (= attributes) saved in the checkpoint.
    system_keys: ClassVar[tuple[str, ...]]
    #: The constants class of the system's shell op ``"S"`` (``from_op``).
    constants_type: ClassVar[type[Any]]

    def _set_system(self, system: Any) -> None:
        """Use ``system`` (built, and so validated, by ``system_type``) and its constants."""
        #: The continuous system; it validates the hyperparameters and supplies the constants.
        self.system = system
        self.constants = self.constants_type.from_op(system.lower("S", 0.0).f)

    def _cached_ps2(self, key: list[list[int]]) -> Any:
        """The |Π|² the previous step left (``global_state["ps2"]``) if the same parameters
        take part now (``global_state["ps2_key"] == key``; a checkpoint's entries are checked
        at load), else None (compute it)."""
        glob = self.global_state
        return glob.get("ps2") if glob.get("ps2_key") == key else None

    def system_hyperparameters(self) -> dict[str, Any]:
        """The system's hyperparameters, as saved in ``state_dict()["dynopt"]["system"]``."""
        return {k: getattr(self.system, k) for k in self.system_keys}

    def _extra_state(self) -> dict[str, Any]:
        return {**super()._extra_state(), "system": self.system_hyperparameters()}

    def _saved_system(self, state_dict: Any) -> Any:
        """The system the checkpoint was saved with, built from its ``dynopt["system"]`` entry
        (None for a checkpoint without one); ValueError/TypeError naming the entry if it is
        malformed or a value is one the constructor refuses."""
        extra = state_dict.get("dynopt") if isinstance(state_dict, Mapping) else None
        saved = extra.get("system") if isinstance(extra, Mapping) else None
        if saved is None:
            return None
        where = "cannot load the checkpoint: dynopt['system']"
        if not isinstance(saved, Mapping) or set(saved) != set(self.system_keys):
            raise ValueError(f"{where} must hold exactly {list(self.system_keys)}, got "
                             f"{sorted(saved) if isinstance(saved, Mapping) else saved!r}; the "
                             "optimizer was left unchanged")
        try:
            return self.system_type(None, **saved)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{where}: {err}; the optimizer was left unchanged") from None

    def _refuse_checkpoint(self, state_dict: dict[str, Any]) -> None:
        super()._refuse_checkpoint(state_dict)
        self._saved_system(state_dict)

    def _after_load(self, state_dict: dict[str, Any]) -> None:
        super()._after_load(state_dict)
        system = self._saved_system(state_dict)
        if system is not None:
            self._set_system(system)



class BBI(ShellSystem):
    r"""BBI (Born–Infeld inflation-inspired) energy-conserving descent.

    The :class:`~dynopt.systems.BornInfeld` system's map ``"SBA"`` on the whole model: with the
    loss ℓ at the current parameters, V = ℓ − v₀ and E₀ = V(θ₀) + δE fixed on the first step,

    * if V ≤ ε₂: nothing (frozen once the loss reaches v₀);
    * a bounce step (after T₀, 2T₀, …, N_b·T₀ non-bounce steps, or T₁ steps without a new
      minimum of V): Π gets a random direction with the same norm, θ does not move;
    * otherwise: Π ← rΠ (projection onto V(V + |Π|²) = E₀²), Π ← Π − Δt·½(V/E₀ + E₀/V)∇ℓ,
      θ ← θ + Δt·(V/E₀)·Π.

    Every norm is global over all parameter groups and tensors (the authors' code normalises
    the initial momentum per tensor and projects per group; neither is reproduced), parameters
    without a gradient are left out of the step (and of |Π|²), ``lr`` is read every step (LR
    schedulers change Δt; a group's ``lr`` is its own Δt), bounce directions come from the
    optimizer's generator (reproducible from ``seed``, saved in the ``state_dict``), and E₀, the
    counters and |Π|² are optimizer state saved in the ``state_dict`` (``global_state["bbi"]``).
    The hyperparameters ``v0`` … ``bounce_direction`` are saved in it too
    (``state_dict()["dynopt"]["system"]``) and ``load_state_dict`` restores them, as torch
    restores the param groups' (:class:`ShellSystem`).

    BBI needs the loss value on the host every step (one synchronisation on CUDA): call
    ``step(closure)`` or ``step(loss=loss)`` after ``loss.backward()`` (the authors' usage,
    ``step(lambda: loss)``, works too).

    | paper | here | authors' ``BBI`` kwarg | default |
    |---|---|---|---|
    | Δt | ``lr`` | ``lr`` | 0.1 (authors: required) |
    | ΔV | ``v0`` | ``v0`` | 0 |
    | δE | ``delta_energy`` | ``deltaEn`` | 0 |
    | T₀ | ``t0`` | ``threshold0`` | 1000 |
    | N_b | ``n_bounces`` | ``n_fixed_bounces`` | 1 |
    | T₁ | ``t1`` | ``threshold`` | 3000 |
    | – | ``consistent_energy`` | ``consEn`` | True |
    | ε₁, ε₂ | ``eps1``, ``eps2`` | ``eps1``, ``eps2`` | 1e-10, 1e-40 |
    | Π | ``state[θ]["momentum"]`` | ``momentum_buffer`` | |

    Reference: De Luca, Gatti & Silverstein, ICML 2022 (arXiv 2201.11137); gbdl/BBI.

    Args:
        params: Parameters or param groups.
        lr: Time step Δt > 0 (float, tensor or schedule; default 0.1).
        v0: The shift ΔV (expected minimum of the loss).
        delta_energy: Extra initial energy δE ≥ 0.
        t0: Steps between fixed bounces (None: never).
        n_bounces: Number of fixed bounces N_b ≥ 0 (0: none; the authors' code does one).
        t1: Steps without a new minimum before a progress bounce (None: never).
        consistent_energy: Project onto the energy shell every step.
        eps1: Projection tolerance on |Π|².
        eps2: Freeze threshold on V.
        seed: Seed of the bounce generator.
        weight_decay: λ ≥ 0 per group: the Gaussian prior λ|θ|²/2 is added to the loss (so
            V = ℓ + λ|θ|²/2 − v₀) and λθ to its gradient.
        bounce_direction: ``"cube"`` (the authors') or ``"sphere"``.
        events: Triggers with ``Bounce`` (a bounce step) or ``Stop`` actions.
        foreach, fused: Path selection (default: fused numba kernel on CPU, foreach on CUDA).
        maximize: Must be False: the energy needs the minimized objective's value.
        differentiable: Must be False (refused with a ValueError: the step reads the loss and
            global norms as Python floats, which autograd cannot follow).
        nonfinite: ``"raise"``, ``"skip"`` or ``"ignore"`` for NaN/inf gradients.
    """

    supported_actions = (Bounce, Stop)
    needs_loss = True
    extras_keys = {"bbi": BBI_EXTRAS}
    system_type = BornInfeld
    system_keys = ("v0", "delta_energy", "t0", "n_bounces", "t1", "consistent_energy", "eps1",
                   "eps2", "bounce_direction")
    constants_type = BBIConstants

    def __init__(
        self,
        params: Iterable[Any],
        lr: Hyper = 0.1,
        v0: float = 0.0,
        delta_energy: float = 0.0,
        t0: int | None = 1000,
        n_bounces: int = 1,
        t1: int | None = 3000,
        consistent_energy: bool = True,
        eps1: float = 1e-10,
        eps2: float = 1e-40,
        seed: int | None = None,
        *,
        weight_decay: float = 0.0,
        bounce_direction: str = "cube",
        events: Iterable[Trigger] | Trigger | None = None,
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        self._set_system(BornInfeld(None, v0=v0, delta_energy=delta_energy, t0=t0,
                                    n_bounces=n_bounces, t1=t1,
                                    consistent_energy=consistent_energy, eps1=eps1, eps2=eps2,
                                    bounce_direction=bounce_direction))
        defaults = {"lr": lr, "weight_decay": weight_decay, "foreach": foreach, "fused": fused,
                    "maximize": maximize,
                    "differentiable": differentiable}
        super().__init__(params, defaults, events=events, seed=seed, nonfinite=nonfinite)

    def system_hyperparameters(self) -> dict[str, Any]:
        out = super().system_hyperparameters()
        for k in ("t0", "t1"):  # the system holds "never" as inf and counts as floats
            out[k] = None if math.isinf(out[k]) else int(out[k])
        return out

    def _apply_action(self, action: Action) -> None:
        if isinstance(action, Bounce):
            self.global_state["bounce_request"] = True

    @property
    def energy(self) -> float:
        """E₀ (NaN before the first active step)."""
        st = self.global_state.get("bbi")
        return float(st["E0"]) if st is not None and float(st["started"]) else float("nan")

    # --- the step -----------------------------------------------------------------------------
    def _extras(self) -> dict[str, Tensor]:
        st = self.global_state.get("bbi")
        if st is None:
            st = self.global_state["bbi"] = {k: _t(0.0) for k in BBI_EXTRAS}
            st["min_V"].fill_(float("inf"))
        return st

    @staticmethod
    def _reference(parts: Participants) -> bool:
        """Whether every participating group runs the single-tensor reference path."""
        return bool(parts) and all(
            choose_path(gr, ps + gs, "BBI") == "single" for gr, ps, gs in parts if ps)

    _result_bounded = bbi_bounded  # the snapshot-free result check
    #: The shell logic's reusable result is step scratch: a copy starts without it.
    _caches: ClassVar[dict[str, Callable[[], Any]]] = {TRIAL: lambda: None,
                                                       READ: lambda: None}

    def _control_key(self, v: float, ps2: float, g2: float, forced: bool,
                     st: dict[str, float]) -> tuple[Any, ...]:
        """Everything the shell logic (``energy_ops.bbi_control``, a pure function) reads, with
        BBI's state ``st`` as read by :func:`read_extras`: equal keys give equal results, so a
        run of it can be reused (see :data:`TRIAL`)."""
        return (v, ps2, g2, forced, id(self.constants), tuple(st.items()))

    def _host_inputs(self, loss: Any, moms: list[Tensor], reference: bool
                     ) -> tuple[float, float]:
        """(the loss, |Π|²) as Python floats, the host values the shell logic reads, in one
        device-to-host transfer (the step's one host synchronisation on a GPU).

        |Π|² is the previous step's (kept on the device, ``global_state["ps2"]``) if the same
        parameters take part, else computed (on the device except on the reference path).
        Read once per step: :func:`~dynopt.optim.bound.bbi_bounded` reads them first when it
        runs, and the step then uses its values (same loss object, same step)."""
        key = self.participation_key()
        tag = (self.step_count, key)
        read = self.__dict__.get(READ)
        if read is not None and read[0] == tag and (read[1] is loss or (
                not isinstance(loss, Tensor) and read[1] == loss)):
            return read[2]
        ps2: Any = self._cached_ps2(key)
        if ps2 is None:
            ps2 = _sum_sq_wide(moms) if reference else self.norm2_tensor(
                moms, moms[0].device if moms else torch.device("cpu"))
        values = _to_host([loss.detach() if isinstance(loss, Tensor) else loss, ps2])
        out = (values[0], values[1])
        self.__dict__[READ] = (tag, loss, out)
        return out

    @torch.compiler.disable  # host-driven (energy, bounces): nothing for a compiler to fuse
    def _step(self, loss: Any, parts: Participants) -> None:
        # every group's lr first: a refused one (set between steps) leaves everything unwritten,
        # also under nonfinite="ignore", where no snapshot undoes a half-done step
        lrs = [self.hyper(group, "lr") if ps else 0.0 for group, ps, _ in parts]
        c = self.constants
        device = self.device_of(parts)
        params = [p for _, ps, _ in parts for p in ps]
        grads = [g for _, _, gs in parts for g in gs]
        moms = self._momenta(params)
        reference = self._reference(parts)
        loss_value, ps2 = self._host_inputs(loss, moms, reference)
        self.__dict__.pop(READ, None)
        v = loss_value - c.v0
        if len(self._events):
            values = {"loss": as_scalar(loss, device)}
            if self._events.needs("energy"):
                values["energy"] = as_scalar(max(v * (v + ps2), 0.0) ** 0.5, device)
            if self.run_events(values, device):
                return
        st = self._extras()
        now = read_extras(st)  # the shell logic runs on Python floats (one chain)
        g2 = 0.0
        if not now["started"] and v > c.eps2:
            g2 = _sum_sq_wide(grads) if reference else self.norm2(grads)
        forced = bool(self.global_state.pop("bounce_request", False))
        trial = self.__dict__.pop(TRIAL, None)
        if trial is not None and trial[0] == self._control_key(v, ps2, g2, forced, now):
            now = trial[1]  # the shell logic already ran on these inputs (bbi_bounded)
            dec = trial[2]
        else:
            dec = energy_ops.bbi_control(v, ps2, g2, now, c, force=forced)
        write_extras(st, now)
        if not v > c.eps2:
            return
        if float(dec.init_coef) != 0.0:  # first step: start along −∇ℓ
            for m, g in zip(moms, grads, strict=True):
                m.copy_(-scalar_like(dec.init_coef, g) * g)
        key = self.participation_key()
        if bool(dec.bounce):
            self._bounce(moms, float(dec.ps2), reference)
            self.global_state["ps2"] = (_sum_sq_wide(moms) if reference
                                        else self.norm2_tensor(moms, device))
            self.global_state["ps2_key"] = key
            return
        r = float(dec.scale)
        kick, drift = now["kick_rate"], now["drift_rate"]
        # |Π|² for the next step: a float from the fused and reference paths, a float64 tensor
        # left on the device by the foreach path (read with the next loss, one transfer)
        new_ps2: Any = 0.0
        for (group, ps, gs), lr in zip(parts, lrs, strict=True):
            if not ps:
                continue
            ms = self._momenta(ps)
            path = choose_path(group, ps + gs + ms, "BBI")
            if path == "fused":
                new_ps2 += kick_drift(ps, gs, ms, r, lr * kick, lr * drift, want_sums=True)
            elif path == "foreach":
                for bp, bg, bm in bucket(ps, gs, ms).values():
                    torch._foreach_mul_(bm, r)
                    torch._foreach_add_(bm, bg, alpha=-lr * kick)
                    torch._foreach_add_(bp, bm, alpha=lr * drift)
                new_ps2 = new_ps2 + self.norm2_tensor(ms, device)
            else:  # the system's ops, as the torch backend runs them
                for p, g, m in zip(ps, gs, ms, strict=True):
                    m.mul_(scalar_like(dec.scale, m))
                    energy_ops.scaled_kick_(m, g, lr, scalar_like(st["kick_rate"], m))
                    energy_ops.scaled_drift_(p, m, lr, scalar_like(st["drift_rate"], m), 1.0)
                new_ps2 += _sum_sq_wide(ms)
        self.global_state["ps2"] = new_ps2
        self.global_state["ps2_key"] = key

    def _bounce(self, moms: list[Tensor], ps2: float, reference: bool) -> None:
        """New random directions (one flat draw per device/dtype bucket), same global |Π|."""
        draws = []
        for (dev, dt), (ms,) in bucket(moms).items():
            n = sum(m.numel() for m in ms)
            u = energy_ops.bounce_direction((n,), self.generator(dev), dt, dev,
                                            self.constants.cube)
            draws.append((ms, u))
        us = [u for _, u in draws]
        u2 = _sum_sq(us) if reference else self.norm2_tensor(us, us[0].device)
        for ms, u in draws:
            # on the device: a fill and a division (no host copy, no host read of |u|²)
            target = torch.full((1,), ps2, dtype=torch.float64, device=u.device)
            u2_here = u2.to(u.device) if isinstance(u2, Tensor) else u2
            scale = (target / u2_here).sqrt().to(u)
            off = 0
            for m in ms:
                k = m.numel()
                m.copy_((u[off:off + k] * scale).view_as(m))
                off += k


def _to_host(values: list[Any]) -> list[float]:
    """Numbers and 1-element tensors as Python floats, the device tensors among them fetched
    in one transfer (stacked as float64, which holds every float32/float16/bfloat16 value
    exactly: the same floats as ``float()`` of each)."""
    on_device = [i for i, x in enumerate(values)
                 if isinstance(x, Tensor) and x.device.type != "cpu"]
    fetched: dict[int, float] = {}
    if on_device:
        dev = values[on_device[0]].device
        got = torch.stack([values[i].reshape(()).to(device=dev, dtype=torch.float64)
                           for i in on_device]).tolist()
        fetched = dict(zip(on_device, got, strict=True))
    return [fetched[i] if i in fetched else float(x) for i, x in enumerate(values)]


def _sum_sq_wide(tensors: list[Tensor]) -> float:
    """Σ|t|² over ``tensors`` as a Python float: BBI's |Π|² and |∇ℓ|² on the reference path.

    Each tensor's squares are summed in float64 (:func:`energy_ops._sum_sq64` on the flat
    tensor), the torch backend's reduction of these per-chain scalars, so that the reference
    path performs ``integrate(backend="torch")``'s arithmetic in float32 too (a float32 sum
    made every projection factor differ from the backend's in its last bits) and a float32 |Π|²
    does not overflow once |Π| > 1.8e19 (near the floor v₀).
    """
    total = 0.0
    for t in tensors:
        if t.dtype in (torch.float32, torch.float64):
            total += float(energy_ops._sum_sq64(t.reshape(1, -1)))
        else:
            total += float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2
    return total


def _sum_sq(tensors: list[Tensor]) -> float:
    """Σ|t|² over ``tensors``, summed over tensors as a Python float (float64): the reference
    path's |u|² of a bounce direction (and ECDSep's norms).

    A float32/float64 tensor is reduced as the torch backend reduces it, ``(t*t).sum()`` in its
    own dtype, so that the reference path performs the backend's arithmetic bit for bit. Any
    other dtype (float16, bfloat16) is reduced in float64: its squares would underflow (|t| <
    2.4e-4 in float16) and their sum overflow (> 65504) although |t| itself fits.
    """
    total = 0.0
    for t in tensors:
        if t.dtype in (torch.float32, torch.float64):
            total += float((t * t).sum())
        else:
            total += float(torch.linalg.vector_norm(t, dtype=torch.float64)) ** 2
    return total


def scalar_like(x: Tensor | float, t: Tensor) -> Tensor:
    """The 1-element ``x`` (or a float, taken as a float64 one) as a 0-dim tensor of ``t``'s
    dtype and device: a coefficient of the reference path's in-place ops, which broadcasts with
    every shape, 0-dim parameters included (a shape-(1,) one cannot be written into a 0-dim
    tensor). A float is rounded to ``t``'s dtype by the same float64 → dtype conversion."""
    if not isinstance(x, Tensor):
        x = torch.tensor([x], dtype=torch.float64)
    return x.to(t).reshape(())


def read_extras(st: Mapping[str, Tensor]) -> dict[str, float]:
    """BBI's state (``global_state["bbi"]``, 1-element tensors) as Python floats, the input of
    the shell logic's float path (``energy_ops.bbi_control``); fresh float objects on every
    call, so that a NaN never compares equal to an earlier read (:meth:`BBI._control_key`)."""
    return {k: float(t) for k, t in st.items()}


def write_extras(st: Mapping[str, Tensor], values: Mapping[str, float]) -> None:
    """Store the shell logic's new state ``values`` (floats) into BBI's state tensors."""
    for k, x in values.items():
        st[k].fill_(x)


@register("bbi")
def _make(model_or_params: Any, **kwargs: Any) -> BBI:
    params = model_or_params.parameters() if isinstance(model_or_params, torch.nn.Module) else (
        model_or_params)
    return BBI(params, **kwargs)
