"""Settings changed after construction are checked where they are used, a refused group leaves
the optimizer as it was, and step() refuses what it would not use.

Each test changes one setting the way a scheduler, a callback or a typo would, and checks that
the next step raises an error naming the setting and its value *before* anything is written.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, PARAM_LIST, data, flat, loss_fn, model, train

from dynopt.optim import BBI, HeavyBall, Langevin, NoseHoover, OverdampedLangevin

PRIOR_USERS = ("Langevin", "HeavyBall", "BBI")


def _one_step(m, opt, name):
    x, y = data(1)[0]
    opt.zero_grad()
    loss = loss_fn(m, x, y)
    loss.backward()
    return opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()


def _snapshot(m, opt):
    return flat(m).clone(), copy.deepcopy(opt.state_dict())


def _refused_when_set_later(m, opt, name, key, bad, err, message):
    """Train two steps, set ``group[key] = bad``: the next step raises ``err`` matching
    ``message`` and writes nothing."""
    train(m, opt, data(2), name)
    before = _snapshot(m, opt)
    opt.param_groups[0][key] = bad
    with pytest.raises(err, match=message):
        _one_step(m, opt, name)
    _unchanged(m, opt, before)


def _unchanged(m, opt, before):
    theta, sd = before
    assert torch.equal(flat(m), theta)
    now = opt.state_dict()
    assert now["dynopt"]["global"]["step"] == sd["dynopt"]["global"]["step"]
    for pid, entry in sd["state"].items():
        for k, v in entry.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(now["state"][pid][k], v), k


@pytest.mark.parametrize("name", PRIOR_USERS)
@pytest.mark.parametrize("key, bad, err, message", [
    ("weight_decay", -1.0, ValueError, "weight_decay must be >= 0, got -1.0"),
    ("weight_decay", float("nan"), ValueError, "weight_decay must be finite, got nan"),
    ("weight_decay", "x", TypeError, "weight_decay must be a real number, got 'x'"),
    ("weight_decay", torch.tensor(-2.0), ValueError, "weight_decay must be >= 0, got -2.0"),
])
def test_a_prior_key_set_after_construction_is_checked_before_any_write(name, key, bad, err,
                                                                           message):
    """Before, prior keys were read with float(): a negative weight decay (a scheduler gone
    wrong) anti-regularised silently, and a NaN one was blamed on lr or, in BBI, wrote V = NaN
    into its state during a step that "changed nothing"."""
    m = model()
    opt = FACTORIES[name](m, seed=0, weight_decay=1e-3)
    _refused_when_set_later(m, opt, name, key, bad, err, message)


@pytest.mark.parametrize("key, bad", [("nbeta", 0.0), ("nbeta", -5.0), ("localization", -1.0)])
def test_a_local_posterior_key_set_after_construction_is_checked(key, bad):
    """nβ = 0 ignores the loss and nβ < 0 maximises it: refused at the step, not only at
    construction."""
    m = model()
    opt = FACTORIES["Langevin"](m, seed=0, nbeta=10.0, localization=1.0)
    train(m, opt, data(2), "Langevin")
    before = _snapshot(m, opt)
    opt.param_groups[0][key] = bad
    with pytest.raises(ValueError, match=f"{key} must be"):
        _one_step(m, opt, "Langevin")
    _unchanged(m, opt, before)


@pytest.mark.parametrize("name", ["Langevin", "NoseHooverChain", "HeavyBall", "BBI"])
@pytest.mark.parametrize("flag, bad", [("maximize", 1), ("foreach", "x"), ("fused", "no"),
                                       ("differentiable", 1)])
def test_path_flags_set_after_construction_are_checked(name, flag, bad):
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, data(2), name)
    before = _snapshot(m, opt)
    opt.param_groups[0][flag] = bad
    with pytest.raises(TypeError, match=f"{flag} must be"):
        _one_step(m, opt, name)
    _unchanged(m, opt, before)


def test_a_structural_setting_set_after_construction_is_checked():
    """scope='bogus' ran as if it were 'group' (and saved state no checkpoint would load)."""
    m = model()
    opt = FACTORIES["NoseHooverChain"](m, seed=0)
    train(m, opt, data(2), "NoseHooverChain")
    before = _snapshot(m, opt)
    opt.param_groups[0]["scope"] = "bogus"
    with pytest.raises(ValueError, match="scope must be one of .* got 'bogus'"):
        _one_step(m, opt, "NoseHooverChain")
    _unchanged(m, opt, before)


@pytest.mark.parametrize("name", PARAM_LIST)
@pytest.mark.parametrize("bad", [{"lr": -1.0}, {"betas": (0.9, 0.999)}])
def test_a_refused_param_group_is_not_kept(name, bad):
    """torch appends a group before dynopt validates it: a refused one used to stay, so the
    corrected retry failed ("parameters appear in more than one group"), every later step
    raised, and a group refused for a foreign key was trained anyway."""
    m = model()
    extra = torch.nn.Linear(3, 2).double()
    opt = FACTORIES[name](m, seed=0)
    groups = len(opt.param_groups)
    own = {"dynamics": "langevin"} if name == "Partitioned" else {}
    with pytest.raises(ValueError, match="lr must be >= 0|does not use 'betas'"):
        opt.add_param_group({"params": extra.parameters(), **own, **bad})
    assert len(opt.param_groups) == groups
    train(m, opt, data(2), name)  # still usable
    opt.add_param_group({"params": extra.parameters(), **own, "lr": 0.01})  # the retry works
    assert len(opt.param_groups) == groups + 1


@pytest.mark.parametrize("name", ["Langevin", "OverdampedLangevin", "NoseHoover", "AdLaLa",
                                  "Partitioned"])
def test_step_refuses_keywords_it_would_not_use(name):
    """A misspelt closure keyword used to be swallowed (a step on stale gradients, the closure
    never run), and loss= collided with an internal argument."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    train(m, opt, data(2), name)
    before = _snapshot(m, opt)
    with pytest.raises(TypeError, match="unexpected keyword argument 'closuer'"):
        opt.step(closuer=lambda: 0.0)
    with pytest.raises(TypeError, match="does not read the loss"):
        opt.step(loss=torch.tensor(1.0))
    _unchanged(m, opt, before)
    assert opt.uses_loss is False


