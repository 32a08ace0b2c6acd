"""DDPNOpt faults: non-finite results of the base-only path (feedback off) are refused like the
feedback path's, checkpoints with bad per-parameter state are refused at load naming the entry,
a checkpoint of another base leaves only that base's keys, and a scheduler's key foreign to a
group's base is refused at the step."""

from __future__ import annotations

import copy
import re

import pytest
import torch
import torch.nn.functional as F
from state_equal import assert_unchanged, snapshot
from torch import nn

from dynopt.errors import DivergenceError
from dynopt.optim import DDPNOpt

TORCH_CLASS = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}
BASE_KW = {
    "sgd": {"momentum": 0.9, "dampening": 0.1},
    "rmsprop": {"momentum": 0.5, "centered": True},
    "adam": {},
}


def mlp(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)


def batch(k: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(k)
    return torch.randn(8, 3, generator=g).to(dtype), torch.randint(0, 2, (8,), generator=g)


def backward(model: nn.Module, opt: torch.optim.Optimizer, k: int = 0, scale: float = 1.0
             ) -> None:
    opt.zero_grad()
    x, y = batch(k, next(model.parameters()).dtype)
    (F.cross_entropy(model(x).double(), y) * scale).backward()


# --- 1. the base-only path checks its result ---------------------------------------------------
@pytest.mark.parametrize("base", ["sgd", "rmsprop", "adam"])
@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_base_only_overflow_changes_nothing_and_skip_continues_as_torch(base, policy):
    """feedback=False, a step whose result overflows float64 (lr = 1e308 set after a good
    step): "raise" names the layer and changes neither parameters nor buffers; "skip" counts it,
    and the run continues exactly as torch's optimizer that never took that step."""
    model, ref = mlp(), mlp()
    kw = BASE_KW[base]
    opt = DDPNOpt(model, lr=1e-2, base=base, feedback=False, nonfinite=policy, **kw)
    topt = TORCH_CLASS[base](ref.parameters(), lr=1e-2, **kw)
    for k in (0, 2):
        backward(ref, topt, k)
        topt.step()
    backward(model, opt, 0)
    opt.step()
    before = snapshot(model, opt)
    opt.param_groups[0]["lr"] = 1e308
    backward(model, opt, 1, scale=1e6)  # |update| ~ 1e308 · 1e5: overflows
    if policy == "raise":
        with pytest.raises(DivergenceError, match=re.escape(
                "non-finite update at step 2 in layer 0 (Linear), weight; no parameter or "
                "optimizer state was changed")):
            opt.step()
        assert opt.global_state["step"] == 1
    else:
        opt.step()
        assert opt.global_state["skipped"] == 1 and opt.global_state["step"] == 2
    assert_unchanged(model, opt, before, global_state=False)
    if policy == "skip":
        opt.param_groups[0]["lr"] = 1e-2
        backward(model, opt, 2)
        opt.step()
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            assert torch.equal(p, q)


@pytest.mark.parametrize(("dtype", "eps", "shown"), [
    (torch.float64, 0.0, "eps=0.0 is 0 in torch.float64"),
    (torch.float16, None, "eps=1e-08 is 0 in torch.float16"),  # Adam's default rounds to 0
])
def test_adam_whose_eps_is_zero_in_the_dtype_is_refused_naming_eps(dtype, eps, shown):
    """eps = 0 (or 1e-8 in float16) with a zero gradient entry gives 0/0 in Adam's step."""
    model = mlp(dtype=dtype)
    opt = DDPNOpt(model, lr=1e-3, base="adam", feedback=False,
                  **({} if eps is None else {"eps": eps}))
    backward(model, opt)
    model[0].weight.grad[0, 0] = 0.0
    before = snapshot(model, opt)
    with pytest.raises(DivergenceError, match=re.escape(
            "layer 0 (Linear), weight; no parameter or optimizer state was changed. Lower lr "
            f"or raise eps ({shown}")):
        opt.step()
    assert_unchanged(model, opt, before, global_state=False)
    assert not any(opt.state.values())


@pytest.mark.parametrize("feedback", [False, True])
def test_an_overflowing_buffer_is_refused_even_where_the_parameters_stay_finite(feedback):
    """float32 Adam, gradients of 1e20: exp_avg_sq = g² overflows to inf while the step
    m/√v is 0, so the parameters stay finite; the buffer would be corrupted for good (and the
    checkpoint refused at load), so the step is refused, naming the buffer."""
    model = mlp(dtype=torch.float32)
    opt = DDPNOpt(model, lr=1e-3, base="adam", feedback=feedback,
                  terminal_hessian="identity")
    opt.zero_grad()
    x, _ = batch(0, torch.float32)
    (model(x).sum() * 1e20).backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    before = snapshot(model, opt)
    with pytest.raises(DivergenceError, match=r"the (weight|bias)'s optimizer state "
                                              r"'exp_avg_sq'"):
        opt.step()
    assert_unchanged(model, opt, before, global_state=False)


# --- 2. checkpoints: per-parameter state is validated ------------------------------------------
def trained(base: str, feedback: bool = True, steps: int = 2, **kw) -> tuple:
    model = mlp()
    opt = DDPNOpt(model, lr=1e-2, base=base, feedback=feedback, **{**BASE_KW.get(base, {}),
                                                                     **kw})
    for k in range(steps):
        backward(model, opt, k)
        opt.step()
    return model, opt, copy.deepcopy(opt.state_dict())


def fresh(model: nn.Module, base: str, feedback: bool = True, reverse: bool = False, **kw
          ) -> DDPNOpt:
    """A new DDPNOpt on a copy of ``model`` (its parameters in reverse order if asked)."""
    m = copy.deepcopy(model)
    params = list(m.parameters())[::-1] if reverse else None
    return DDPNOpt(m, lr=1e-2, base=base, feedback=feedback, params=params,
                   **{**BASE_KW.get(base, {}), **kw})


def assert_refused(opt: DDPNOpt, sd: dict, match: str) -> None:
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                            for g in opt.param_groups])
    with pytest.raises(ValueError, match=re.escape(match)):
        opt.load_state_dict(sd)
    assert not any(opt.state.values())
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    assert opt.global_state["step"] == 0


