r"""The layers of a feed-forward network as pieces of a control system (see DDPTrajectory).

A stage of the network is ``f_t = σ_t ∘ g_t``: an affine layer ``g_t(x, u) = W x + b``
(``nn.Linear`` or ``nn.Conv2d``; the control ``u_t = [vec W, b]``) followed by parameter-free
modules ``σ_t`` (elementwise activations and ``nn.Flatten``). This module holds the three pieces
the DDP passes need:

* :class:`AffineLayer`: the affine map in *augmented matrix form*. Every per-sample weight
  gradient is ``G_i = b_i X_iᵀ`` with ``b_i ∈ R^{out×P}`` a vector per output position and
  ``X_i ∈ R^{(in+1)×P}`` the input patches with a row of ones for the bias (``P = 1`` for a
  linear layer on a vector, ``P`` = number of output pixels for a convolution). ``Wa = [W b]``.
* :func:`post_derivatives`: ``σ'`` and ``σ''`` of the elementwise chain after the layer.
* :class:`Curvature`: the model ``Q_uu ≈ M/η`` of one layer, a preconditioner diagonal in a
  (possibly Kronecker-rotated) basis: ``M = (U_G ⊗ U_A) diag(m) (U_G ⊗ U_A)ᵀ`` with ``U = I`` for
  SGD / RMSprop / Adam and the Kronecker eigenbases for EKFAC. It evaluates the per-sample
  quadratic forms ``q_uᵀ M⁻¹ q_u`` that the value-Hessian factorization needs without ever
  forming ``q_u`` (one matmul for ``P = 1``).

| symbol | code |
|---|---|
| x_t (stage input) | ``x`` |
| h_t = g_t(x_t, u_t) | ``h`` |
| X_i (augmented input patches) | :meth:`AffineLayer.inputs` |
| W δx (g_x δx) | :meth:`AffineLayer.linear_part` |
| g_xᵀ v | :meth:`AffineLayer.input_vjp` |
| σ'(h), σ''(h) | :func:`post_derivatives` |
| M, η | :class:`Curvature` (``inv`` = 1/diag m, ``rot_out`` = U_G, ``rot_in`` = U_A, ``eta``) |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

__all__ = ["ACTIVATIONS", "AffineLayer", "Curvature", "post_derivatives", "unsupported_reason"]

Derivs = Callable[[nn.Module, Tensor, Tensor], tuple[Tensor, Tensor | None]]


def _tanh(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    d1 = 1.0 - o * o
    return d1, -2.0 * o * d1


def _sigmoid(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    d1 = o * (1.0 - o)
    return d1, d1 * (1.0 - 2.0 * o)


def _relu(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, None]:
    return (a > 0).to(a.dtype), None


def _leaky_relu(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, None]:
    slope = float(m.negative_slope)  # type: ignore[arg-type]
    return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, slope)), None


def _elu(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    alpha = float(m.alpha)  # type: ignore[arg-type]
    neg = o + alpha
    d1 = torch.where(a > 0, torch.ones_like(a), neg)
    return d1, torch.where(a > 0, torch.zeros_like(a), neg)


def _softplus(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    beta, threshold = float(m.beta), float(m.threshold)  # type: ignore[arg-type]
    s = torch.sigmoid(beta * a)
    linear = beta * a > threshold
    d1 = torch.where(linear, torch.ones_like(a), s)
    return d1, torch.where(linear, torch.zeros_like(a), beta * s * (1.0 - s))


def _identity(m: nn.Module, a: Tensor, o: Tensor) -> tuple[Tensor, None]:
    return torch.ones_like(a), None


#: Supported elementwise activations → ``(module, input, output) -> (σ', σ'' or None for 0)``.
ACTIVATIONS: dict[type[nn.Module], Derivs] = {
    nn.Tanh: _tanh,
    nn.Sigmoid: _sigmoid,
    nn.ReLU: _relu,
    nn.LeakyReLU: _leaky_relu,
    nn.ELU: _elu,
    nn.Softplus: _softplus,
    nn.Identity: _identity,
}


def unsupported_reason(module: nn.Module) -> str | None:
    """Why ``module`` cannot be a parameter-free part of a stage (None if it can)."""
    if isinstance(module, nn.Flatten):
        if module.start_dim == 0:
            return "nn.Flatten(start_dim=0) merges the batch axis"
        return None
    kind = type(module)
    if kind not in ACTIVATIONS:
        return f"{kind.__name__} is not a supported layer"
    if getattr(module, "inplace", False):
        return (f"{kind.__name__}(inplace=True) overwrites the pre-activation the backward pass "
                "needs; use inplace=False")
    return None


def post_derivatives(
    modules: Sequence[nn.Module], inputs: Sequence[Tensor], outputs: Sequence[Tensor],
    h_shape: torch.Size, second: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """First and second derivatives of the elementwise chain σ = σ_k ∘ … ∘ σ_1 at h.

    Returns ``(D1, D2)`` shaped like ``h`` (``D1 = None`` for an empty chain: σ' = 1; ``D2 = None``
    when zero or not requested), using (f∘g)'' = f''(g) g'² + f'(g) g''.
    """
    d1: Tensor | None = None
    d2: Tensor | None = None
    for m, a, o in zip(modules, inputs, outputs, strict=True):
        if isinstance(m, nn.Flatten):
            continue
        s1, s2 = ACTIVATIONS[type(m)](m, a, o)
        s1 = s1.reshape(h_shape)
        if second:
            new2 = None
            if s2 is not None:
                s2 = s2.reshape(h_shape)
                new2 = s2 if d1 is None else s2 * d1 * d1
            if d2 is not None:
                new2 = s1 * d2 if new2 is None else new2 + s1 * d2
            d2 = new2
        d1 = s1 if d1 is None else s1 * d1
    return d1, d2


class AffineLayer:
    """An ``nn.Linear`` or ``nn.Conv2d`` in augmented-matrix form (see the module docstring).

    Raises:
        ValueError: For a grouped convolution, a non-zero padding mode or string padding other
            than ``"valid"``.
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self.weight: nn.Parameter = module.weight  # type: ignore[assignment]
        self.bias: nn.Parameter | None = module.bias  # type: ignore[assignment]
        self.params = [self.weight] if self.bias is None else [self.weight, self.bias]
        self.n_out = int(self.weight.shape[0])
        self._ones: dict[tuple[Any, ...], Tensor] = {}
        if isinstance(module, nn.Linear):
            self.kind = "linear"
        elif isinstance(module, nn.Conv2d):
            self.kind = "conv2d"
            if module.groups != 1:
                raise ValueError(f"layer {name}: grouped convolutions (groups={module.groups}) "
                                 "are not supported")
            if module.padding_mode != "zeros":
                raise ValueError(f"layer {name}: padding_mode={module.padding_mode!r} is not "
                                 "supported (only 'zeros')")
            pad = module.padding
            if isinstance(pad, str):
                if pad != "valid":
                    raise ValueError(f"layer {name}: padding={pad!r} is not supported; give the "
                                     "padding as integers")
                pad = (0, 0)
            self.padding = tuple(int(v) for v in pad)
        else:  # pragma: no cover - guarded by the trajectory's parser
            raise TypeError(f"layer {name}: {type(module).__name__} is not an affine layer")

    # --- parameters --------------------------------------------------------------------------
    def aug(self, dw: Tensor, db: Tensor | None) -> Tensor:
        """``[dW b]`` as an ``(out, in_aug)`` matrix."""
        w = dw.reshape(self.n_out, -1)
        return w if db is None else torch.cat([w, db.reshape(-1, 1)], dim=1)

    def split(self, g: Tensor) -> tuple[Tensor, Tensor | None]:
        """Inverse of :meth:`aug`."""
        if self.bias is None:
            return g.reshape(self.weight.shape), None
        return g[:, :-1].reshape(self.weight.shape), g[:, -1].clone()

    # --- maps ------------------------------------------------------------------------------
    def forward(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        m = self.module
        if self.kind == "linear":
            return functional.linear(x, w, b)
        return functional.conv2d(x, w, b, m.stride, self.padding, m.dilation)  # type: ignore[arg-type]

    def inputs(self, x: Tensor, *, ones: bool = True) -> Tensor:
        """Augmented input patches ``X``, shape ``(B, in_aug, P)`` (bias row: ones, or zeros
        with ``ones=False``, as for the input perturbation δX)."""
        n = x.shape[0]
        if self.kind == "linear":
            xs = x.reshape(n, -1, x.shape[-1]).transpose(1, 2)
        else:
            m = self.module
            xs = functional.unfold(x, m.kernel_size, dilation=m.dilation, padding=self.padding,
                          stride=m.stride)  # type: ignore[arg-type]
        if self.bias is None:
            return xs
        key = (n, xs.shape[2], x.dtype, x.device, ones)
        row = self._ones.get(key)
        if row is None:
            row = (torch.ones if ones else torch.zeros)(n, 1, xs.shape[2], dtype=x.dtype,
                                                         device=x.device)
            if len(self._ones) > 8:
                self._ones.clear()
            self._ones[key] = row
        return torch.cat([xs, row], dim=1)

    def outputs(self, v: Tensor) -> Tensor:
        """A tensor shaped like ``h`` (leading axis N) as ``(N, out, P)``."""
        n = v.shape[0]
        if self.kind == "linear":
            return v.reshape(n, -1, self.n_out).transpose(1, 2)
        return v.reshape(n, self.n_out, -1)

    def linear_part(self, dx: Tensor) -> Tensor:
        """``g_x δx = W δx`` (no bias), shaped like ``h``."""
        m = self.module
        if self.kind == "linear":
            return functional.linear(dx, self.weight)
        return functional.conv2d(dx, self.weight, None, m.stride, self.padding, m.dilation)  # type: ignore[arg-type]

    def input_vjp(self, v: Tensor, x_shape: Sequence[int]) -> Tensor:
        """``g_xᵀ v`` for ``v`` shaped like ``h`` with leading axis N; returns ``(N, *x_shape)``."""
        m = self.module
        if self.kind == "linear":
            return v.matmul(self.weight)
        n = v.shape[0]
        return torch.nn.grad.conv2d_input((n, *x_shape), self.weight, v, m.stride, self.padding,
                                          m.dilation)  # type: ignore[arg-type]

    @staticmethod
    def batch_outer(b: Tensor, x: Tensor) -> Tensor:
        """``Σ_i b_i X_iᵀ`` for ``b (B, out, P)``, ``X (B, in_aug, P)``: ``(out, in_aug)``."""
        if b.shape[2] == 1:
            return b[:, :, 0].T @ x[:, :, 0]
        return torch.einsum("bjp,bkp->jk", b, x)


@dataclass
class Curvature:
    r"""The per-layer model Q_uu ≈ M/η with M diagonal in a Kronecker basis.

    ``M⁻¹ V = U_G [(U_Gᵀ V U_A) ⊙ inv] U_Aᵀ`` for an ``(out, in_aug)`` matrix V; ``inv = None``
    means M = I, ``rot_out``/``rot_in`` None mean U = I.

    Attributes:
        eta: The learning rate η (so Q_uu⁻¹ ≈ η M⁻¹).
        inv: 1/diag(M) in the rotated basis, ``(out, in_aug)``, or None (identity).
        rot_out: U_G, ``(out, out)`` (columns: eigenvectors) or None.
        rot_in: U_A, ``(in_aug, in_aug)`` or None.
    """

    eta: float
    inv: Tensor | None = None
    rot_out: Tensor | None = None
    rot_in: Tensor | None = None

    def _rot_mat(self, v: Tensor) -> Tensor:
        if self.rot_out is not None:
            v = self.rot_out.T @ v
        if self.rot_in is not None:
            v = v @ self.rot_in
        return v

    def solve(self, v: Tensor) -> Tensor:
        """``M⁻¹ v`` for an ``(out, in_aug)`` matrix."""
        if self.inv is None and self.rot_out is None and self.rot_in is None:
            return v
        t = self._rot_mat(v)
        if self.inv is not None:
            t = t * self.inv
        if self.rot_out is not None:
            t = self.rot_out @ t
        if self.rot_in is not None:
            t = t @ self.rot_in.T
        return t

    def quadratic_forms(self, zh: Tensor, x: Tensor, q: Tensor | None
                        ) -> tuple[Tensor, Tensor | None]:
        r"""Per-sample ``Φ_i,ab = q_{u,a}ᵀ M⁻¹ q_{u,b}`` and ``c_i,a = q_{u,a}ᵀ M⁻¹ Q``.

        Here ``q_{u,a}^{(i)} = Z_{h,ia} X_iᵀ`` is the weight gradient of factor column a of
        sample i. Args: ``zh (B, r, out, P)``, ``x (B, in_aug, P)``, ``q (out, in_aug)`` or None.
        Returns ``Φ (B, r, r)`` and ``c (B, r)`` (None without ``q``); nothing of size
        ``B × out × in`` is formed when ``P = 1``.
        """
        bsz, _, n_out, p = zh.shape
        if self.rot_out is not None:
            zh = torch.einsum("jk,bajp->bakp", self.rot_out, zh)
        if self.rot_in is not None:
            x = torch.einsum("kl,bkp->blp", self.rot_in, x)
        qt = None if q is None else self._rot_mat(q)
        if qt is not None and self.inv is not None:
            qt = qt * self.inv
        if p == 1:
            xv = x[:, :, 0]                               # (B, in_aug)
            x2 = xv * xv
            if zh.shape[1] == 1:                          # rank one: no batched matmuls
                z = zh[:, 0, :, 0]                        # (B, out)
                zz = z * z
                phi = (zz @ self.inv).mul_(x2).sum(1) if self.inv is not None else \
                    zz.sum(1).mul_(x2.sum(1))
                c = None if qt is None else (z * (xv @ qt.T)).sum(1, keepdim=True)
                return phi.reshape(bsz, 1, 1), c
            z = zh[..., 0]                                # (B, r, out)
            y = x2.sum(1, keepdim=True).expand(bsz, n_out) if self.inv is None else \
                x2 @ self.inv.T                           # (B, out)
            phi = (z * y[:, None, :]) @ z.transpose(1, 2)
            c = None if qt is None else (z * (xv @ qt.T)[:, None, :]).sum(-1)
            return phi, c
        g = torch.matmul(zh, x.transpose(1, 2).unsqueeze(1))   # (B, r, out, in_aug)
        gw = g if self.inv is None else g * self.inv
        phi = torch.einsum("bajk,bcjk->bac", gw, g)
        c = None if qt is None else (g * qt).sum((-1, -2))
        return phi, c
