"""DDPNOpt / DDPTrajectory lines no other test reached (line coverage), each with a property that
fails if the line is wrong: refusals name the layer and leave model and optimizer unchanged,
equivalent configurations agree bit for bit (nested vs flat Sequential, a callable terminal
Hessian vs the built-in one, a frozen last bias under a loss scale vs the unscaled run), caches
stay bounded, and rare numerical branches give what an independent computation gives."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from state_equal import assert_unchanged, snapshot
from torch import nn

from dynopt.ddp.trajectory import _refactor, _regularized_factor
from dynopt.errors import DivergenceError
from dynopt.optim import DDPNOpt
from dynopt.systems import DDPTrajectory
from dynopt.systems.ddp_layers import AffineLayer


def mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Sigmoid(),
                         nn.Linear(5, 3)).to(dtype)


def batch(k: int = 0, n: int = 12, dtype: torch.dtype = torch.float64
          ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(k)
    return torch.randn(n, 4, generator=g).to(dtype), torch.randint(0, 3, (n,), generator=g)


def backward(model: nn.Module, opt: torch.optim.Optimizer, k: int = 0, scale: float = 1.0
             ) -> None:
    opt.zero_grad()
    x, y = batch(k, dtype=next(model.parameters()).dtype)
    (F.cross_entropy(model(x), y) * scale).backward()


def run(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 3, start: int = 0) -> None:
    for k in range(start, start + steps):
        backward(model, opt, k)
        opt.step()


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks for m in model.modules())


# --- construction: refusals and the model's structure (trajectory.py, layers.py) ------------

@pytest.mark.parametrize("kind", [nn.Flatten, nn.Tanh])
def test_a_supported_leaf_that_holds_parameters_is_refused_by_name(kind):
    """trajectory.py:289. Bug caught: dropping the check trains a model whose Flatten/Tanh
    carries a parameter (a user's learnable scale) without ever moving or refusing it."""
    model = nn.Sequential(nn.Linear(4, 6), kind(), nn.Linear(6, 3)).double()
    model[1].register_parameter("scale", nn.Parameter(torch.ones(1, dtype=torch.float64)))
    with pytest.raises(ValueError, match=re.escape(
            f"layer 1 ({kind.__name__}): {kind.__name__} has parameters but is not Linear or "
            "Conv2d")):
        DDPNOpt(model, lr=0.1)
    assert no_hooks(model)


def test_flatten_over_the_batch_axis_is_refused_by_name():
    """layers.py:99. Bug caught: accepting nn.Flatten(start_dim=0), which merges the samples of
    the batch (the per-sample feedback would mix them)."""
    model = nn.Sequential(nn.Linear(4, 6), nn.Flatten(start_dim=0), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=re.escape(
            "layer 1 (Flatten): nn.Flatten(start_dim=0) merges the batch axis")):
        DDPNOpt(model, lr=0.1)
    assert no_hooks(model)


def test_conv_channel_mismatch_is_refused_naming_both_layers():
    """trajectory.py:952. Bug caught: a mismatch of Conv2d channels passing construction (it
    would fail later inside torch with no layer named) or naming the wrong counts."""
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Conv2d(3, 2, 2))
    with pytest.raises(ValueError, match=re.escape(
            "layer 2 (Conv2d) expects 3 channels but layer 0 (Conv2d) produces 2")):
        DDPNOpt(model, lr=0.1)
    assert no_hooks(model)


def test_nested_sequentials_train_exactly_as_the_flat_model():
    """trajectory.py:932-934. Bug caught: a nested Sequential's leaves dropped or appended out
    of order (e.g. ``mods += sub`` lost), so stages, feedback or names would differ from the
    flat model's."""
    flat = mlp()
    nested = mlp()
    nested = nn.Sequential(nested[0], nn.Sequential(nested[1], nn.Sequential(nested[2],
                                                                           nested[3])), nested[4])
    kw = dict(lr=0.5, base="adam", expansion="second-order")
    opt_f, opt_n = DDPNOpt(flat, **kw), DDPNOpt(nested, **kw)
    assert [st.leaf for st in opt_n.trajectory.stages] == [0, 2, 4]
    assert [layer.name for layer in opt_n.trajectory.layers] == [
        "0 (Linear)", "1.1.0 (Linear)", "2 (Linear)"]
    run(flat, opt_f)
    run(nested, opt_n)
    assert same(flat, nested)


