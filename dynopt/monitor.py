r"""A training monitor: the observables of ``integrate(..., observables=...)`` during an ordinary
training loop with any optimizer, into the same :class:`~dynopt.Trajectory` (one chain).

Usage::

    mon = TrainingMonitor(model, opt, loss_fn, (x_train, y_train), every=100)
    for xb, yb in loader:
        opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()
        mon.step()                       # after every optimizer step
    traj = mon.trajectory()              # extras: loss, kinetic:<layer>, grad2:<layer>, ...
    dynopt.observables.layer_temperatures(traj)

At a record step the monitor reads θ (``parameters_to_vector``) and the optimizer's momenta,
evaluates the observables with a :class:`~dynopt.potentials.NetworkLoss` of the full training
data (the same code as ``integrate()``) and keeps the results on the device: nothing is
synchronized with the host until :meth:`TrainingMonitor.trajectory`. Between records
:meth:`step` only increments a counter. The observables never touch the model's parameters,
``.grad``, the optimizer or the global RNG (Hutchinson probes come from their own keyed
generators), so training is bit-identical with and without the monitor (tested).

Momenta p (for kinetic energies and temperatures), per optimizer:

* dynopt ``Partitioned`` family (Langevin, AdLaLa, ...): p = ``state[θ]["momentum_buffer"]``
  (the optimizer form's momentum, which carries BAOAB's extra half kick), mass = the group's
  ``mass``;
* dynopt ``HeavyBall``, ``BBI``, ``ECDSep``: p = ``state[θ]["momentum"]``, mass 1;
* ``torch.optim.SGD(lr=η, momentum=μ > 0, dampening=d)``: p = −(η/h)·``momentum_buffer`` with
  h = √(η(1 − d)), mass 1;
* anything else (Adam, plain SGD, Nesterov SGD, ...): no momenta, no kinetic observables.

The SGD reading is the heavy-ball reading of :class:`~dynopt.optim.HeavyBall` (SGD(lr=h²,
momentum=1 − γh) with b = −p/h), so θₖ₊₁ − θₖ = h pₖ₊₁: p is the velocity in units of the
time step h. Thermostats of dynopt optimizers are recorded as ``xi:group<i>`` (the group's ξ,
the mean over tensors for ``scope="tensor"``).

Curvature: with ``curvature_every=K`` every K-th record also stores λ_max of the loss's
full-batch Hessian (:func:`~dynopt.diagnostics.model_top_eigenvalue`, a host synchronization and
~20 Hessian-vector products) as ``lambda_max`` and the optimizer's current linear stability
limit on that curvature (:func:`~dynopt.diagnostics.optimizer_stability_limit`, which accounts
for the optimizer's own weight decay and prior) as ``stability_limit`` (NaN in the other
records). The monitor's ``weight_decay`` (the prior of its ``potential``) is not added to
λ_max: the optimizer's limit already accounts for the prior the optimizer applies.

| symbol | code |
|---|---|
| U | ``potential`` (``NetworkLoss(model, loss_fn, data, weight_decay=...)``) |
| p, M | momenta and masses from the optimizer (table above) |
| λ_max, λ_c | ``lambda_max``, ``stability_limit`` |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._modes import eval_mode
from ._validation import check_int, check_positive
from .trajectory import Trajectory

__all__ = ["TrainingMonitor"]

#: Observables recorded by default (``layer_kinetic`` only when the optimizer has momenta).
DEFAULT_OBSERVABLES = ("loss", "layer_kinetic", "layer_configurational")


class TrainingMonitor:
    """Record observables of a training run every ``every`` optimizer steps.

    Args:
        model: The trained model (its forward must be pure: eval-mode BatchNorm/Dropout).
        optimizer: Any ``torch.optim.Optimizer`` over (a subset of) ``model``'s parameters.
        loss_fn: ``loss_fn(output, target)``, a batch mean.
        data: Full training ``(x, y)``: the potential U of the observables.
        every: Steps between records (≥ 1); the state at construction is record 0.
        observables: What :func:`dynopt.observables.names.resolve` accepts (default:
            loss, per-layer kinetic energy if the optimizer has momenta, per-layer
            configurational temperature).
        heldout: Optional held-out ``(x, y)`` (for the ``"heldout_loss"`` observable).
        weight_decay: λ of U's prior term λ|θ|²/2.
        curvature_every: Record λ_max and the stability limit every this many records
            (None: never).
        curvature_tol: Lanczos tolerance for λ_max.

    Raises:
        TypeError: A non-module model or a non-optimizer.
        ValueError: ``every``/``curvature_every`` < 1, or kinetic observables with an
            optimizer that has no momenta (the message names it).
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[Any, Any], torch.Tensor], data: tuple[Any, Any], *,
                 every: int = 100, observables: Any = None, heldout: tuple[Any, Any] | None = None,
                 weight_decay: float = 0.0, curvature_every: int | None = None,
                 curvature_tol: float = 1e-4) -> None:
        from .observables.names import resolve
        from .observables.recorder import Recorder
        from .potentials import NetworkLoss
        from .stepping import State
        from .systems import Hamiltonian, OverdampedLangevin

        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.every = check_int("every", every, minimum=1)
        self.curvature_every = (None if curvature_every is None
                                else check_int("curvature_every", curvature_every, minimum=1))
        self.curvature_tol = check_positive("curvature_tol", curvature_tol)
        self.model, self.optimizer, self.loss_fn, self.data = model, optimizer, loss_fn, data
        self.weight_decay = float(weight_decay)
        self.params = list(model.parameters())
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if not any(id(p) in held for p in self.params):  # momenta and limits would be empty
            raise ValueError(f"the optimizer ({type(optimizer).__name__}) holds none of the "
                             "model's parameters; pass the optimizer that trains this model")
        with eval_mode([model]):  # evaluated in eval mode (_record): dropout/batch norm allowed
            self.potential = NetworkLoss(model, loss_fn, data, weight_decay=weight_decay,
                                         heldout=heldout)
        self._kind = _momentum_kind(optimizer)
        has_p = self._kind is not None
        items = resolve(list(DEFAULT_OBSERVABLES) if observables is None else observables)
        from .observables import LayerKinetic

        if not has_p:
            if observables is not None and any(isinstance(o, LayerKinetic) for o in items):
                raise ValueError(f"observables asks for per-layer kinetic energies, but "
                                 f"{type(optimizer).__name__} keeps no momenta")
            items = [o for o in items if not isinstance(o, LayerKinetic)]
        from .observables import Loss

        # U has no prior term: the "loss" record equals the "potential" one, computed once
        self._loss_alias = self.weight_decay == 0 and any(isinstance(o, Loss) for o in items)
        if self._loss_alias:
            items = [o for o in items if not isinstance(o, Loss)]
        mass = self._mass_vector() if has_p else None
        self.system = (Hamiltonian(self.potential, mass=mass) if has_p
                       else OverdampedLangevin(self.potential, temperature=0.0))
        self._State = State
        self.n_steps = 0
        self._records: list[int] = []
        self._curv: list[tuple[float, float]] = []
        state = self._state()
        # keys this monitor writes after the observables: an observable of the same name was
        # silently overwritten by them (refused now, at the first record below)
        reserved = {}
        if self.curvature_every is not None:
            reserved["lambda_max"] = "TrainingMonitor's curvature, with curvature_every"
            reserved["stability_limit"] = "TrainingMonitor's stability limit, with curvature_every"
        if self._loss_alias:
            reserved["loss"] = "TrainingMonitor's copy of the potential, with the 'loss' observable"
        self.recorder = Recorder(items, self.system, state, 16, reserved=reserved,
                                 reserved_prefixes={"xi:group": "TrainingMonitor's thermostats"})
        self.recorder.extras = []  # the monitor system has no extras; thermostats come below
        self.items = items
        self._record(state)

    # --- reading the optimizer ---------------------------------------------------------------
    def _groups(self) -> dict[int, dict[str, Any]]:
        out = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                out[id(p)] = group
        return out

    def _mass_vector(self) -> np.ndarray:
        from .optim.partitioned import Partitioned

        groups = self._groups()
        parts = []
        for p in self.params:
            g = groups.get(id(p))
            m = 1.0
            if isinstance(self.optimizer, Partitioned) and g is not None:
                m = float(self.optimizer._spec(g).mass)
            parts.append(np.full(p.numel(), m))
        return np.concatenate(parts)

    def _momenta(self, dtype: torch.dtype) -> torch.Tensor:
        groups = self._groups()
        chunks = []
        self._without_momentum = set()
        for p in self.params:
            st = self.optimizer.state.get(p, {})
            buf = st.get(self._kind) if self._kind else None
            if buf is None or id(p) not in groups:
                self._without_momentum.add(id(p))
                chunks.append(torch.zeros(p.numel(), dtype=dtype, device=p.device))
                continue
            v = buf.detach().reshape(-1).to(dtype)
            if isinstance(self.optimizer, torch.optim.SGD):
                g = groups[id(p)]
                lr = float(g["lr"])
                h = math.sqrt(lr * (1.0 - float(g.get("dampening", 0.0))))
                v = v * (-lr / h) if h > 0 else torch.zeros_like(v)  # lr = 0: no motion
            chunks.append(v)
        return torch.cat(chunks).unsqueeze(0)

    def _state(self) -> Any:
        theta = torch.nn.utils.parameters_to_vector([p.detach() for p in self.params])
        q = theta.unsqueeze(0)
        p = (self._momenta(q.dtype) if self._kind is not None
             else torch.zeros((1, 0), dtype=q.dtype, device=q.device))
        x = torch.zeros((1, 0), dtype=q.dtype, device=q.device)
        return self._State(q=q, p=p, x=x, step=self.n_steps, seed=0, backend="torch")

    # --- recording ---------------------------------------------------------------------------
    def step(self) -> None:
        """Call after every ``optimizer.step()``; records every ``every`` steps."""
        self.n_steps += 1
        if self.n_steps % self.every == 0:
            self._record(self._state())

    def _record(self, state: Any) -> None:
        rec = self.recorder
        r = len(self._records)
        if r >= rec.n_records:  # grow the preallocated buffers
            new = 2 * rec.n_records
            for key, buf in rec.buffers.items():
                pad = torch.full((buf.shape[0], new - buf.shape[1], *buf.shape[2:]),
                                 float("nan") if buf.is_floating_point() else 0,
                                 dtype=buf.dtype, device=buf.device)
                rec.buffers[key] = torch.cat([buf, pad], 1)
            rec.n_records = new
        rec.start_step, rec.every = 0, self.every
        # U is the network in eval mode (the loop may be in model.train(): dropout, batch norm)
        with torch.no_grad(), eval_mode([self.model]):
            rec.record(r, state, self.system)
            self._blank_kinetic(r)
            for key, val in self._thermostats().items():
                buf = rec.buffers.get(key)
                if buf is None:
                    buf = torch.full((1, rec.n_records), float("nan"), dtype=torch.float64,
                                     device=val.device)
                    rec.buffers[key] = buf
                buf[0, r] = val
        self._records.append(self.n_steps)
        if self.curvature_every is not None and r % self.curvature_every == 0:
            with eval_mode([self.model]):
                self._curv.append(self._curvature())
        else:
            self._curv.append((math.nan, math.nan))
        self.last_state = state

    def _blank_kinetic(self, r: int) -> None:
        """NaN, not 0, for the kinetic energy of a layer none of whose parameters has a
        momentum (LOL's overdamped layers; before a group's first step): its temperature is
        undefined, not zero. H counts the layers that have momenta."""
        none = self.__dict__.get("_without_momentum", set())
        if not none:
            return
        for name, ps in self._layer_params().items():
            buf = self.recorder.buffers.get(f"kinetic:{name}")
            if buf is not None and all(id(p) in none for p in ps):
                buf[0, r] = float("nan")

    def _layer_params(self) -> dict[str, list[torch.Tensor]]:
        """The model's parameters per layer of the potential (by their flat offsets)."""
        out: dict[str, list[torch.Tensor]] = {}
        offsets, off = [], 0
        for p in self.params:
            offsets.append((off, p))
            off += p.numel()
        for name, sl in self.potential.layers.items():
            out[name] = [p for o, p in offsets if sl.start <= o < sl.stop]
        return out

    def _thermostats(self) -> dict[str, torch.Tensor]:
        from .optim.partitioned import Partitioned

        if not isinstance(self.optimizer, Partitioned):
            return {}
        out = {}
        for gi, d in enumerate(self.optimizer.diagnostics()):
            if d.get("xi") is not None:
                out[f"xi:group{gi}"] = torch.as_tensor(d["xi"], dtype=torch.float64)
        return out

    def _curvature(self) -> tuple[float, float]:
        from .diagnostics import model_top_eigenvalue, optimizer_stability_limit

        # the loss's curvature: the limit below already accounts for the optimizer's prior
        lam = model_top_eigenvalue(self.model, self.loss_fn, self.data,
                                   tol=self.curvature_tol).value
        lim = optimizer_stability_limit(self.optimizer).lam
        return lam, math.nan if lim is None else lim

    def trajectory(self) -> Trajectory:
        """The records so far as a :class:`~dynopt.Trajectory` with one chain.

        ``t`` holds the optimizer step of each record (``h = 1``); ``extras`` hold
        ``potential``, ``kinetic``, every observable, thermostats ``xi:group<i>`` and, with
        ``curvature_every``, ``lambda_max`` and ``stability_limit``.
        """
        n = len(self._records)
        traj = self.recorder.trajectory(
            n, t=np.asarray(self._records, dtype=float), h=1.0, record_every=self.every,
            seed=0, backend="torch", system=self.system, integrator=None,
            final_state=self.last_state)
        if self._loss_alias:
            traj.extras["loss"] = traj.extras["potential"].copy()
        if self.curvature_every is not None:
            arr = np.asarray(self._curv, dtype=float)
            traj.extras["lambda_max"] = arr[None, :, 0]
            traj.extras["stability_limit"] = arr[None, :, 1]
        return traj


def _momentum_kind(optimizer: torch.optim.Optimizer) -> str | None:
    """The optimizer-state key holding momenta (None: the optimizer keeps none)."""
    from .optim import BBI, ECDSep, HeavyBall
    from .optim.partitioned import Partitioned

    if isinstance(optimizer, Partitioned):
        has = any(optimizer._spec(g).has_momentum for g in optimizer.param_groups)
        return "momentum_buffer" if has else None
    if isinstance(optimizer, HeavyBall | BBI | ECDSep):
        return "momentum"
    if type(optimizer) is torch.optim.SGD:
        if any(g.get("nesterov") for g in optimizer.param_groups):
            return None
        return "momentum_buffer" if any(g.get("momentum", 0) > 0
                                        for g in optimizer.param_groups) else None
    return None
