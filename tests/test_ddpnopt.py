"""DDPNOpt: exact equivalence with its base optimizers, the factorized Bellman pass against dense
DDP formulas, the value-Hessian factorization, EKFAC's closed form, errors and resume."""

from __future__ import annotations

import copy
import io
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ddp_dense import dense_step
from torch import nn

from dynopt.errors import DivergenceError
from dynopt.optim import DDPNOpt, make
from dynopt.systems import DDPTrajectory
from dynopt.systems.ddp_layers import AffineLayer, Curvature


def mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(),
                         nn.Linear(8, 3)).to(dtype)


def cnn(seed: int = 1) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Conv2d(2, 2, 2, padding=1, stride=2),
                         nn.Sigmoid(), nn.Flatten(), nn.Linear(8, 3)).double()


def batch(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int = 0) -> list[float]:
    out = []
    for k in range(n):
        x, y = batch(seed=seed + k)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


TORCH_EQUIVALENTS = [
    ("sgd", dict(lr=0.1)),
    ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-3)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)),
    ("rmsprop", dict(lr=1e-2)),
    ("rmsprop", dict(lr=1e-2, alpha=0.9, eps=1e-6, momentum=0.5, centered=True,
                     weight_decay=1e-2)),
    ("adam", dict(lr=1e-2)),
    ("adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
]
TORCH_CLASS = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


@pytest.mark.parametrize(("base", "hp"), TORCH_EQUIVALENTS)
def test_feedback_off_equals_torch_bit_for_bit(base, hp):
    a, b = mlp(), mlp()
    ours = DDPNOpt(a, base=base, feedback=False, **hp)
    ref = TORCH_CLASS[base](b.parameters(), foreach=False, **hp)
    train(a, ours, 8)
    train(b, ref, 8)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("base", ["sgd", "rmsprop", "adam"])
def test_one_layer_network_takes_the_feedback_path_and_still_equals_torch(base):
    """With one layer δx_0 = 0 and Q_u is the gradient: the full backward/extra-forward path
    (not the base-only shortcut) must reproduce torch exactly."""
    def one(seed=0):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(5, 3), nn.Tanh())

    a, b = one(), one()
    hp = dict(lr=0.05, weight_decay=1e-3) | ({"momentum": 0.9} if base != "adam" else {})
    ours = DDPNOpt(a, base=base, feedback=True, vxx_reg=0.1, **hp)
    ref = TORCH_CLASS[base](b.parameters(), foreach=False, **hp)
    train(a, ours, 6)
    train(b, ref, 6)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def _dense_minv(base, batch=False):
    if base == "sgd":
        return lambda t, q, qs: torch.eye(q.numel(), dtype=q.dtype)
    if batch:     # feedback_curvature="batch": M = √E_i[Q_u⁽ⁱ⁾²] + ε
        return lambda t, q, qs: torch.diag(1.0 / ((qs ** 2).mean(0).sqrt() + 1e-8))
    return lambda t, q, qs: torch.diag(1.0 / (q.abs() + 1e-8))   # Adam's 1st step: |Q_u| + ε


DENSE_CASES = [
    ("sgd", {}),
    ("sgd", {"vxx_reg": 0.3}),
    ("sgd", {"expansion": "second-order"}),
    ("sgd", {"costate": "backprop"}),
    ("sgd", {"terminal_hessian": "identity", "vxx_reg": 0.1, "expansion": "second-order"}),
    ("adam", {}),
    ("adam", {"vxx_reg": 0.3, "expansion": "second-order"}),
    ("adam", {"terminal_hessian": "identity"}),
    ("sgd", {"terminal_hessian": "cross-entropy"}),
    ("adam", {"terminal_hessian": "cross-entropy", "expansion": "second-order"}),
    ("adam", {"terminal_hessian": "cross-entropy", "feedback_curvature": "batch"}),
    ("adam", {"feedback_curvature": "batch", "costate": "backprop", "vxx_reg": 0.2}),
]


