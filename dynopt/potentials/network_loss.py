r"""A network's training loss as a potential: U(θ) over all chains in one vectorized call.

.. math:: U(\theta) = \frac{1}{|S|}\sum_{i\in S} \ell\big(f_\theta(x_i), y_i\big)
          + \frac{\lambda}{2}\,|\theta|^2,

with S the whole training set (full batch) or minibatch k of a counter-based stream
(:mod:`dynopt.potentials.minibatch`). ``loss_fn`` returns the *mean* loss of a batch (PyTorch's
default ``reduction="mean"``), so U is the mean loss and the Gibbs density exp(−U/τ) is the
Bayesian posterior of the summed loss at temperature τ·n with the Gaussian prior N(0, τ/λ) per
weight (λ = ``weight_decay``, the same λθ that ``torch.optim``'s ``weight_decay`` adds).

θ is the flat vector in the layout of ``torch.nn.utils.parameters_to_vector(model.parameters())``
(so a run can start from exactly that vector); :meth:`NetworkLoss.unflatten` and
:meth:`NetworkLoss.flatten` convert between flat vectors and the model's named parameters and
:attr:`NetworkLoss.layers` gives each parameter tensor's slice of θ.

Batched evaluation: q of shape ``(..., dim)`` is evaluated with ``torch.func.functional_call``
under ``torch.func.vmap`` (gradients with ``torch.func.grad_and_value``, Hessian-vector products
as the gradient of ∇U·z): all chains in one call, no Python loop over chains.
The model object is only the function; parameters come from q (in q's dtype and device) and the
buffers and data are copied once per (dtype, device).

| symbol | code |
|---|---|
| f_θ, ℓ | ``model``, ``loss_fn`` |
| (x_i, y_i) | ``data`` (``heldout``: a second set, only evaluated, never trained on) |
| λ | ``weight_decay`` |
| b, k | ``batch_size``, the ``batch=`` index of :meth:`NetworkLoss.value` / ``grad`` |

Reference: the posterior reading of weight decay and the temperature convention: B. Leimkuhler,
C. Matthews, T. Vlaar, "Partitioned integrators for thermodynamic parameterization of neural
networks", Found. Data Sci. 1(4) (2019); Hutchinson, Commun. Stat. Simul. Comput. 18 (1989).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from .._validation import check_choice, check_int, check_nonnegative
from ._network_checks import check_data, check_model, probe
from .base import AbstractPotential, Array
from .batched_mlp import BatchedMLP
from .minibatch import BatchSchedule

__all__ = ["NetworkLoss"]

#: Evaluation paths: ``"auto"`` (the lean MLP path where it applies, else vmap), ``"vmap"``,
#: ``"mlp"`` (:mod:`dynopt.potentials.batched_mlp`, an error if it does not apply).
PATHS = ("auto", "vmap", "mlp")


class NetworkLoss(AbstractPotential):
    """The (minibatch) mean training loss of ``model`` plus λ|θ|²/2, as a potential of flat θ.

    Example:
        >>> import torch, dynopt
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(),
        ...                           torch.nn.Linear(8, 1))
        >>> x, y = torch.randn(64, 2), torch.randn(64, 1)
        >>> U = dynopt.potentials.NetworkLoss(net, torch.nn.functional.mse_loss, (x, y))
        >>> theta0 = torch.nn.utils.parameters_to_vector(net.parameters())
        >>> U.dim == theta0.numel()
        True
        >>> sys = dynopt.systems.Langevin(U, gamma=1.0, temperature=1e-3)
        >>> traj = dynopt.integrate(sys, "BAOAB", theta0, h=0.05, n_steps=10, n_chains=4,
        ...                         backend="torch", seed=0)

    Args:
        model: The network (its forward must be pure: ``model.eval()`` for BatchNorm/Dropout).
        loss_fn: ``loss_fn(output, targets) -> scalar`` mean loss of a batch.
        data: Training ``(inputs, targets)`` tensors, examples along the first axis.
        batch_size: Examples per minibatch; None (default) for the full-batch loss.
        weight_decay: λ ≥ 0 of the Gaussian prior term λ|θ|²/2.
        heldout: Optional held-out ``(inputs, targets)`` for :meth:`heldout_loss`.
        seed: Seed of the minibatch stream (≥ 0).
        path: ``"auto"`` (default): an ``nn.Sequential`` of ``Linear`` layers and elementwise
            activations on 2-D inputs is evaluated by the lean batched path of
            :mod:`dynopt.potentials.batched_mlp` (same function, less per-call overhead), any
            other model by ``functional_call`` under ``vmap``; ``"vmap"`` or ``"mlp"`` force one.
            Hessian-vector products take the same path (the lean path's exact forward-over-
            reverse products, or ``vmap`` of torch's).

    Raises:
        TypeError: A non-module model, a non-callable loss, non-tensor data or a non-floating
            parameter (the message names it).
        ValueError: Dropout/BatchNorm in training mode, a forward that changes buffers, inputs
            that do not fit the model, a non-scalar loss, with ``batch_size`` a loss that sums
            over the batch, a model that ``torch.func.vmap`` cannot evaluate (an RNN, a random
            forward), a bad ``batch_size``/``weight_decay``/``seed``.
    """

    name: ClassVar[str] = "network-loss"
    #: Backends that can integrate this potential (the numba kernel cannot call a torch model).
    backends: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data: tuple[torch.Tensor, torch.Tensor],
        *,
        batch_size: int | None = None,
        weight_decay: float = 0.0,
        heldout: tuple[torch.Tensor, torch.Tensor] | None = None,
        seed: int = 0,
        path: str = "auto",
    ) -> None:
        named = check_model(model)
        path = check_choice("path", path, PATHS)
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
        x, y = check_data("data", data)
        self.heldout_data = None if heldout is None else check_data("heldout", heldout)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.seed = check_int("seed", seed, minimum=0)
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
                batch_size, int | np.integer)):
            raise TypeError(f"batch_size must be None or an int, got {batch_size!r}")
        probe(model, loss_fn, "data", (x, y), batch_size=batch_size)
        if self.heldout_data is not None:
            probe(model, loss_fn, "heldout", self.heldout_data)
        sizes = [p.numel() for _, p in named]
        super().__init__(int(sum(sizes)))
        self.model = model
        self.loss_fn = loss_fn
        self.data = (x, y)
        self.n_examples = int(x.shape[0])
        self.schedule = (None if batch_size is None
                         else BatchSchedule(self.n_examples, int(batch_size), self.seed))
        self.batch_size = None if batch_size is None else int(batch_size)
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        #: Name -> slice of θ of each parameter tensor (in ``model.parameters()`` order).
        self.layers: dict[str, slice] = {n: slice(int(a), int(b)) for n, a, b in
                                         zip(self.names, starts[:-1], starts[1:], strict=True)}
        self._cache: dict[tuple[Any, ...], Any] = {}
        flat_inputs = x.ndim == 2 and (heldout is None or self.heldout_data[0].ndim == 2)
        fits = BatchedMLP.supports(model) and flat_inputs
        if path == "mlp" and not fits:
            raise ValueError("path='mlp' needs an nn.Sequential of Linear layers and elementwise "
                             f"activations without buffers and 2-D inputs; got {model!r}")
        #: The evaluation path in use: ``"mlp"`` (lean batched MLP) or ``"vmap"`` (any model).
        self.path = "mlp" if fits and path != "vmap" else "vmap"
        self._mlp = BatchedMLP(model, loss_fn, self.layers) if self.path == "mlp" else None
        single = self._single_loss
        self._vvalue = vmap(single, in_dims=(0, None, None, None))
        self._vgrad = vmap(grad(single), in_dims=(0, None, None, None))
        self._vgrad_value = vmap(grad_and_value(single), in_dims=(0, None, None, None))

        def hvp(theta: torch.Tensor, z: torch.Tensor, xb: Any, yb: Any, buf: Any) -> Any:
            # reverse over reverse: ∇(∇U·z); forward-over-reverse (jvp of grad) trips on
            # immutable ZeroTensors in some losses' double backward
            return grad(lambda t: (grad(single)(t, xb, yb, buf) * z).sum())(theta)

        # (chains, probes) -> (chains, probes, dim)
        self._vhvp = vmap(vmap(hvp, in_dims=(None, 0, None, None, None)),
                          in_dims=(0, 0, None, None, None))
        if self.path == "vmap":
            self._probe_vmap()

    def _probe_vmap(self) -> None:
        """A value and a gradient of the general path on two examples, at construction: a
        model that torch.func cannot batch (an RNN, a random forward such as
        ``F.dropout(training=True)``) is refused here by name instead of failing at the first
        evaluation of a run."""
        ref = next(self.model.parameters())
        theta = self.flatten().to(ref.dtype)[None]
        x, y = self._tensors("data", theta.dtype, theta.device)
        data = (x[:2], y[:2], self._tensors("buffers", theta.dtype, theta.device))
        try:
            with torch.no_grad():  # as value() evaluates (RNNs batch under grad, not here)
                self._vvalue(theta, *data)
            self._vgrad_value(theta, *data)
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
            raise ValueError(
                f"model {type(self.model).__name__} cannot be evaluated by NetworkLoss's general "
                "path (torch.func.functional_call under vmap, all chains in one call): "
                f"{str(err).rstrip('.')}. (A forward that draws random numbers, such as "
                "dropout or RReLU in training mode, makes U(θ) random: call model.eval().)"
            ) from err

    # --- stochastic-potential protocol ----------------------------------------------------------
    @property
    def stochastic(self) -> bool:
        """Whether gradients are minibatch estimates (the backends then pass ``batch=k``)."""
        return self.schedule is not None

    # --- flat <-> named ---------------------------------------------------------------------------
    def flatten(self, model_or_params: nn.Module | dict[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """θ from a model (default: this one) or a name -> tensor dict, in this layout."""
        src = self.model if model_or_params is None else model_or_params
        params = dict(src.named_parameters()) if isinstance(src, nn.Module) else dict(src)
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"model_or_params lacks the parameter(s) {missing}")
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> view of ``theta[..., slice]`` shaped like the parameter (leading axes kept)."""
        if not isinstance(theta, torch.Tensor):
            theta = torch.as_tensor(np.asarray(theta))
        if theta.shape[-1] != self.dim:
            raise ValueError(f"theta has {theta.shape[-1]} entries on its last axis but the "
                             f"model has dim={self.dim}")
        lead = tuple(theta.shape[:-1])
        return {n: theta[..., sl].reshape(*lead, *shape)
                for (n, sl), shape in zip(self.layers.items(), self.shapes, strict=True)}

    def load_into(self, theta: torch.Tensor, model: nn.Module | None = None) -> None:
        """Copy a flat θ of shape ``(dim,)`` into ``model``'s parameters (default: this one)."""
        target = dict((model or self.model).named_parameters())
        with torch.no_grad():
            for n, t in self.unflatten(torch.as_tensor(theta)).items():
                target[n].copy_(t)

    # --- evaluation ----------------------------------------------------------------------------
    def _single_loss(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                     buffers: dict[str, torch.Tensor]) -> torch.Tensor:
        params = {n: theta[sl].view(shape)
                  for (n, sl), shape in zip(self.layers.items(), self.shapes, strict=True)}
        out = functional_call(self.model, (params, buffers), (x,))
        return self.loss_fn(out, y)

    def _tensors(self, which: str, dtype: torch.dtype, device: torch.device) -> Any:
        key = (which, dtype, device)
        hit = self._cache.get(key)
        if hit is not None:
            return hit

        def cast(t: torch.Tensor) -> torch.Tensor:
            t = t.detach().to(device)
            return t.to(dtype) if t.is_floating_point() else t

        if which == "buffers":
            out: Any = {n: cast(b) for n, b in self.model.named_buffers()}
        else:
            src = self.data if which == "data" else self.heldout_data
            assert src is not None
            out = (cast(src[0]), cast(src[1]))
        self._cache[key] = out
        return out

    def _batch(self, q: torch.Tensor, batch: int | None, which: str = "data") -> Any:
        x, y = self._tensors(which, q.dtype, q.device)
        if batch is not None:
            batch = check_int("batch", batch, minimum=0)  # a fractional index was truncated
        if batch is not None and self.schedule is not None and which == "data":
            # the epoch's data in permuted order, kept on the device: batch `slot` is a view
            epoch, slot = divmod(batch, self.schedule.n_batches)
            key = ("epoch", q.dtype, q.device)
            hit = self._cache.get(key)
            if hit is None or hit[0] != epoch:
                idx = self.schedule.permutation(epoch).to(q.device)
                hit = (epoch, x.index_select(0, idx), y.index_select(0, idx))
                self._cache[key] = hit
            b = self.schedule.batch_size
            x, y = hit[1][slot * b:(slot + 1) * b], hit[2][slot * b:(slot + 1) * b]
        return x, y, self._tensors("buffers", q.dtype, q.device)

    @staticmethod
    def _flat(q: Array) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        is_numpy = not isinstance(q, torch.Tensor)
        t = torch.as_tensor(np.asarray(q, dtype=np.float64)) if is_numpy else q
        return t.detach().reshape(-1, t.shape[-1]), tuple(t.shape[:-1]), is_numpy

    def _check(self, q: torch.Tensor) -> None:
        if q.shape[-1] != self.dim:
            raise ValueError(f"q has {q.shape[-1]} coordinates per chain but the model has "
                             f"dim={self.dim}")

    def value(self, q: Array, *, batch: int | None = None) -> Array:
        """U(q), shape ``q.shape[:-1]`` (``batch=k``: minibatch k; None: all the data)."""
        t, lead, is_numpy = self._flat(q)
        self._check(t)
        with torch.no_grad():
            u = self._losses(t, self._batch(t, batch))
            if self.weight_decay:
                u = u + 0.5 * self.weight_decay * (t * t).sum(-1)
        u = u.reshape(lead)
        return u.numpy() if is_numpy else u

    def grad(self, q: Array, *, batch: int | None = None) -> Array:
        """∇U(q), shape ``q.shape`` (``batch=k``: the minibatch-k estimate)."""
        t, lead, is_numpy = self._flat(q)
        self._check(t)
        data = self._batch(t, batch)
        g = (self._mlp.grad_and_value(t, *data[:2])[0] if self._mlp is not None
             else self._vgrad(t, *data))
        if self.weight_decay:
            g = g + self.weight_decay * t
        g = g.detach().reshape(*lead, self.dim)
        return g.numpy() if is_numpy else g

    def value_and_grad(self, q: torch.Tensor, *, batch: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """(U(q), ∇U(q)) from one pass (``q`` of shape ``(chains, dim)``)."""
        if not isinstance(q, torch.Tensor) or q.ndim != 2:
            raise ValueError(f"value_and_grad needs a torch tensor q of shape (chains, "
                             f"{self.dim}), got {type(q).__name__} of shape "
                             f"{tuple(np.shape(q))}")
        self._check(q)
        data = self._batch(q, batch)
        g, u = (self._mlp.grad_and_value(q, *data[:2]) if self._mlp is not None
                else self._vgrad_value(q.detach(), *data))
        if self.weight_decay:
            g = g + self.weight_decay * q
            u = u + 0.5 * self.weight_decay * (q * q).sum(-1)
        return u.detach(), g.detach()

    def data_loss(self, q: torch.Tensor) -> torch.Tensor:
        """Full-batch mean training loss without the prior term, shape ``q.shape[:-1]``."""
        t, lead, _ = self._flat(q)
        self._check(t)
        with torch.no_grad():
            return self._losses(t, self._batch(t, None)).reshape(lead)

    def heldout_loss(self, q: torch.Tensor) -> torch.Tensor:
        """Mean loss on the held-out data (no prior term), shape ``q.shape[:-1]``."""
        if self.heldout_data is None:
            raise ValueError("heldout_loss needs NetworkLoss(..., heldout=(inputs, targets))")
        t, lead, _ = self._flat(q)
        self._check(t)
        with torch.no_grad():
            return self._losses(t, self._batch(t, None, "heldout")).reshape(lead)

    def _losses(self, t: torch.Tensor, data: Any) -> torch.Tensor:
        """Per-chain mean losses of ``t`` (chains, dim) on ``data`` = (x, y, buffers)."""
        return self._mlp.losses(t, *data[:2]) if self._mlp is not None else self._vvalue(t, *data)

    def hvp(self, q: torch.Tensor, z: torch.Tensor, *, batch: int | None = None) -> torch.Tensor:
        """Hessian-vector products ∇²U(q) z for probes ``z`` of shape ``(chains, k, dim)``.

        Returns ``(chains, k, dim)`` (double backward, all chains and probes at once).
        """
        return self._products(q, z, batch, with_grad=False)[1]

    def grad_and_hvp(self, q: torch.Tensor, z: torch.Tensor, *, batch: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇U(q), ∇²U(q) z) for probes ``z`` of shape ``(chains, k, dim)``; on the lean MLP path
        the gradient comes from the same pass as the products (one forward pass, not two)."""
        g, hz = self._products(q, z, batch, with_grad=True)
        assert g is not None
        return g, hz

    def _products(self, q: torch.Tensor, z: torch.Tensor, batch: int | None, *,
                  with_grad: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        self._check(q)
        if z.ndim != 3 or z.shape[0] != q.shape[0] or z.shape[2] != self.dim:
            raise ValueError(f"z must have shape (chains, probes, dim) = ({q.shape[0]}, k, "
                             f"{self.dim}), got {tuple(z.shape)}")
        data = self._batch(q, batch)
        g: torch.Tensor | None = None
        if self._mlp is not None:
            g, out = self._mlp.grad_and_hvp(q, z, *data[:2])
            if self.weight_decay:
                g = g + self.weight_decay * q
        else:
            out = self._vhvp(q.detach(), z, *data)
            if with_grad:
                g = self.grad(q, batch=batch)
        if self.weight_decay:
            out = out + self.weight_decay * z
        return (g.detach() if with_grad and g is not None else None), out.detach()

    def hutchinson(self, q: torch.Tensor, z: torch.Tensor, *, batch: int | None = None
                   ) -> torch.Tensor:
        """Per-coordinate terms zᵢ(∇²U z)ᵢ, ``(chains, k, dim)``: summed over the coordinates of
        a layer and averaged over the k Rademacher probes they give an unbiased estimate of
        that layer's ΔU (E[zzᵀ] = I), and summed over all coordinates of ΔU itself."""
        return z * self.hvp(q, z, batch=batch)

    def laplacian(self, q: Array) -> Array:
        """Exact ΔU(q) = tr ∇²U (dim Hessian-vector products per chain: small models only)."""
        t, lead, is_numpy = self._flat(q)
        self._check(t)
        eye = torch.eye(self.dim, dtype=t.dtype, device=t.device)
        lap = torch.stack([(eye * self.hvp(row[None], eye[None])[0]).sum()
                           for row in t]) if t.shape[0] else t.new_zeros(0)
        lap = lap.reshape(lead)
        return lap.numpy() if is_numpy else lap

    def __repr__(self) -> str:
        batch = "full" if self.batch_size is None else self.batch_size
        return (f"NetworkLoss(dim={self.dim}, model={type(self.model).__name__}, "
                f"n={self.n_examples}, batch_size={batch}, weight_decay={self.weight_decay})")