def test_a_none_entry_of_the_sequential_is_skipped_and_names_keep_their_positions():
    """trajectory.py:923. Bug caught: treating a ``register_module(name, None)`` slot as a leaf
    (AttributeError) or renumbering the later layers. Such a Sequential cannot run its own
    forward (torch calls None), so this is reachable at construction only."""
    model = mlp()
    model.register_module("5", None)
    model.add_module("6", nn.Tanh())
    traj = DDPTrajectory(model)
    assert len(traj.leaves) == 6 and traj.leaves[5] is model[6]
    assert [layer.name for layer in traj.layers] == ["0 (Linear)", "2 (Linear)", "4 (Linear)"]


def test_identity_activation_is_exactly_transparent():
    """layers.py:80. Bug caught: a wrong σ' for nn.Identity (anything but ones) would change
    V_h, the feedback and the second-order term; with it the model equals the one without the
    Identity bit for bit."""
    plain = mlp()
    ident = mlp()
    ident = nn.Sequential(ident[0], nn.Identity(), ident[1], ident[2], nn.Identity(), ident[3],
                          ident[4], nn.Identity())
    kw = dict(lr=0.5, base="rmsprop", expansion="second-order", terminal_hessian="identity")
    opt_p, opt_i = DDPNOpt(plain, **kw), DDPNOpt(ident, **kw)
    run(plain, opt_p)
    run(ident, opt_i)
    assert same(plain, ident)


def test_the_bias_row_cache_is_bounded_and_each_row_is_right():
    """layers.py:211. Bug caught: dropping the eviction lets the cache of bias rows grow by one
    tensor per distinct batch size / dtype forever (a data loader's last, smaller batch, eval
    batches ...). Each returned row must still be ones (zeros with ones=False)."""
    layer = AffineLayer(nn.Linear(3, 2).double(), "0 (Linear)")
    for n in range(1, 21):
        x = torch.randn(n, 3, dtype=torch.float64)
        xs = layer.inputs(x)
        dx = layer.inputs(x, ones=False)
        assert torch.equal(xs[:, :3, 0], x) and torch.equal(xs[:, 3], torch.ones(n, 1,
                                                                                   dtype=x.dtype))
        assert torch.equal(dx[:, 3], torch.zeros(n, 1, dtype=x.dtype))
        assert len(layer._ones) <= 9


# --- the record (trajectory.py) -------------------------------------------------------------

def test_nominal_forward_records_even_under_no_grad_and_attaches_the_hooks():
    """trajectory.py:395-397. Bug caught: ``nominal_forward`` without ``attach()`` (nothing
    recorded on a fresh trajectory) or without ``enable_grad`` (nothing recorded when called
    inside ``torch.no_grad()``, output not differentiable)."""
    model = mlp()
    traj = DDPTrajectory(model)
    assert not traj.attached
    x, y = batch()
    with torch.no_grad():
        out = traj.nominal_forward(x)
    assert traj.attached and out.requires_grad
    F.cross_entropy(out, y).backward()
    rec = traj.record()
    h = x
    for i, m in enumerate(model):
        h = m(h).detach()
        assert torch.equal(rec.outs[i], h)
    assert torch.equal(rec.x0, x)
    traj.detach()


def test_calling_a_later_layer_alone_records_nothing_and_step_refuses():
    """trajectory.py:418. Bug caught: a later layer's hook reading a missing record
    (AttributeError inside the user's call) when no full forward pass was recorded."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5)
    before = snapshot(model, opt)
    opt.zero_grad()
    model[2](torch.randn(7, 6, dtype=torch.float64)).sum().backward()
    assert opt.trajectory._rec is None
    with pytest.raises(RuntimeError, match="no forward pass of the model was recorded"):
        opt.step()
    assert_unchanged(model, opt, before)


def test_a_partial_forward_from_the_first_layer_is_refused_as_incomplete():
    """trajectory.py:442. Bug caught: stepping on a record whose later activations are
    missing (the user ran ``model[0](x)`` with gradients on after ``backward()``)."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5)
    run(model, opt, 1)
    backward(model, opt, 1)
    before = snapshot(model, opt)
    model[0](batch(2)[0])
    with pytest.raises(RuntimeError, match="the recorded forward pass is incomplete; call "
                                           "loss.backward()"):
        opt.step()
    assert_unchanged(model, opt, before)