@pytest.mark.parametrize(("base", "kw"), DENSE_CASES)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_factorized_step_equals_dense_ddp(base, kw, net):
    """One step against DDP written with dense per-sample matrices (tests/ddp_dense.py):
    Q_x, Q_u, Q_xx, Q_ux, V'_x·f_ux by autograd, V_x = Q_x − Q_uxᵀQ_uu⁻¹Q̄_u,
    V_xx = Q_xx − (η/B) Q_uxᵀ M⁻¹ Q_ux, δu = −ηM⁻¹(Q̄_u + E[Q_ux δx]) with δx from an extra
    forward pass. MSE terminal loss, float64."""
    if net == "mlp":
        model = mlp(dtype=torch.float64)
        x = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        n_out = 3
    else:
        model = cnn()
        x = torch.randn(4, 1, 4, 4, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(3))
        n_out = 3
    y = torch.randn(x.shape[0], n_out, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(4))
    lr = 0.3 if base == "sgd" else 0.05
    kw = {"terminal_hessian": "outer", "feedback_curvature": "base", "eps_placement": "qux"} | kw
    ce = kw["terminal_hessian"] == "cross-entropy"
    labels = torch.tensor([0, 2, 1, 1, 0][: x.shape[0]])

    def loss_fn(out):
        if ce:
            return torch.nn.functional.cross_entropy(out, labels)
        return 0.5 * ((out - y) ** 2).sum(1).mean()

    def terminal_grad(out):
        if ce:
            return torch.softmax(out, 1) - torch.nn.functional.one_hot(labels, 3).double()
        return out - y

    ref = dense_step(model, x, terminal_grad, lr=lr,
                     minv=_dense_minv(base, kw["feedback_curvature"] == "batch"),
                     minv_open=_dense_minv(base),
                     vxx_reg=kw.get("vxx_reg", 0.0),
                     second_order=kw.get("expansion") == "second-order",
                     bellman=kw.get("costate", "bellman") == "bellman",
                     terminal_z=kw["terminal_hessian"], eps_placement=kw["eps_placement"])
    plain = copy.deepcopy(model)
    for m, fb in [(model, True), (plain, False)]:
        opt = DDPNOpt(m, lr=lr, base=base, feedback=fb, **kw)
        opt.zero_grad()
        loss_fn(m(x)).backward()
        opt.step()
    layers = [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]
    base_layers = [m for m in plain if isinstance(m, nn.Linear | nn.Conv2d)]
    for t, (layer, pl) in enumerate(zip(layers, base_layers, strict=True)):
        ours = torch.cat([layer.weight.detach().flatten(), layer.bias.detach()])
        off = torch.cat([pl.weight.detach().flatten(), pl.bias.detach()])
        assert torch.allclose(ours, ref["new"][t], rtol=0, atol=1e-12), t
        if t > 0:   # the feedback (and the Bellman costate) really changed the update
            assert (ours - off).abs().max() > 1e-7, t


