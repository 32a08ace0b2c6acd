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

from dynopt.optim import LOL, AdLaLa, ECDSep


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


# --- ECDSep with s = 0 at p = 0 ------------------------------------------------------------------
def _ecd_quadratic_run(n, events=None, start=0.0):
    """ECDSep with s = 0 (the authors' ECDSep_s0) on |θ|² + 1 from θ = ``start``."""
    theta = torch.nn.Parameter(torch.full((3,), start, dtype=torch.float64))
    opt = ECDSep([theta], lr=0.05, s=0.0, F0=0.0, nu=0.1, seed=0, events=events)

    def closure():
        opt.zero_grad()
        loss = (theta ** 2).sum() + 1.0
        loss.backward()
        return loss

    for _ in range(n):
        opt.step(closure)
    return theta.detach().clone(), opt


def test_ecdsep_with_s0_at_a_stationary_point_stays_there():
    """With s = 0 and every momentum 0 (a start at a stationary point: p₀ ∝ ∇F = 0) the drift
    2Δt·p/(s + |p|²) divided by zero: a ZeroDivisionError from inside the step. p = 0 now moves
    nothing, as for s > 0."""
    theta, opt = _ecd_quadratic_run(3)
    assert torch.equal(theta, torch.zeros(3, dtype=torch.float64))
    assert opt.step_count == 3
    moved, _ = _ecd_quadratic_run(3, start=0.5)  # (away from it, it descends as before)
    assert (moved.abs() < 0.5).all()


def test_ecdsep_with_s0_energy_event_before_the_start():
    """An energy event read log(s + |p|²) at the first step, where s = 0 and p = 0 (the start
    has not happened yet): ``math.log(0)`` raised 'math domain error'. It is −inf now (the
    formula's value), and a trigger that does not fire leaves the run bit for bit as without
    it."""
    from dynopt.events import EnergyAbove, Stop

    plain, _ = _ecd_quadratic_run(4, start=0.5)
    watched, opt = _ecd_quadratic_run(4, events=[EnergyAbove(1e9, then=Stop())], start=0.5)
    assert torch.equal(plain, watched)
    assert opt.step_count == 4


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_ecdsep_system_with_s0_at_rest_at_its_minimum(backend):
    """The system's map (``dynopt.integrate``) at p = 0 with s = 0 computed 0·2t/0 = NaN and
    reported a divergence ("the step size is beyond the stability limit"); the particle at
    rest at a stationary point now stays there."""
    import numpy as np

    import dynopt
    from dynopt import potentials
    from dynopt.systems import ECDSep as ECDSepSystem

    system = ECDSepSystem(potentials.Harmonic(dim=2), F0=-1.0, s=0.0, nu=0.1)
    tr = dynopt.integrate(system, None, np.zeros((2, 2)), h=0.3, n_steps=3, seed=1,
                          backend=backend)
    assert np.array_equal(tr.q[:, -1], np.zeros((2, 2)))
    assert np.array_equal(tr.p[:, -1], np.zeros((2, 2)))


@pytest.mark.parametrize("make, name", [
    (lambda m, v: AdLaLa([{"params": m[0].parameters()}, {"params": m[2].parameters()}],
                         sigma_a=v), "sigma_a"),
    (lambda m, v: LOL([{"params": m[0].parameters()}, {"params": m[2].parameters()}],
                      temperature=v), "temperature"),
    (lambda m, v: ECDSep(m.parameters(), eta=v), "eta"),
    (lambda m, v: ECDSep(m.parameters(), lr=v), "lr"),
])
def test_an_integer_beyond_the_float_range_is_refused_by_name(make, name):
    """``float(10**400)`` raised 'OverflowError: int too large to convert to float', naming
    no parameter; the shared check (``_validation.check_real``) now names it."""
    with pytest.raises(ValueError, match=f"{name} must be finite, got a int value beyond the "
                                         "float range"):
        make(model(), 10 ** 400)


@pytest.mark.parametrize("name", ["AdLaLa", "LOL", "ECDSep"])
def test_numpy_scalar_hyperparameters_checkpoint_loads_with_weights_only(name, tmp_path):
    """A hyperparameter given as a NumPy scalar (``np.float32(1e-3)``, a value from a
    ``np.logspace`` sweep) was saved as that object, and ``torch.load(path)`` (weights_only,
    torch's default) refused the checkpoint. It is saved as the Python number it holds, and
    the resumed run continues bit for bit."""
    import numpy as np

    kw = {"lr": np.float32(0.05)} if name == "ECDSep" else {"temperature": np.float32(1e-3),
                                                            "lr": np.float64(0.1)}
    m = model()
    opt = FACTORIES[name](m, seed=0, **kw)
    train(m, opt, data(2), name)
    path = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), path)
    sd = torch.load(path)  # weights_only=True
    m2 = copy.deepcopy(m)
    opt2 = FACTORIES[name](m2, seed=1)
    opt2.load_state_dict(sd)
    batches = data(3, seed=5)
    train(m, opt, batches, name)
    train(m2, opt2, batches, name)
    assert torch.equal(flat(m), flat(m2))


def test_per_layer_temperatures_of_lol_are_each_groups_target():
    """LOL with a temperature per layer, a non-unit mass and a Langevin group added later
    (add_param_group), on U = ω²|θ|²/2: each group samples its own τ. Exact in h on a quadratic
    (langevin-thermostats.md §5.2, §5.3): Langevin's ⟨ω²θ²⟩ = τ and stored ⟨p²⟩/M = τ
    (diagnostics()'s kinetic temperature), LM's ⟨ω²θ²⟩ = τ at dt = h²/2; each time average
    within 4 standard errors (20 batch means) of its target."""
    import math

    n, w2, h = 1000, 1.7, 0.5
    g = torch.Generator().manual_seed(0)
    taus = (0.5, 0.1, 0.2)
    thetas = [torch.randn(n, generator=g, dtype=torch.float64) * math.sqrt(t / w2)
              for t in taus]
    opt = LOL([{"params": [thetas[0]], "temperature": taus[0], "gamma": 1.0, "mass": 2.0},
               {"params": [thetas[1]], "temperature": taus[1]}], lr=h, seed=3)
    opt.add_param_group({"params": [thetas[2]], "dynamics": "langevin",
                         "temperature": taus[2], "gamma": 2.0, "mass": 0.5})
    conf, kin = [[] for _ in taus], [[] for _ in taus]
    for step in range(1300):
        for t in thetas:
            t.grad = w2 * t
        opt.step()
        if step >= 300:
            diag = opt.diagnostics(host=True)
            for i, t in enumerate(thetas):
                conf[i].append(float(w2 * (t * t).mean()))
                kin[i].append(diag[i]["kinetic_temperature"])
    assert kin[1][0] is None  # the overdamped group has no momentum
    for i, tau in enumerate(taus):
        for series in (conf[i], kin[i]) if i != 1 else (conf[i],):
            b = torch.tensor(series).reshape(20, -1).mean(1)
            se = float(b.std() / math.sqrt(20))
            assert abs(float(b.mean()) - tau) < 4 * se, (i, float(b.mean()), tau, se)
            assert se < 0.02 * tau  # (a measurement that can tell)