@pytest.mark.parametrize("base", ["sgd", "rmsprop", "adam", "ekfac"])
@pytest.mark.parametrize("feedback", [False, True])
def test_resume_of_every_base_is_bit_exact(base, feedback):
    """The validated load accepts every state the bases write, and the run continues bit for
    bit."""
    kw = {"momentum": 0.5, "update_freq": 2} if base == "ekfac" else {}
    model, opt, sd = trained(base, feedback, **kw)
    copy_model = copy.deepcopy(model)
    opt2 = DDPNOpt(copy_model, lr=1e-2, base=base, feedback=feedback,
                   **{**BASE_KW.get(base, {}), **kw})
    opt2.load_state_dict(sd)
    for k in range(2, 5):
        backward(model, opt, k)
        opt.step()
        backward(copy_model, opt2, k)
        opt2.step()
    for p, q in zip(model.parameters(), copy_model.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("base", ["sgd", "rmsprop", "adam"])
def test_permuted_parameter_order_is_refused_naming_the_entry(base):
    model, _, sd = trained(base)
    opt = fresh(model, base, reverse=True)
    key = {"sgd": "momentum_buffer", "rmsprop": "square_avg", "adam": "exp_avg"}[base]
    # the saved third tensor (the last weight, 2×4) lands on the first bias (4,); the
    # backward pass made the last layer's entries first
    assert_refused(opt, sd, f"state[2] (param group 0)[{key!r}] has shape (2, 4) but its "
                   "parameter has shape (4,)")


@pytest.mark.parametrize(("base", "key"), [
    ("sgd", "momentum_buffer"), ("rmsprop", "square_avg"), ("rmsprop", "grad_avg"),
    ("rmsprop", "momentum_buffer"), ("adam", "exp_avg"), ("adam", "exp_avg_sq")])
def test_nonfinite_buffers_are_refused_at_load(base, key):
    model, _, sd = trained(base)
    sd["state"][1][key] = torch.full_like(sd["state"][1][key], float("nan"))
    assert_refused(fresh(model, base), sd,
                   f"state[1] (param group 0)[{key!r}] holds non-finite values")


@pytest.mark.parametrize(("base", "key"), [("rmsprop", "square_avg"), ("adam", "exp_avg_sq")])
def test_negative_second_moments_are_refused_at_load(base, key):
    model, _, sd = trained(base)
    sd["state"][2][key][0] = -1.0
    assert_refused(fresh(model, base), sd, f"state[2] (param group 0)[{key!r}] holds negative "
                   "values")


def test_partial_and_foreign_state_entries_are_refused():
    model, _, sd = trained("adam")
    bad = copy.deepcopy(sd)
    del bad["state"][0]["exp_avg_sq"]
    assert_refused(fresh(model, "adam"), bad, "state[0] (param group 0) lacks 'exp_avg_sq'")
    bad = copy.deepcopy(sd)
    bad["state"][0]["momentum_buffer"] = bad["state"][0]["exp_avg"].clone()
    assert_refused(fresh(model, "adam"), bad, "state[0] (param group 0)['momentum_buffer'] is "
                   "not a state of this optimizer")


@pytest.mark.parametrize(("edit", "match"), [
    (lambda st: st[0].__setitem__("ekfac_A", st[0]["ekfac_A"][:3, :3].clone()),
     "state[0] (param group 0)['ekfac_A'] has shape (3, 3), but layer 0 (Linear) needs (4, 4)"),
    (lambda st: st[2]["ekfac_S"].__setitem__((0, 0), float("nan")),
     "state[2] (param group 0)['ekfac_S'] holds non-finite values"),
    (lambda st: st[2]["ekfac_S"].__setitem__((0, 0), -1.0),
     "state[2] (param group 0)['ekfac_S'] holds negative values"),
    (lambda st: st[0].pop("ekfac_UG"), "state[0] (param group 0) lacks 'ekfac_UG'"),
    (lambda st: st[0].__setitem__("step", -1),
     "state[0] (param group 0)['step'] must be a non-negative integer, got -1"),
    (lambda st: st[0].__setitem__("exp_avg", st[0]["ekfac_S"]),
     "state[0] (param group 0)['exp_avg'] is not a state of base='ekfac'"),
    (lambda st: st.__setitem__(1, {"ekfac_buf": torch.zeros(4)}),
     "state[1] (param group 0) holds ['ekfac_buf'], but under base='ekfac' layer 0 (Linear) "
     "keeps its state in its weight's entry"),
], ids=["A-shape", "S-nan", "S-negative", "UG-missing", "step-negative", "foreign-key",
        "bias-entry"])
def test_bad_ekfac_factors_are_refused_at_load(edit, match):
    model, _, sd = trained("ekfac", momentum=0.5)
    edit(sd["state"])
    assert_refused(fresh(model, "ekfac", momentum=0.5), sd, match)


def test_permuted_ekfac_layers_are_refused():
    """Two layers' weights swapped (same optimizer, groups in the other order)."""
    model, _, sd = trained("ekfac")
    m = copy.deepcopy(model)
    opt = DDPNOpt(m, lr=1e-2, base="ekfac", params=[{"params": list(m[2].parameters())},
                                                     {"params": list(m[0].parameters())}])
    sd["param_groups"] = [
        {**sd["param_groups"][0], "params": sd["param_groups"][0]["params"][:2]},
        {**sd["param_groups"][0], "params": sd["param_groups"][0]["params"][2:]}]
    assert_refused(opt, sd, "state[0] (param group 0)['ekfac_A'] has shape (4, 4), but layer 2 "
                   "(Linear) needs (5, 5)")


@pytest.mark.parametrize("feedback", [False, True])
def test_a_checkpoint_of_another_base_leaves_only_that_bases_keys(feedback):
    """torch's rule: the saved hyperparameters win. An sgd checkpoint loaded into a DDPNOpt
    built with base='adam' continues the sgd run bit for bit, and its group holds sgd's keys
    only (no betas/eps a scheduler could cycle); and the other way round."""
    model, opt, sd = trained("sgd", feedback)
    m2 = copy.deepcopy(model)
    other = DDPNOpt(m2, lr=1e-3, base="adam", feedback=feedback)
    other.load_state_dict(sd)
    group = other.param_groups[0]
    assert group["base"] == "sgd" and not {"betas", "eps"} & set(group)
    assert (group["momentum"], group["dampening"]) == (0.9, 0.1)
    for k in range(2, 4):
        backward(model, opt, k)
        opt.step()
        backward(m2, other, k)
        other.step()
    for p, q in zip(model.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p, q)
    model, _, sd = trained("adam", feedback)
    other = DDPNOpt(copy.deepcopy(model), lr=1e-3, base="sgd", momentum=0.9,
                    feedback=feedback)
    other.load_state_dict(sd)
    group = other.param_groups[0]
    assert group["base"] == "adam" and group["betas"] == (0.9, 0.999)
    assert not {"momentum", "dampening", "nesterov"} & set(group)


def test_a_saved_group_lacking_a_key_its_base_reads_is_refused():
    model, _, sd = trained("adam")
    del sd["param_groups"][0]["eps"]
    opt = fresh(model, "sgd")
    assert_refused(opt, sd, "param group 0 (base='adam') lacks 'eps', which its base reads")


# --- 3. a scheduler's key foreign to a group's base --------------------------------------------
def mixed(model: nn.Module, **kw) -> DDPNOpt:
    return DDPNOpt(model, params=[{"params": list(model[0].parameters())},
                                  {"params": list(model[2].parameters()), "base": "adam"}],
                   base="sgd", lr=0.01, momentum=0.5, **kw)


@pytest.mark.parametrize("feedback", [False, True])
def test_onecycle_cycling_momentum_into_an_adam_group_is_refused(feedback):
    model = mlp()
    opt = mixed(model, feedback=feedback)
    torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10)
    assert opt.param_groups[1]["momentum"] == 0.95  # torch wrote it into the adam group
    backward(model, opt)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(
            "DDPNOpt with base='adam' does not use momentum=0.95 (param group 1, set after "
            "construction)")) as err:
        opt.step()
    assert "OneCycleLR(cycle_momentum=False)" in str(err.value)
    assert_unchanged(model, opt, before, global_state=False)
    assert opt.global_state["step"] == 0