def test_value_hessian_factorization_on_the_augmented_state():
    """V_xx = Q_xx − Q_uxᵀ Q_uu⁻¹ Q_ux over the augmented state X = (x⁽¹⁾, …, x⁽ᴮ⁾) (cost
    (1/B)Σφ⁽ⁱ⁾, Q_uu = M/η): its diagonal blocks are (1/B)(1 − (η/B) q_u⁽ⁱ⁾ᵀM⁻¹q_u⁽ⁱ⁾) q_x q_xᵀ,
    with the scalar from Curvature.quadratic_forms (a random linear layer, diagonal M)."""
    rng = np.random.default_rng(0)
    bsz, n_in, n_out, eta = 4, 3, 2, 1.5
    layer = AffineLayer(nn.Linear(n_in, n_out).double(), "test")
    w = layer.weight.detach().numpy()
    x = rng.standard_normal((bsz, n_in))
    zh = rng.standard_normal((bsz, n_out))
    m = rng.uniform(0.5, 2.0, size=(n_out, n_in + 1))
    xa = np.concatenate([x, np.ones((bsz, 1))], 1)
    qu = np.stack([np.outer(zh[i], xa[i]).ravel() for i in range(bsz)])    # (B, n_u)
    qx = zh @ w                                                             # (B, n_in)
    nu, n = qu.shape[1], n_in
    quu = np.diag(m.ravel()) / eta
    qux = np.zeros((nu, bsz * n))
    qxx = np.zeros((bsz * n, bsz * n))
    for i in range(bsz):
        qux[:, i * n:(i + 1) * n] = np.outer(qu[i], qx[i]) / bsz
        qxx[i * n:(i + 1) * n, i * n:(i + 1) * n] = np.outer(qx[i], qx[i]) / bsz
    vxx = qxx - qux.T @ np.linalg.solve(quu, qux)
    cur = Curvature(eta=eta, inv=torch.as_tensor(1.0 / m))
    phi, _ = cur.quadratic_forms(torch.as_tensor(zh)[:, None, :, None],
                                 torch.as_tensor(xa)[:, :, None], None)
    s = 1.0 - eta / bsz * phi[:, 0, 0].numpy()
    assert np.allclose(phi[:, 0, 0].numpy(), np.einsum("bu,u,bu->b", qu, 1.0 / m.ravel(), qu))
    assert s.min() < 0 < s.max()            # the case the reference flags: some s_i < 0
    for i in range(bsz):
        block = bsz * vxx[i * n:(i + 1) * n, i * n:(i + 1) * n]
        assert np.allclose(block, s[i] * np.outer(qx[i], qx[i]), atol=1e-12)
        # the clipped factor z = √max(s, 0) q_x gives the PSD projection of the block
        lam, vec = np.linalg.eigh(block)
        proj = (vec * np.clip(lam, 0, None)) @ vec.T
        zf = np.sqrt(max(s[i], 0.0)) * qx[i]
        assert np.allclose(np.outer(zf, zf), proj, atol=1e-10)


def test_trajectory_clips_negative_value_curvature_to_zero():
    """A huge η makes every 1 − (η/B)q_uᵀM⁻¹q_u negative: Z upstream of the last layer is 0."""
    model = mlp(dtype=torch.float64)
    x, y = batch()
    opt = DDPNOpt(model, lr=1e4, base="sgd", track=True, nonfinite="ignore",
                  terminal_hessian="outer")
    opt.zero_grad()
    F.cross_entropy(model(x.double()), y).backward()
    opt.step()
    assert opt.last_info["clipped"][2] == 1.0