def test_a_forward_with_every_parameter_frozen_is_refused():
    """trajectory.py:445. Bug caught: stepping with stale gradients on a record whose output
    needs no gradient (every parameter frozen before the last forward pass): no activation
    gradient exists for the feedback."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5)
    run(model, opt, 1)
    backward(model, opt, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    model(batch(2)[0])
    before = snapshot(model, opt)
    with pytest.raises(RuntimeError, match=re.escape(
            "the output of the recorded forward pass does not require grad (every parameter "
            "frozen?)")):
        opt.step()
    assert_unchanged(model, opt, before)


def test_the_gradient_unit_fit_runs_once_per_record(monkeypatch):
    """trajectory.py:479. Bug caught: re-fitting the loss-scale factor on a record already
    brought to the parameters' units (a second Bellman pass over the same record, e.g. a
    user's diagnostics before step()): the fit reads every gradient and solves a least-squares
    problem each time. The activation gradients must be converted exactly once."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5)
    backward(model, opt, 0, scale=1024.0)
    for p in model.parameters():
        p.grad.div_(1024.0)      # GradScaler.unscale_
    traj = opt.trajectory
    calls = []
    real = traj._reconcile
    monkeypatch.setattr(traj, "_reconcile", lambda rec: calls.append(1) or real(rec))
    rec = traj.record()
    traj._prepare(rec)
    grads = {i: g.clone() for i, g in rec.grads.items()}
    traj._prepare(rec)
    assert calls == [1]
    assert all(torch.equal(rec.grads[i], g) for i, g in grads.items())
    ref = mlp()
    ref_opt = DDPNOpt(ref, lr=0.5)
    backward(ref, ref_opt, 0)
    assert all(torch.equal(rec.grads[i], g) for i, g in ref_opt.trajectory.record().grads.items())


def test_a_frozen_last_bias_under_a_loss_scale_steps_as_the_unscaled_run():
    """trajectory.py:562-564. Bug caught: fitting the loss-scale factor over the frozen bias's
    entries too (its gradient is None, taken as 0, while the record implies a nonzero one): the
    factor is then off and the scaled run leaves the unscaled one."""
    a, b = mlp(), mlp()
    for m in (a, b):
        m[4].bias.requires_grad_(False)
    kw = dict(lr=0.5, base="sgd", momentum=0.9)
    opt_a, opt_b = DDPNOpt(a, **kw), DDPNOpt(b, **kw)
    for k in range(3):
        backward(a, opt_a, k, scale=2.0 ** 12)
        for p in a.parameters():
            if p.grad is not None:
                p.grad.div_(2.0 ** 12)       # what GradScaler.unscale_ does
        opt_a.step()
        backward(b, opt_b, k)
        opt_b.step()
    assert same(a, b)
    assert not torch.equal(a[0].weight, mlp()[0].weight)


