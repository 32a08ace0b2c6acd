"""Per-layer (AdLaLa, LOL, Partitioned) and ECDSep optimizers, probed as a practitioner would.

* A key put into a param group after construction is checked as construction checks it:
  ECDSep's ``nu``/``eta``, BBI's ``v0`` (settings of the whole optimizer), another optimizer's
  ``betas``/``momentum``/``temperature`` and ``seed`` were refused in a group at construction
  but silently ignored when set on a running optimizer (HeavyBall's ``nbeta`` was even applied).
"""

from __future__ import annotations

import copy

import pytest
import torch
from optim_zoo import FACTORIES, NEEDS_LOSS, data, flat, loss_fn, model, train


def _one_step(m, opt, name):
    x, y = data(1)[0]
    opt.zero_grad()
    loss = loss_fn(m, x, y)
    loss.backward()
    return opt.step(loss=loss) if name in NEEDS_LOSS else opt.step()


@pytest.mark.parametrize("name, key, bad, message", [
    ("ECDSep", "nu", 0.5, r"'nu' is a setting of the whole ECDSep, not of a param group "
                          r"\(param group 0 sets it to 0.5\)"),
    ("ECDSep", "eta", 2.0, r"'eta' is a setting of the whole ECDSep"),
    ("ECDSep", "momentum", 0.9, r"ECDSep does not use 'momentum' \(param group 0 sets it to "
                                r"0.9\)"),
    ("ECDSep", "temperature", 1e-3, r"ECDSep does not use 'temperature'"),
    ("ECDSep", "seed", 7, r"'seed' is a setting of the whole ECDSep"),
    ("BBI", "v0", 1.0, r"'v0' is a setting of the whole BBI"),
    ("BBI", "betas", (0.9, 0.99), r"BBI does not use 'betas'"),
    ("HeavyBall", "temperature", 1e-3, r"HeavyBall does not use 'temperature'"),
    ("HeavyBall", "nbeta", 3.0, r"HeavyBall does not use 'nbeta' \(param group 0 sets it to "
                                r"3.0\)"),
    ("AdLaLa", "seed", 7, r"'seed' is a setting of the whole AdLaLa"),
    ("LOL", "noise", "discrete", r"'noise' is a setting of the whole LOL"),
])
def test_a_key_refused_at_construction_is_refused_when_set_later(name, key, bad, message):
    """Before, each of these keys, set on a running optimizer's group, was silently unused
    (e.g. an attempt to anneal ECDSep's ν through ``group["nu"]``), or worse, HeavyBall's
    ``nbeta`` scaled its gradient through the prior; construction refuses each with the same
    message. The refused step writes nothing, and taking the key out again
    lets the run continue exactly as one that never had it."""
    m = model()
    opt = FACTORIES[name](m, seed=0)
    if name not in ("AdLaLa", "LOL"):  # (their groups are built by the factory)
        with pytest.raises(ValueError, match=message):
            type(opt)([{"params": list(model().parameters()), key: bad}])
    train(m, opt, data(2), name)
    ref_m, ref = copy.deepcopy((m, opt))
    before = flat(m).clone()
    step = opt.step_count
    opt.param_groups[0][key] = bad
    with pytest.raises(ValueError, match=message + r".*set after construction"):
        _one_step(m, opt, name)
    assert torch.equal(flat(m), before) and opt.step_count == step
    del opt.param_groups[0][key]
    _one_step(m, opt, name)
    _one_step(ref_m, ref, name)
    assert torch.equal(flat(m), flat(ref_m))


def test_keys_the_optimizer_reads_may_still_be_added_later():
    """What construction accepts in a group is accepted when set later: a torch scheduler's
    bookkeeping keys (``initial_lr``), HeavyBall's SGD-style ``momentum``, and the
    optimizer-wide value repeated in a group (as ZeroRedundancyOptimizer passes it)."""
    m = model()
    opt = FACTORIES["ECDSep"](m, seed=0)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)  # adds "initial_lr"
    opt.param_groups[0]["nu"] = opt.system.nu
    train(m, opt, data(2), "ECDSep")
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    hb = FACTORIES["HeavyBall"](model(), seed=0)
    hb.param_groups[0]["momentum"] = 0.8
    train(model(), hb, data(1), "HeavyBall")