def test_onecycle_without_cycle_momentum_drives_mixed_bases():
    """cycle_momentum=False: the same run steps, and each group keeps only its base's keys."""
    model = mlp()
    opt = mixed(model)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=10,
                                                cycle_momentum=False)
    for k in range(3):
        backward(model, opt, k)
        opt.step()
        sched.step()
    assert opt.global_state["step"] == 3
    assert "momentum" not in opt.param_groups[1] and "betas" not in opt.param_groups[0]


@pytest.mark.parametrize(("edit", "match"), [
    (lambda gs: gs[0].__setitem__("betas", (0.9, 0.99)),
     "DDPNOpt with base='sgd' does not use betas=(0.9, 0.99) (param group 0"),
    (lambda gs: gs[1].pop("eps"), "param group 1 (base='adam') lacks 'eps'"),
    (lambda gs: gs[0].__setitem__("base", "adam"),
     "DDPNOpt with base='adam' does not use momentum=0.5 (param group 0"),
    (lambda gs: gs[0].__setitem__("base", "lbfgs"), "base must be one of"),
], ids=["foreign-betas", "missing-eps", "base-switched", "unknown-base"])
def test_keys_changed_after_a_step_are_checked_again(edit, match):
    model = mlp()
    opt = mixed(model)
    backward(model, opt, 0)
    opt.step()
    edit(opt.param_groups)
    backward(model, opt, 1)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(match)):
        opt.step()
    assert_unchanged(model, opt, before, global_state=False)


