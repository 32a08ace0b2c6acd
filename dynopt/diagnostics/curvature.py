r"""The top Hessian eigenvalue λ_max from Hessian-vector products (Lanczos).

.. math:: λ_{max} = \max_{|v| = 1} v^\top \nabla^2 U(θ)\, v ,

computed with SciPy's implicitly restarted Lanczos (``eigsh(which="LA")``) on a
``LinearOperator`` whose matvec is one Hessian-vector product Hv = ∇(∇U · v) by double
backward in torch autograd; the Hessian is never formed (below 33 coordinates it is, from d
products, and diagonalized exactly). Compare λ_max with
:func:`dynopt.diagnostics.stability_limit` to see whether a step size has crossed the linear
stability limit of its scheme (Cohen et al., "Gradient descent on neural networks typically
occurs at the edge of stability", ICLR 2021).

| symbol | code |
|---|---|
| U | ``potential`` or the mean of ``loss_fn(model(x), y)`` over the data |
| θ | ``q`` or the model's parameters (``parameters_to_vector`` layout) |
| λ_max | :attr:`TopEigenvalue.value` |
| v | :attr:`TopEigenvalue.vector` |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import (
    _tensor_is_integer,
    as_finite_array,
    check_int,
    check_nonnegative,
    check_positive,
)

if TYPE_CHECKING:  # torch is imported where it is used: `import dynopt` stays torch-free
    import torch

__all__ = ["TopEigenvalue", "hessian_top_eigenvalue", "model_top_eigenvalue",
           "potential_top_eigenvalue"]

#: At or below this many coordinates the Hessian is built from d products and diagonalized.
DENSE_MAX = 32


@dataclass(frozen=True)
class TopEigenvalue:
    """The largest Hessian eigenvalue and its eigenvector.

    Attributes:
        value: λ_max (largest algebraic eigenvalue).
        vector: A unit eigenvector (float64, flat).
        n_hvp: Hessian-vector products used.
    """

    value: float
    vector: np.ndarray
    n_hvp: int


def hessian_top_eigenvalue(hvp: Callable[[np.ndarray], np.ndarray], dim: int, *,
                           tol: float = 1e-8, maxiter: int | None = None,
                           seed: int = 0) -> TopEigenvalue:
    """λ_max of the symmetric operator ``hvp`` (a function of a float64 vector of length dim).

    Args:
        hvp: v ↦ Hv.
        dim: Number of coordinates.
        tol: Relative tolerance of Lanczos (``eigsh``'s ``tol``).
        maxiter: Maximum Lanczos restarts (default: SciPy's).
        seed: Seed of the start vector (fixed, so results are reproducible).
    """
    dim = check_int("dim", dim, minimum=1)
    tol = check_positive("tol", tol)
    count = [0]

    def mv(v: np.ndarray) -> np.ndarray:
        count[0] += 1
        out = np.asarray(hvp(np.asarray(v, dtype=np.float64).reshape(-1)), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("a Hessian-vector product is not finite")
        return out.reshape(-1)

    if dim <= DENSE_MAX:
        h = np.stack([mv(e) for e in np.eye(dim)], axis=1)
        w, vecs = np.linalg.eigh(0.5 * (h + h.T))
        return TopEigenvalue(float(w[-1]), vecs[:, -1], count[0])
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = LinearOperator((dim, dim), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(dim)
    w, vecs = eigsh(op, k=1, which="LA", tol=tol, maxiter=maxiter, v0=v0)
    return TopEigenvalue(float(w[0]), vecs[:, 0], count[0])


def potential_top_eigenvalue(potential: Any, q: Any, **kwargs: Any) -> TopEigenvalue:
    """λ_max of ∇²U at one point ``q`` (shape ``(dim,)``).

    Args:
        potential: A :class:`~dynopt.potentials.base.AbstractPotential` (its torch ``grad`` is
            differentiated) or a callable ``U(q) -> scalar`` on a torch tensor.
        q: The point.
        **kwargs: Passed to :func:`hessian_top_eigenvalue` (``tol``, ``maxiter``, ``seed``).
    """
    import torch

    from ..potentials.base import AbstractPotential

    _check_point(potential, q)
    if isinstance(potential, AbstractPotential) and hasattr(potential, "hvp"):
        # its own Hessian-vector products (NetworkLoss: the model's double backward), in the
        # point's own dtype and device
        qc = (q.detach() if isinstance(q, torch.Tensor)
              else torch.as_tensor(np.asarray(q, dtype=np.float64))).reshape(1, -1)

        def own_hvp(v: np.ndarray) -> np.ndarray:
            z = torch.as_tensor(v, dtype=qc.dtype, device=qc.device).reshape(1, 1, -1)
            return potential.hvp(qc, z).reshape(-1).double().cpu().numpy()

        return hessian_top_eigenvalue(own_hvp, qc.shape[1], **kwargs)
    qt = torch.as_tensor(np.asarray(q, dtype=np.float64) if not isinstance(q, torch.Tensor)
                         else q.detach()).to(torch.float64).reshape(-1).clone()
    if isinstance(potential, AbstractPotential):
        def grad_fn(x: torch.Tensor) -> torch.Tensor:
            return potential.grad(x)
    elif callable(potential):
        def grad_fn(x: torch.Tensor) -> torch.Tensor:
            (g,) = torch.autograd.grad(potential(x), x, create_graph=True)
            return g
    else:
        raise TypeError(f"potential must be a dynopt potential or a callable, got {potential!r}")
    qt.requires_grad_(True)
    with torch.enable_grad():
        g = grad_fn(qt)
    if not g.requires_grad:
        raise TypeError(f"the gradient of {potential!r} is not differentiable by torch autograd")

    def hvp(v: np.ndarray) -> np.ndarray:
        vt = torch.as_tensor(v, dtype=g.dtype)
        (hv,) = torch.autograd.grad(g, qt, grad_outputs=vt, retain_graph=True)
        return hv.detach().numpy()

    return hessian_top_eigenvalue(hvp, qt.numel(), **kwargs)


def _check_point(potential: Any, q: Any) -> None:
    """``q`` is one finite point (``(dim,)``, or ``(1, dim)``) of the potential's dimension:
    a point of another size gave an eigenvalue of a different problem (8.0 for DoubleWell(dim=2)
    at three coordinates) and a NaN one a FloatingPointError about a Hessian-vector product.
    A tensor stays on its device (only whether it is all finite comes to the host)."""
    import torch

    from ..potentials.base import AbstractPotential

    if isinstance(q, torch.Tensor):
        shape = tuple(q.shape)
        if q.is_complex() or not (q.is_floating_point() or _tensor_is_integer(q)):
            raise TypeError(f"q must be a real tensor, got dtype {q.dtype}")
        finite = bool(torch.isfinite(q.detach()).all())
    else:
        arr = np.asarray(q)
        shape = arr.shape
        finite = True
        as_finite_array("q", q)  # names a non-real or non-finite q
    if not finite:
        raise ValueError(f"q must be finite, got a tensor of shape {shape} with NaN/inf entries")
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[0] != 1):
        raise ValueError(f"q must be one point, shape (dim,) or (1, dim), got shape {shape}")
    if isinstance(potential, AbstractPotential):
        potential.check_dim(shape[-1], "q")


def model_top_eigenvalue(model: torch.nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor],
                         data: Sequence[tuple[Any, Any]] | tuple[Any, Any], *,
                         weight_decay: float = 0.0, params: Sequence[torch.Tensor] | None = None,
                         **kwargs: Any) -> TopEigenvalue:
    """λ_max of the full-batch loss of a torch model at its current parameters.

    U(θ) = Σ_b n_b · loss_fn(model(x_b), y_b) / Σ_b n_b + (weight_decay/2)|θ|², i.e. the mean
    loss over all batches when ``loss_fn`` averages over a batch. Works with any optimizer: only
    the model and the data are read, nothing is changed (gradients in ``.grad`` are kept, and
    buffers that a forward in training mode updates, such as batch norm's running statistics,
    are restored afterwards).

    Args:
        model: The model (put it in eval mode first if it has dropout or batch norm).
        loss_fn: ``loss_fn(output, target)``, a batch mean.
        data: One ``(x, y)`` pair or a sequence of them (chunks of the full batch).
        weight_decay: λ of the Gaussian prior term (adds λ to every eigenvalue).
        params: Parameters θ (default: every parameter with ``requires_grad``).
        **kwargs: Passed to :func:`hessian_top_eigenvalue`.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    weight_decay = check_nonnegative("weight_decay", weight_decay)
    # one (x, y) pair, or a sequence (a list, or a tuple of pairs) of chunks
    pair = isinstance(data, tuple) and not all(isinstance(c, tuple | list) for c in data)
    chunks = [data] if pair else list(data)
    if not chunks or not all(isinstance(c, tuple | list) and len(c) == 2 for c in chunks):
        raise TypeError("data must be an (x, y) pair or a non-empty sequence of (x, y) pairs")
    ps = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    if not ps:
        raise ValueError("the model has no parameters that require gradients")
    sizes = [len(c[0]) for c in chunks]
    # a forward in training mode updates batch norm's running statistics (and its counter):
    # the model must leave as it came. Restored at the very end, after the last product: the
    # double-backward graph holds them at their current version
    held = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        return _model_top(model, loss_fn, chunks, sizes, ps, weight_decay, **kwargs)
    finally:
        with torch.no_grad():
            for b, saved in held:
                b.copy_(saved)


def _model_top(model: torch.nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor],
               chunks: list[Any], sizes: list[int], ps: list[torch.Tensor],
               weight_decay: float, **kwargs: Any) -> TopEigenvalue:
    """:func:`model_top_eigenvalue` after its checks (the caller restores the buffers)."""
    import torch

    total = float(sum(sizes))
    grads = []
    with torch.enable_grad():
        for (x, y), n in zip(chunks, sizes, strict=True):
            loss = loss_fn(model(x), y) * (n / total)
            grads.append(torch.autograd.grad(loss, ps, create_graph=True))
    flat = [torch.cat([g.reshape(-1) for g in gs]) for gs in grads]
    dtype, device = flat[0].dtype, flat[0].device
    theta_numels = [p.numel() for p in ps]

    def hvp(v: np.ndarray) -> np.ndarray:
        vt = torch.as_tensor(v, dtype=dtype, device=device)
        out = torch.zeros_like(vt, dtype=torch.float64)
        for g in flat:
            hv = torch.autograd.grad(g, ps, grad_outputs=vt, retain_graph=True)
            out += torch.cat([h.reshape(-1) for h in hv]).double()
        if weight_decay:
            out += weight_decay * vt.double()
        return out.cpu().numpy()

    return hessian_top_eigenvalue(hvp, sum(theta_numels), **kwargs)