def test_optimizers_that_read_the_loss_say_so():
    p = torch.nn.Parameter(torch.ones(2))
    assert BBI([p], lr=0.1).uses_loss is True
    assert Langevin([p], lr=0.1).uses_loss is False


def test_bare_step_of_a_loss_reading_optimizer_names_the_framework_recipes():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="observe_loss.*DynoptTrainer.*FeedLoss"):
        BBI([p], lr=0.1).step()


@pytest.mark.parametrize("cls", [Langevin, HeavyBall])
def test_seed_beyond_64_bits_is_refused(cls):
    """The noise key is 64 bits: seed = 2**64 drew exactly the noise of seed = 0 on the fused
    path, overflowed on the foreach path, and made the optimizer's own checkpoint unloadable."""
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        cls([p], lr=0.1, seed=2**64)
    assert cls([p], lr=0.1, seed=2**64 - 1).seed == 2**64 - 1


def test_a_tensor_hyperparameter_error_names_its_group():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -0\.1\d* \(param group 0\)"):
        Langevin([p], lr=torch.tensor(-0.1))


@pytest.mark.parametrize("scope", ["tensor", "group", "model"])
@pytest.mark.parametrize("before_len, after_len", [(3, 5), (5, 3), (1, 3), (3, 1)])
def test_chain_length_changed_after_the_first_step_is_refused_whole(scope, before_len,
                                                                     after_len):
    """The thermostat variables are sized by chain_length: growing it indexed past them (raw
    IndexError after the first tensors had moved), shrinking it ran on a prefix and saved state
    no checkpoint would load. Now the step is refused before anything moves, and setting it
    back continues exactly as if nothing had happened."""
    m, ref = model(), model()
    kw = dict(lr=0.05, temperature=1e-3, chain_length=before_len, scope=scope, seed=3)
    opt, opt_ref = NoseHoover(m.parameters(), **kw), NoseHoover(ref.parameters(), **kw)
    batches = data(4)
    train(m, opt, batches[:2], "NoseHoover")
    train(ref, opt_ref, batches, "NoseHoover")
    before = _snapshot(m, opt)
    opt.param_groups[0]["chain_length"] = after_len
    where = "scope='model'" if scope == "model" else "param group 0"
    with pytest.raises(ValueError, match=rf"thermostat state of {where} holds "
                                         rf"{2 * before_len} variables .* now needs "
                                         rf"{2 * after_len}.*chain_length"):
        _one_step(m, opt, "NoseHoover")
    _unchanged(m, opt, before)
    opt.param_groups[0]["chain_length"] = before_len
    train(m, opt, batches[2:], "NoseHoover")
    assert torch.equal(flat(m), flat(ref))