@pytest.mark.parametrize(("first", "second", "stale"), [
    ("adam", "sgd", "['exp_avg', 'exp_avg_sq', 'step']"),
    ("sgd", "adam", "['momentum_buffer']"),
    ("adam", "ekfac", "['exp_avg', 'exp_avg_sq']"),
])
def test_a_base_switched_after_the_first_step_is_refused(first, second, stale):
    """A group whose base changed (with its keys adjusted) kept the old base's buffers: the
    run went on and its next checkpoint was refused at load. Refused at the step, nothing
    changed; the same switch before the first step is a plain choice."""
    model = mlp()
    opt = DDPNOpt(model, lr=0.05, base=first, **({"momentum": 0.9} if first == "sgd" else {}))
    backward(model, opt, 0)
    opt.step()
    group = opt.param_groups[0]
    fresh = DDPNOpt(mlp(), lr=0.05, base=second).param_groups[0]  # every key of the new base
    for k in [k for k in group if k != "params"]:
        del group[k]
    group.update({k: v for k, v in fresh.items() if k != "params"})
    backward(model, opt, 1)
    before = snapshot(model, opt)
    with pytest.raises(ValueError, match=re.escape(f"param group 0 runs base={second!r}, but its "
                                                   f"state holds {stale} of another base")):
        opt.step()
    assert_unchanged(model, opt, before, global_state=False)
