"""EKFAC on a convolution with several output positions, and with weight decay (DDPNOpt's
``base="ekfac"``). A line-coverage run showed that no test reached either: every EKFAC test used
Linear layers (one position) and ``weight_decay=0``.

For one example (B = 1) the EKFAC step of a layer has a closed form: with x̃_p the augmented
input patch and v_p = ∂J/∂h_p the output gradient at position p (P positions),
A = (1/P) Σ_p x̃_p x̃_pᵀ = U_A Λ_A U_Aᵀ, G = (1/P) Σ_p v_p v_pᵀ = U_G Λ_G U_Gᵀ, the gradient
D = Σ_p v_p x̃_pᵀ, the eigenvalue correction S = (U_Gᵀ D U_A)² (elementwise: one example's
squared gradient in the Kronecker eigenbasis), and the step −lr U_G [(U_Gᵀ D U_A) / (S + λ)] U_Aᵀ.
The test builds x̃_p with ``F.unfold`` (an independent im2col) and compares.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynopt.optim import DDPNOpt


def _conv_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 2), nn.Tanh(), nn.Flatten(),
                         nn.Linear(27, 2)).double()


def test_ekfac_step_of_a_convolution_with_nine_positions_is_the_closed_form():
    model = _conv_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([1])
    lr, lam = 0.3, 1e-2
    conv = model[0]
    w_old = torch.cat([conv.weight.detach().reshape(3, -1), conv.bias.detach()[:, None]], 1)

    h = conv(x)                       # (1, 3, 3, 3): P = 9 positions
    h.retain_grad()
    F.cross_entropy(model[3](model[2](model[1](h))), y).backward()
    patches = F.unfold(x, kernel_size=2)[0]                     # (8, 9)
    xa = torch.cat([patches, torch.ones(1, 9, dtype=x.dtype)])  # (9, 9): augmented x̃_p
    v = h.grad[0].reshape(3, 9)                                 # v_p, B = 1
    n_pos = 9
    a_mat = xa @ xa.T / n_pos
    g_mat = v @ v.T / n_pos
    d = v @ xa.T
    assert torch.allclose(d[:, :-1].reshape(conv.weight.shape), conv.weight.grad)
    ua = torch.linalg.eigh(a_mat).eigenvectors
    ug = torch.linalg.eigh(g_mat).eigenvectors
    rot = ug.T @ d @ ua
    step = -lr * ug @ (rot / (rot**2 + lam)) @ ua.T

    opt = DDPNOpt(model, lr=lr, base="ekfac", feedback=False, damping=lam)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    w_new = torch.cat([conv.weight.detach().reshape(3, -1), conv.bias.detach()[:, None]], 1)
    assert torch.allclose(w_new - w_old, step, atol=1e-10, rtol=1e-8)
    assert float(step.abs().max()) > 1e-3


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()


@pytest.mark.parametrize("model_fn", [_conv_model, _mlp], ids=["conv", "mlp"])
def test_ekfac_weight_decay_equals_the_l2_term_in_the_loss(model_fn):
    """``weight_decay=wd`` adds wd·θ to the direction and leaves the curvature factors (built
    from activations and output gradients) alone: the same steps as ``wd=0`` with ½wd|θ|²
    added to the loss. Catches: the decay dropped, doubled, or applied to the factors."""
    wd = 0.05
    g = torch.Generator().manual_seed(2)
    # batches larger than every layer's augmented input (28 for the conv model's Linear), so
    # that the Kronecker factors have no null space: EKFAC's eigenbasis there is arbitrary and,
    # reused between refreshes (update_freq=2), would differ between the runs by rounding alone
    n = 40 if model_fn is _conv_model else 12
    shape = (n, 2, 4, 4) if model_fn is _conv_model else (n, 4)
    batches = [(torch.randn(*shape, generator=g, dtype=torch.float64),
                torch.randint(0, 2, (n,), generator=g)) for _ in range(4)]
    runs = []
    for decay in (True, False):
        model = model_fn()
        opt = DDPNOpt(model, lr=0.1, base="ekfac", feedback=False, damping=0.1, update_freq=2,
                      weight_decay=wd if decay else 0.0)
        for xb, yb in batches:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            if not decay:
                loss = loss + 0.5 * wd * sum((p * p).sum() for p in model.parameters())
            loss.backward()
            opt.step()
        runs.append(copy.deepcopy(model))
    start = model_fn()
    for a, b, s in zip(runs[0].parameters(), runs[1].parameters(), start.parameters(),
                       strict=True):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)
        assert not torch.allclose(a, s, atol=1e-4)


def _padded(padding: object) -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 3, 2, padding=padding), nn.Tanh(), nn.Flatten(),
                         nn.Linear(27, 2)).double()


def test_padding_valid_is_padding_zero():
    """``padding="valid"`` is read as (0, 0): the same DDPNOpt steps (with feedback) as
    ``padding=0``, bit for bit. Catches: the string passed on as a padding size, or refused."""
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64),
                torch.randint(0, 2, (6,), generator=g)) for _ in range(3)]
    runs = []
    for padding in ("valid", 0):
        model = _padded(padding)
        opt = DDPNOpt(model, lr=0.1)
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        runs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    assert not torch.equal(runs[0][0], _padded(0)[0].weight)


@pytest.mark.parametrize(("kw", "message"), [
    ({"padding": "same"}, "padding='same' is not supported; give the padding as integers"),
    ({"padding": 1, "padding_mode": "reflect"}, "padding_mode='reflect' is not supported"),
])
def test_unsupported_convolution_padding_is_refused_by_name(kw, message):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, **kw), nn.Flatten(), nn.Linear(48, 2)).double()
    with pytest.raises(ValueError, match=message):
        DDPNOpt(model, lr=0.1)