def _ce_factor(out: torch.Tensor, vxt: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(out, dim=1)
    sp = p.sqrt()
    return torch.diag_embed(sp) - sp.unsqueeze(2) * p.unsqueeze(1)


def test_a_callable_terminal_hessian_equal_to_the_builtin_gives_the_same_steps():
    """trajectory.py:602,608. Bug caught: the callable's result not used (or the call given the
    wrong arguments): a callable equal to the cross-entropy factor must give the built-in
    run's parameters bit for bit, and one giving a different factor must not."""
    a, b, c = mlp(), mlp(), mlp()
    run(a, DDPNOpt(a, lr=0.5, terminal_hessian="cross-entropy"))
    run(b, DDPNOpt(b, lr=0.5, terminal_hessian=_ce_factor))
    run(c, DDPNOpt(c, lr=0.5, terminal_hessian=lambda out, g: 3.0 * _ce_factor(out, g)))
    assert same(a, b)
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize(("bad", "got"), [
    (lambda out, g: g, "torch.Size([12, 3])"),
    (lambda out, g: g.unsqueeze(1)[..., :2], "torch.Size([12, 1, 2])"),
    (lambda out, g: torch.zeros(5, 1, 3, dtype=out.dtype), "torch.Size([5, 1, 3])"),
    (lambda out, g: g.tolist()[:1], "[["),
])
def test_a_callable_terminal_hessian_of_the_wrong_shape_is_refused(bad, got):
    """trajectory.py:603-607. Bug caught: any one of the shape checks dropped, so a factor of
    the wrong shape is broadcast or reshaped into a wrong V_xx (or fails deep inside with no
    hint); the refusal names what was returned and the output shape and changes nothing."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5, terminal_hessian=bad)
    backward(model, opt)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(
            "terminal_hessian must return a (B, r, *output.shape[1:]) tensor; got ") + ".*"
            + re.escape(got) + ".*" + re.escape("for output shape (12, 3)")):
        opt.step()
    assert_unchanged(model, opt, before)


# --- backward pass: rare branches -----------------------------------------------------------

def test_vxx_reg_of_a_layer_without_feedback_reaches_the_layer_below():
    """trajectory.py:709. Bug caught: a layer with feedback off dropping its own ε_Vxx (V_xx =
    Q_xx + εI, Algorithm 3 line 12) from the value Hessian it hands down. With the costate
    "backprop" and feedback off in the last layer, ε_Vxx placed on the last layer's V_xx
    ("vxx") must equal ε inside the middle layer's Q_ux ("qux"), to rounding."""
    eps = 0.5

    def groups(m, vxx_mid, place_mid, vxx_last):
        return [{"params": [*m[0].parameters(), *m[2].parameters()], "vxx_reg": vxx_mid,
                 "eps_placement": place_mid},
                {"params": list(m[4].parameters()), "feedback": False, "vxx_reg": vxx_last}]

    a, b, c = mlp(), mlp(), mlp()
    kw = dict(lr=0.5, costate="backprop")
    run(a, DDPNOpt(a, params=groups(a, 0.0, "vxx", eps), **kw), 2)
    run(b, DDPNOpt(b, params=groups(b, eps, "qux", 0.0), **kw), 2)
    run(c, DDPNOpt(c, params=groups(c, 0.0, "vxx", 0.0), **kw), 2)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert (a[2].weight - c[2].weight).abs().max() > 1e-6      # ε does change the step


def test_nonfinite_curvature_under_vxx_reg_is_a_divergence_not_a_linalg_error():
    """trajectory.py:811-812. Bug caught: the eigendecomposition run on a non-finite value
    Hessian (torch raises a LinAlgError from inside the backward pass, or returns garbage):
    the factor must be NaN so the optimizer's finiteness check reports the step and changes
    nothing."""
    s = torch.tensor([[[-float("inf")]], [[0.5]]], dtype=torch.float64)
    qx = torch.randn(2, 1, 3, dtype=torch.float64)
    z, clipped = _regularized_factor(s, qx, 1e-3, True)
    assert z.shape == (2, 3, 3) and z.dtype == qx.dtype and bool(z.isnan().all())
    assert clipped is None
    model = mlp()
    opt = DDPNOpt(model, lr=0.5, vxx_reg=1e-3)
    run(model, opt, 1)
    before = snapshot(model, opt)
    opt.param_groups[0]["lr"] = 1e300        # S = I − (η/B)Φ overflows
    backward(model, opt, 1)
    with pytest.raises(DivergenceError, match="non-finite update at step 2 in .*no parameter "
                                              "or optimizer state was changed"):
        opt.step()
    assert_unchanged(model, opt, before)


def _check_refactor(s: torch.Tensor, qx: torch.Tensor, expected: float) -> None:
    z, clipped = _refactor(s, qx, diagnostics=True)
    v = qx.transpose(1, 2) @ s @ qx
    lam, vec = torch.linalg.eigh(v)
    proj = vec @ torch.diag_embed(lam.clamp(min=0)) @ vec.transpose(1, 2)
    torch.testing.assert_close(z.transpose(1, 2) @ z, proj, rtol=1e-12, atol=1e-12)
    dense = [bool(lam[i].min() < -1e-9 * lam[i].abs().max()) for i in range(len(lam))]
    assert sum(dense) / len(dense) == expected
    assert float(clipped) == expected
    assert _refactor(s, qx, diagnostics=False)[1] is None


def test_refactor_diagnostics_count_samples_with_negative_curvature():
    """trajectory.py:868-869. Bug caught: a wrong fraction of projected samples in
    ``last_info["clipped"]``: sum instead of mean, or rounding-level eigenvalues of a PSD but
    singular q_xᵀ S q_x counted as negative (no tolerance). Checked against dense
    eigendecompositions; the factor must be that of the PSD projection."""
    g = torch.Generator().manual_seed(3)
    eye = torch.eye(3, dtype=torch.float64)
    # r = 3 > dim x = 2: the QR/eigh path; samples 1 and 3 indefinite
    qx = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    s = eye.repeat(4, 1, 1)
    s[1] = torch.diag(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    s[3] = -eye
    _check_refactor(s, qx, 0.5)
    # r = 3 < dim x = 5, S = U diag(1, 0, 1) Uᵀ (PSD, singular: Cholesky fails, eigenvalues of
    # R S Rᵀ at rounding level around 0) in 14 samples, indefinite in the last 2
    bsz = 16
    u = torch.linalg.qr(torch.randn(bsz, 3, 3, generator=g, dtype=torch.float64))[0]
    s = u @ torch.diag(torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)) @ u.transpose(1, 2)
    s[-2:] = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    qx = torch.randn(bsz, 3, 5, generator=g, dtype=torch.float64)
    _check_refactor(s, qx, 2 / bsz)


# --- the optimizer (ddpnopt.py) -------------------------------------------------------------

def test_a_feedback_group_added_later_attaches_the_hooks():
    """ddpnopt.py:295. Bug caught: ``add_param_group`` not re-syncing the hooks, so a model
    whose first group had feedback off never records and the added feedback group's first step
    raises. With it, the run equals one whose groups were given at construction."""
    def groups(m):
        return ([{"params": [*m[0].parameters(), *m[2].parameters()], "feedback": False}],
                {"params": list(m[4].parameters()), "feedback": True})

    a, b = mlp(), mlp()
    first, later = groups(a)
    opt_a = DDPNOpt(a, lr=0.5, params=first)
    assert not opt_a.trajectory.attached
    opt_a.add_param_group(later)
    assert opt_a.trajectory.attached
    assert opt_a.trajectory.watched == {id(p) for p in a.parameters()}
    first, later = groups(b)
    opt_b = DDPNOpt(b, lr=0.5, params=[*first, later])
    run(a, opt_a)
    run(b, opt_b)
    assert same(a, b)


def test_feedback_switched_on_after_construction_refuses_one_step_then_records():
    """ddpnopt.py:486-487. Bug caught: not attaching the hooks when a group's feedback is
    switched on after construction (every later step would refuse), or stepping on a missing
    record. The refused step changes nothing; from the next batch on the run equals a fresh
    feedback optimizer's."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5, feedback=False)
    run(model, opt, 1)
    opt.param_groups[0]["feedback"] = True
    backward(model, opt, 1)
    before = snapshot(model, opt)
    with pytest.raises(RuntimeError, match=re.escape(
            "DDPNOpt was not recording activations (the feedback was off in every param "
            "group); run a new forward and backward pass before step()")):
        opt.step()
    assert_unchanged(model, opt, before)
    ref = copy.deepcopy(model)
    run(model, opt, 2, start=2)
    run(ref, DDPNOpt(ref, lr=0.5), 2, start=2)
    assert same(model, ref)


@pytest.mark.parametrize(("edit", "exc", "match"), [
    (None, TypeError, "state_dict must be a dict, got list"),
    (lambda sd: {**sd, "state": [1, 2]}, (TypeError, ValueError), "state"),
    (lambda sd: {**sd, "param_groups": []}, ValueError, "group"),
    (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0], "params": 5}]},
     (TypeError, ValueError), "params"),
    (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0],
                                         "params": sd["param_groups"][0]["params"][:2]}]},
     ValueError, "group"),
])
def test_malformed_checkpoints_are_left_to_the_generic_validation(edit, exc, match):
    """ddpnopt.py:391,395,399. Bug caught: the EKFAC/second-moment pre-check indexing into a
    checkpoint whose structure is wrong (391: what a load pre-hook returned) (AttributeError/KeyError/TypeError with no context)
    instead of letting the generic validation name the problem; the optimizer is unchanged."""
    model = mlp()
    opt = DDPNOpt(model, lr=1e-2, base="ekfac")
    run(model, opt, 2)
    sd = opt.state_dict()
    before = snapshot(model, opt)
    if edit is None:     # a load pre-hook may return anything; what it returns is validated
        opt.register_load_state_dict_pre_hook(lambda o, d: list(d.items()))
    with pytest.raises(exc, match=match):
        opt.load_state_dict(sd if edit is None else edit(sd))
    assert_unchanged(model, opt, before)


def test_the_group_key_check_cache_is_bounded_and_still_refuses_after_eviction():
    """ddpnopt.py:456. Bug caught: the set of checked key signatures never evicted (it grows by
    one entry per distinct group key set, e.g. a scheduler adding a counter key each step);
    after eviction a foreign key is still refused."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5, feedback=False)
    group = opt.param_groups[0]
    for i in range(300):
        group[f"extra_{i}"] = i
        opt._check_group_keys()
        assert len(opt._keys_checked) <= 257
    group["betas"] = (0.9, 0.99)
    with pytest.raises(ValueError, match=r"base='sgd' does not use betas=\(0\.9, 0\.99\) "
                                         r"\(param group 0, set after construction\)"):
        opt._check_group_keys()


def test_skip_in_the_feedback_path_changes_nothing_and_drops_the_record():
    """ddpnopt.py:560-561. Bug caught: committing a non-finite feedback step under
    ``nonfinite="skip"``, or keeping its record (a second step() on the same batch would then
    run on it instead of refusing). The run continues exactly as one that never saw the batch."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.5, base="adam", nonfinite="skip")
    run(model, opt, 1)
    ref, ref_opt = copy.deepcopy((model, opt))
    before = snapshot(model, opt)
    opt.param_groups[0]["lr"] = 1e300
    backward(model, opt, 1)
    opt.step()
    assert opt.global_state["skipped"] == 1
    assert opt.global_state["step"] == 2
    assert_unchanged(model, opt, (*before[:2], {**before[2], "skipped": 1, "step": 2}))
    with pytest.raises(RuntimeError, match="no forward pass of the model was recorded"):
        opt.step()
    opt.param_groups[0]["lr"] = 0.5
    run(model, opt, 2, start=2)
    run(ref, ref_opt, 2, start=2)
    assert same(model, ref)


def test_a_nonfinite_updated_output_is_named_as_the_network_output():
    """ddpnopt.py:654-655. Bug caught: reporting the updated network's output (finite new
    parameters whose output overflows) as some layer's weight, or naming a layer other than the
    last one after which the output is taken. Layer 0 is frozen, so the new parameters (about
    5e27) stay finite in float32 while the output (about 5e39) overflows."""
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        for i in (0, 2):
            model[i].weight.copy_(torch.eye(2))
            model[i].bias.zero_()
    model[0].requires_grad_(False)
    opt = DDPNOpt(model, lr=1e16)
    x = torch.tensor([[1e12, 1e12], [2e12, 1e12]])
    y = torch.tensor([0, 1])
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    before = snapshot(model, opt)
    with pytest.raises(DivergenceError, match=re.escape(
            "non-finite update at step 1 in the updated network's output (after layer 2 "
            "(Linear)); no parameter or optimizer state was changed")) as err:
        opt.step()
    assert err.value.chain == 1
    assert_unchanged(model, opt, before)


def test_frozen_or_gradless_tensors_are_skipped_by_the_base_only_path():
    """ddpnopt.py:603. Bug caught: the base-only step (feedback off) touching a tensor without
    a gradient (crash) or a frozen one that still holds an old gradient (it would move). The
    rest equals torch.optim.SGD bit for bit."""
    a, b = mlp(), mlp()
    opt = DDPNOpt(a, lr=0.1, feedback=False, momentum=0.9)
    b[0].weight.requires_grad_(False)
    ref = torch.optim.SGD([p for p in b.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.9, foreach=False)
    backward(a, opt, 0)
    a[0].weight.requires_grad_(False)    # frozen, keeps its gradient from batch 0
    a[0].bias.grad = None                # trainable, no gradient
    w0, b0 = a[0].weight.clone(), a[0].bias.clone()
    opt.step()
    for k in range(1, 3):
        backward(a, opt, k)
        opt.step()
    for k in range(3):
        ref.zero_grad()
        x, y = batch(k)
        F.cross_entropy(b(x), y).backward()
        if k == 0:
            b[0].bias.grad = None
        ref.step()
    assert torch.equal(a[0].weight, w0) and not torch.equal(a[0].bias, b0)
    assert same(a, b)


def _ekfac_checkpoint(momentum: float = 0.0) -> tuple[nn.Module, DDPNOpt, dict]:
    model = mlp()
    opt = DDPNOpt(model, lr=1e-2, base="ekfac", damping=0.1, update_freq=2, momentum=momentum)
    run(model, opt, 3)
    return model, opt, copy.deepcopy(opt.state_dict())


def _resume(model: nn.Module, sd: dict, momentum: float = 0.0) -> tuple[nn.Module, DDPNOpt]:
    m = copy.deepcopy(model)
    opt = DDPNOpt(m, lr=1e-2, base="ekfac", damping=0.1, update_freq=2, momentum=momentum)
    opt.load_state_dict(sd)
    return m, opt


@pytest.mark.parametrize("as_tensor", [False, True])
def test_an_ekfac_checkpoint_resumes_bit_for_bit(as_tensor):
    """ddpnopt.py:720,727. Bug caught: refusing an EKFAC checkpoint without the optional
    momentum buffer (momentum 0), or one whose step count is a one-element tensor (as some
    converters write it); either must resume exactly as the uninterrupted run."""
    model, opt, sd = _ekfac_checkpoint()
    assert "ekfac_buf" not in sd["state"][0]
    if as_tensor:
        for entry in sd["state"].values():
            if "step" in entry:
                entry["step"] = torch.tensor(entry["step"])
    m, opt2 = _resume(model, sd)
    run(model, opt, 3, start=3)
    run(m, opt2, 3, start=3)
    assert same(model, m)


@pytest.mark.parametrize(("value", "shown"), [
    (lambda t: t.long(), "a torch.int64 tensor (torch.strided)"),
    (lambda t: t.to_sparse(), "a torch.float64 tensor (torch.sparse_coo)"),
    (lambda t: t.tolist(), "list"),
    (lambda t: None, "NoneType"),
])
def test_an_ekfac_factor_that_is_not_a_dense_float_tensor_is_refused(value, shown):
    """ddpnopt.py:730-732. Bug caught: accepting an integer, sparse or non-tensor factor (the
    update would fail or compute in the wrong dtype), or a message that does not say what was
    found; the optimizer is unchanged."""
    model, opt, sd = _ekfac_checkpoint()
    sd["state"][2]["ekfac_G"] = value(sd["state"][2]["ekfac_G"])
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(
            "cannot load the checkpoint: state[2] (param group 0)['ekfac_G'] must be a dense "
            f"floating tensor, got {shown}; the optimizer was left unchanged")):
        opt.load_state_dict(sd)
    assert_unchanged(model, opt, before)


@pytest.mark.parametrize("n", [12, 7])
def test_a_later_layer_run_on_its_own_between_backward_and_step_changes_nothing(n):
    """Bug fixed with this test: a layer run on its own with gradients on after ``backward()``
    (``model[2](h)``, to inspect it) overwrote that layer's recorded activations with another
    input's, so step() used them: a silently wrong step (same batch size) or a shape error.
    The step must equal the one without the extra call, bit for bit."""
    a, b = mlp(), mlp()
    opt_a, opt_b = DDPNOpt(a, lr=0.5, base="adam"), DDPNOpt(b, lr=0.5, base="adam")
    for k in range(2):
        backward(a, opt_a, k)
        a[2](torch.randn(n, 6, dtype=torch.float64))
        a[3](torch.randn(n, 5, dtype=torch.float64))
        opt_a.step()
        backward(b, opt_b, k)
        opt_b.step()
    assert same(a, b)