def test_ekfac_with_one_sample_is_kfac_in_closed_form():
    """B = 1: A = x̃x̃ᵀ, G = bbᵀ and EKFAC's rescaling S equals the Kronecker eigenvalues, so
    the step is −lr (G ⊗ A + λI)⁻¹ vec(∇) exactly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([1])
    lr, lam = 0.5, 1e-2
    before = [copy.deepcopy(m) for m in (model[0], model[2])]
    acts: dict[str, torch.Tensor] = {}
    h1 = model[0](x)
    h1.retain_grad()
    a1 = model[1](h1)
    h2 = model[2](a1)
    h2.retain_grad()
    F.cross_entropy(h2, y).backward()
    acts = {"x0": x, "x1": a1.detach()}
    grads = [(model[0].weight.grad.clone(), model[0].bias.grad.clone(), h1.grad),
             (model[2].weight.grad.clone(), model[2].bias.grad.clone(), h2.grad)]
    opt = DDPNOpt(model, lr=lr, base="ekfac", feedback=False, damping=lam)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    for layer, old, (gw, gb, gh), xin in zip((model[0], model[2]), before, grads,
                                             (acts["x0"], acts["x1"]), strict=True):
        xa = torch.cat([xin[0], torch.ones(1, dtype=x.dtype)])
        b = gh[0]                                   # B·∂J/∂h with B = 1
        mat = torch.kron(torch.outer(b, b), torch.outer(xa, xa)) + lam * torch.eye(
            b.numel() * xa.numel(), dtype=x.dtype)
        grad = torch.cat([gw, gb[:, None]], 1).reshape(-1)
        step = -lr * torch.linalg.solve(mat, grad)
        new = torch.cat([layer.weight.detach(), layer.bias.detach()[:, None]], 1).reshape(-1)
        oldv = torch.cat([old.weight.detach(), old.bias.detach()[:, None]], 1).reshape(-1)
        assert torch.allclose(new - oldv, step, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("base", ["adam", "ekfac"])
def test_resume_is_bit_exact_through_weights_only_load(base):
    kw = dict(lr=1e-2, vxx_reg=0.05) | ({"damping": 0.1, "update_freq": 3, "momentum": 0.5}
                                         if base == "ekfac" else {})
    a = mlp()
    opt_a = DDPNOpt(a, base=base, **kw)
    train(a, opt_a, 5)
    buf = io.BytesIO()
    torch.save({"model": a.state_dict(), "opt": opt_a.state_dict()}, buf)
    ref = train(a, opt_a, 6, seed=100)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    b = mlp(seed=7)
    b.load_state_dict(ckpt["model"])
    opt_b = DDPNOpt(b, base=base, **kw)
    opt_b.load_state_dict(ckpt["opt"])
    assert train(b, opt_b, 6, seed=100) == ref
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lr_scheduler_and_closure_drive_the_step():
    a, b = mlp(), mlp()
    opt_a = DDPNOpt(a, lr=0.2, base="sgd", feedback=False)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=1, gamma=0.5)
    ref = torch.optim.SGD(b.parameters(), lr=0.2, foreach=False)
    sched_b = torch.optim.lr_scheduler.StepLR(ref, step_size=1, gamma=0.5)
    x, y = batch()
    for opt, m, s in [(opt_a, a, sched), (ref, b, sched_b)]:
        for _ in range(3):
            def closure(opt=opt, m=m):
                opt.zero_grad()
                loss = F.cross_entropy(m(x), y)
                loss.backward()
                return loss
            assert opt.step(closure) is not None
            s.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(("model", "exc", "match"), [
    (lambda: nn.Linear(2, 2), TypeError, "needs an nn.Sequential, got Linear"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)), ValueError,
     r"layer 1 \(BatchNorm1d\): BatchNorm1d is not a supported layer"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 2)), ValueError,
     r"ReLU\(inplace=True\)"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 2)), ValueError,
     r"layer 2 \(Linear\) expects 4 inputs but layer 0 \(Linear\) produces 3"),
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3, groups=2)), ValueError, "grouped convolutions"),
    (lambda: nn.Sequential(nn.Tanh()), ValueError, "at least one nn.Linear or nn.Conv2d"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.PReLU(), nn.Linear(3, 2)), ValueError,
     "PReLU is not a supported layer"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Softmax(dim=1)), ValueError,
     "Softmax is not a supported layer"),
])
def test_unsupported_networks_are_named(model, exc, match):
    with pytest.raises(exc, match=match):
        DDPTrajectory(model())
    with pytest.raises(exc, match=match):
        DDPNOpt(model(), lr=0.1)


@pytest.mark.parametrize(("kw", "match"), [
    (dict(lr=-1.0), "lr must be >= 0, got -1.0"),
    (dict(base="lbfgs"), "base must be one of"),
    (dict(vxx_reg=-0.1), "vxx_reg must be >= 0"),
    (dict(base="adam", betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\)"),
    (dict(nesterov=True), "nesterov=True requires momentum > 0"),
    (dict(base="ekfac", update_freq=0), "update_freq must be >= 1"),
    (dict(base="ekfac", damping=0.0), "damping must be > 0"),
    (dict(betas=(0.9, 0.99)), r"base='sgd' does not use betas=\(0.9, 0.99\)"),
    (dict(base="adam", momentum=0.9), r"base='adam' does not use momentum=0.9"),
    (dict(expansion="full"), "expansion must be one of"),
    (dict(costate="adjoint"), "costate must be one of"),
    (dict(terminal_hessian="exact"), "terminal_hessian must be one of"),
])
def test_bad_hyperparameters_name_the_parameter(kw, match):
    with pytest.raises(ValueError, match=match):
        DDPNOpt(mlp(), **({"lr": 0.1} | kw))


def test_bad_param_groups_and_bad_calls():
    m = mlp()
    with pytest.raises(ValueError, match=r"weight and bias of layer 0 .* different param groups"):
        DDPNOpt(m, lr=0.1, params=[{"params": [m[0].weight]},
                                   {"params": [m[0].bias, m[2].weight, m[2].bias]}])
    with pytest.raises(ValueError, match="not a parameter of the model"):
        DDPNOpt(m, lr=0.1, params=[torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(TypeError, match="needs the model"):
        make("ddpnopt", list(m.parameters()), lr=0.1)
    assert isinstance(make("ddpnopt", mlp(), lr=0.1, base="adam"), DDPNOpt)
    opt = DDPNOpt(m, lr=0.1)
    x, y = batch()
    with torch.no_grad():
        m(x)
    theta = [p.detach().clone() for p in m.parameters()]
    opt.step()  # no gradient anywhere: nothing to step, as torch's optimizers (it raised)
    loss = F.cross_entropy(m(x), y)
    opt.step()  # a forward pass without backward: still no gradient
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), theta, strict=True))
    assert opt.global_state["step"] == 2 and not opt.state
    m[0].weight.grad = torch.zeros_like(m[0].weight)  # a gradient, but none at the output
    with pytest.raises(RuntimeError, match="no gradient reached the output"):
        opt.step()
    m[0].weight.grad = None
    loss.backward()
    opt.step()
    with pytest.raises(RuntimeError, match="no forward pass"):   # the record is consumed
        opt.step()
    F.cross_entropy(m(x), y).backward()
    with torch.no_grad():
        m[0].weight.add_(1.0)
    with pytest.raises(RuntimeError, match="parameters changed after the recorded forward"):
        opt.step()


def test_cross_entropy_terminal_needs_logits():
    m = nn.Sequential(nn.Linear(5, 1), nn.Sigmoid())
    opt = DDPNOpt(m, lr=0.1)
    x, _ = batch()
    opt.zero_grad()
    m(x).mean().backward()
    with pytest.raises(ValueError, match="needs logits of shape"):
        opt.step()


def test_nonfinite_update_raises_and_changes_nothing():
    m = mlp(dtype=torch.float64)
    opt = DDPNOpt(m, lr=1e300, base="sgd", momentum=0.9)
    x, y = batch()
    before = copy.deepcopy(m.state_dict())
    opt.zero_grad()
    F.cross_entropy(m(x.double()), y).backward()
    with pytest.raises(DivergenceError, match=re.escape("non-finite update at step 1")):
        opt.step()
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(len(s) == 0 for s in opt.state.values())


def test_groups_hold_only_their_bases_keys_so_schedulers_cycle_what_is_used():
    """OneCycleLR(cycle_momentum=True) cycles ``betas`` when the optimizer has them: an SGD-based
    DDPNOpt must not carry Adam's betas (it would cycle a key with no effect), and an Adam group
    beside an SGD group gets Adam's keys only."""
    opt = DDPNOpt(mlp(), lr=0.1, base="sgd", momentum=0.9)
    assert "betas" not in opt.defaults and "betas" not in opt.param_groups[0]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10,
                                                max_momentum=0.95)
    assert not sched.use_beta1            # it cycles the momentum SGD reads
    assert opt.param_groups[0]["momentum"] == 0.95
    m = mlp()
    layers = [mod for mod in m if isinstance(mod, torch.nn.Linear)]
    mixed = DDPNOpt(m, lr=0.1, base="sgd", params=[
        {"params": list(layers[0].parameters())},
        {"params": [p for mod in layers[1:] for p in mod.parameters()], "base": "adam"}])
    g0, g1 = mixed.param_groups
    assert {"momentum", "dampening", "nesterov"} <= set(g0) and "betas" not in g0
    assert g1["betas"] == (0.9, 0.999) and g1["eps"] == 1e-8
    assert not {"momentum", "dampening", "nesterov"} & set(g1)