@pytest.mark.parametrize("make, key, bad, err, message", [
    (lambda ps: Langevin(ps, lr=0.1, temperature=1e-3), "mass", lambda s: 2.0, TypeError,
     r"mass cannot be a schedule for Langevin; schedulable: \['lr', 'temperature', 'gamma'\] "
     r"\(param group 0\)"),
    (lambda ps: OverdampedLangevin(ps, lr=0.01, temperature=1e-3), "mass", 2.0, ValueError,
     r"param group 0 runs dynamics='overdamped', which does not use 'mass' \(set to 2.0\)"),
    (lambda ps: NoseHoover(ps, lr=0.05, temperature=1e-3), "chain_length", True, TypeError,
     r"chain_length must be an integer, got True of type bool \(param group 0\)"),
    (lambda ps: NoseHoover(ps, lr=0.05, temperature=1e-3), "chain_length", 2.0, TypeError,
     r"chain_length must be an integer, got 2.0"),
    (lambda ps: NoseHoover(ps, lr=0.05, temperature=1e-3, chain_length=3), "xi0", 0.5,
     ValueError, r"xi0 is the initial ξ of a single thermostat \(chain_length=1\); a chain "
                 r"\(chain_length=3\) starts at ξ = 0, got xi0=0.5"),
])
def test_values_refused_at_construction_are_refused_when_set_later(make, key, bad, err,
                                                                   message):
    """Each of these passed when set on a running optimizer: a callable mass was called as a
    schedule, mass on an overdamped group was ignored, chain_length=True hit the cache entry of
    chain_length=1 (True == 1) and xi0 was ignored by a chain. Construction refuses each with
    the same message, and a refused step writes nothing."""
    m = model()
    with pytest.raises(err, match=message):
        make([{"params": list(m.parameters()), key: bad}])
    opt = make(list(m.parameters()))
    _refused_when_set_later(m, opt, type(opt).__name__, key, bad, err, message)


def test_xi0_zero_is_the_chain_start():
    """xi0 = 0 (the constructor's default) is what a chain starts from, so it is accepted."""
    m = model()
    opt = NoseHoover(m.parameters(), lr=0.05, temperature=1e-3, chain_length=3, xi0=0.0)
    train(m, opt, data(1), "NoseHoover")
    assert float(opt.state_dict()["state"][0]["extras"].abs().max()) > 0.0


@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
@pytest.mark.parametrize("name", PARAM_LIST)
def test_a_parameter_made_complex_after_construction_is_refused(name, nonfinite):
    """Construction refuses complex parameters; a model cast with .to(torch.complex64) after
    the optimizer was built used to be stepped (Langevin drew complex normals, half the
    temperature per real component; others failed with raw dtype errors)."""
    m = model(dtype=torch.float32)
    opt = FACTORIES[name](m, seed=0, nonfinite=nonfinite)
    train(m, opt, data(1, dtype=torch.float32), name)
    before = _snapshot(m, opt)
    with warnings.catch_warnings():  # torch: "Complex modules are a new feature"
        warnings.simplefilter("ignore", UserWarning)
        m.to(torch.complex64)
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"does not support complex parameters \(param group 0, "
                                         r"parameter 0 is a torch.complex64 tensor"):
        if name in NEEDS_LOSS:
            opt.step(loss=torch.tensor(1.0))
        else:
            opt.step()
    with warnings.catch_warnings():  # the imaginary parts are 0
        warnings.simplefilter("ignore", UserWarning)
        m.to(torch.float32)
    _unchanged(m, opt, before)
