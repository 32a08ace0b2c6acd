"""BBI and ECDSep at the edges: system hyperparameters in the checkpoint, float16 norms on the
reference path, 0-dim parameters, a model cast after the first step."""

from __future__ import annotations

import io

import pytest
import torch

from dynopt.optim import BBI, ECDSep, HeavyBall

#: name: (hyperparameters A, other hyperparameters B); every key differs between them.
HYPERS = {
    "bbi": (BBI, {"v0": 0.01, "delta_energy": 0.5, "t0": 3, "n_bounces": 3, "t1": 8,
                  "consistent_energy": True, "eps1": 1e-10, "eps2": 1e-40,
                  "bounce_direction": "cube"},
            {"v0": 0.0, "delta_energy": 2.0, "t0": 1000, "n_bounces": 1, "t1": None,
             "consistent_energy": False, "eps1": 1e-8, "eps2": 1e-30,
             "bounce_direction": "sphere"}),
    "ecdsep": (ECDSep, {"F0": 0.01, "eta": 1.5, "s": 1.0, "nu": 1e-2, "delta_energy": 0.2,
                        "consistent_energy": True, "eps1": 1e-10, "eps2": 1e-40},
               {"F0": 0.0, "eta": 2.0, "s": 3.0, "nu": 0.3, "delta_energy": 1.0,
                "consistent_energy": False, "eps1": 1e-8, "eps2": 1e-30}),
}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)
                               ).double()


def _train(model: torch.nn.Module, opt: torch.optim.Optimizer, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    y = torch.cos(x.sum(1, keepdim=True))
    for _ in range(n):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean() + 0.05
        loss.backward()
        opt.step(loss=loss)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _checkpoint(name: str) -> tuple[dict, torch.Tensor]:
    """A weights-only checkpoint after 5 steps with hyperparameters A, and the parameters of
    the uninterrupted run 15 steps further."""
    cls, a, _ = HYPERS[name]
    m = _model()
    opt = cls(m.parameters(), lr=0.05, seed=1, **a)
    _train(m, opt, 5)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "opt": opt.state_dict()}, buf)
    ref = _train(m, opt, 15)
    buf.seek(0)
    return torch.load(buf, weights_only=True), ref


@pytest.mark.parametrize("name", sorted(HYPERS))
def test_a_resume_into_an_optimizer_built_with_other_hyperparameters_takes_the_saved_ones(name):
    """torch's contract: hyperparameters come from the checkpoint. They were not saved, so the
    resumed run went on with B's dynamics (BBI 0.03 off after 15 steps, ECDSep 0.14)."""
    cls, a, b = HYPERS[name]
    ckpt, ref = _checkpoint(name)
    assert ckpt["opt"]["dynopt"]["system"] == a  # plain values: weights_only=True read them
    m2 = _model(seed=3)
    m2.load_state_dict(ckpt["model"])
    opt2 = cls(m2.parameters(), lr=0.05, seed=99, **b)
    assert opt2.system_hyperparameters() == b
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.system_hyperparameters() == a
    assert torch.equal(_train(m2, opt2, 15), ref)


@pytest.mark.parametrize("name", sorted(HYPERS))
def test_a_checkpoint_without_the_entry_keeps_the_current_hyperparameters(name):
    """Checkpoints written before the entry existed load as before."""
    cls, _, b = HYPERS[name]
    ckpt, _ = _checkpoint(name)
    del ckpt["opt"]["dynopt"]["system"]
    m2 = _model()
    m2.load_state_dict(ckpt["model"])
    opt2 = cls(m2.parameters(), lr=0.05, seed=1, **b)
    opt2.load_state_dict(ckpt["opt"])
    assert opt2.system_hyperparameters() == b
    assert opt2.state_dict()["dynopt"]["global"]["step"] == 5


@pytest.mark.parametrize(("name", "key", "value", "error", "message"), [
    ("bbi", "n_bounces", -1, ValueError, "n_bounces must be >= 0, got -1"),
    ("bbi", "t0", 2.5, TypeError, "t0 must be an integer, got 2.5"),
    ("bbi", "bounce_direction", "ball", ValueError, "bounce_direction"),
    ("ecdsep", "eta", 0.5, ValueError, "eta must be >= 1, got 0.5"),
    ("ecdsep", "nu", -1.0, ValueError, "nu"),
    ("ecdsep", "consistent_energy", 1, TypeError, "consistent_energy must be a bool"),
    ("bbi", "extra", 1.0, ValueError, "must hold exactly"),
    ("ecdsep", None, None, ValueError, "must hold exactly"),
])
def test_a_bad_saved_hyperparameter_is_refused_and_changes_nothing(name, key, value, error,
                                                                   message):
    cls, _, b = HYPERS[name]
    ckpt, _ = _checkpoint(name)
    saved = ckpt["opt"]["dynopt"]["system"]
    if key is None:
        saved.pop("nu")
    else:
        saved[key] = value
    m2 = _model()
    opt2 = cls(m2.parameters(), lr=0.05, seed=1, **b)
    _train(m2, opt2, 2)
    before = opt2.state_dict()
    with pytest.raises(error, match="dynopt\\['system'\\]") as info:
        opt2.load_state_dict(ckpt["opt"])
    assert message in str(info.value) and "left unchanged" in str(info.value)
    after = opt2.state_dict()
    assert after["dynopt"]["system"] == b
    assert after["dynopt"]["global"]["step"] == before["dynopt"]["global"]["step"] == 2
    for pid, st in before["state"].items():
        assert torch.equal(after["state"][pid]["momentum"], st["momentum"])


# --- float16 on the single-tensor reference path ------------------------------------------------
FP16 = {  # name: (class, kwargs, |p|² on the energy shell after the last step)
    # BBI, δE = 0: |Π|² = E₀²/V − V = 400²/50 − 50
    "bbi": (BBI, {"delta_energy": 0.0}, 400.0 ** 2 / 50 - 50),
    # ECDSep, s = 1, η = 1: |p|² = E/V − s = 400(1 + δE)/50 − 1
    "ecdsep": (ECDSep, {"nu": 0.0, "delta_energy": 3e5}, 400 * (1 + 3e5) / 50 - 1),
}


@pytest.mark.parametrize("name", sorted(FP16))
def test_float16_reference_path_agrees_with_the_foreach_path(name):
    """|Π|² of float16 tensors was reduced in float16 on the reference path: the squares of
    elements below 2.4e-4 vanished and a sum above 65504 was inf (BBI: DivergenceError at step
    5; ECDSep: |p|² = 1.6e-10 instead of 2.4e6). The foreach path rounds each tensor's norm to
    float16 (relative 2⁻¹¹), hence the tolerances."""
    cls, kw, shell = FP16[name]
    runs = {}
    for path in ({"foreach": False}, {"foreach": True}):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(1000, dtype=torch.float16))
        opt = cls([p], lr=1e-3, seed=0, **kw, **path)
        for loss in (400.0, 300.0, 200.0, 100.0, 50.0):
            p.grad = (p.detach().float() * 0.01).half()
            opt.step(loss=loss)
        mom = opt.state[p]["momentum"]
        assert mom.dtype == torch.float16
        p2 = float(mom.double().pow(2).sum())
        assert p2 == pytest.approx(shell, rel=2e-3)  # on the energy shell
        runs[path["foreach"]] = (p.detach().double(), mom.double(), p2)
    (p_ref, m_ref, p2_ref), (p_fe, m_fe, p2_fe) = runs[False], runs[True]
    assert p2_ref == pytest.approx(p2_fe, rel=3e-3)
    torch.testing.assert_close(p_ref, p_fe, rtol=0, atol=2e-3)
    torch.testing.assert_close(m_ref, m_fe, rtol=4e-3, atol=1e-2)  # a few float16 ulps


@pytest.mark.parametrize(("scale", "offset", "wd", "loss"), [
    (1.0, 20.0, 1.0, 1.0),      # Σθ² ≈ 4.2e5 > 65504: overflowed to inf
    (1e-4, 0.0, 1e4, 1e-3),     # θ² < 6e-8: underflowed to 0
])
def test_float16_weight_decay_term_of_ecdsep_is_reduced_in_float64(scale, offset, wd, loss):
    """F̃ = ℓ + (wd/2)|θ|² on the reference path equals the foreach path's (which rounds |θ| to
    float16) and the float64 value."""
    got = {}
    for foreach in (False, True):
        torch.manual_seed(0)
        p = torch.nn.Parameter(offset + scale * torch.rand(1000, dtype=torch.float16))
        want = loss + 0.5 * wd * float(p.detach().double().pow(2).sum())
        opt = ECDSep([p], lr=1e-3, seed=0, nu=0.0, weight_decay=wd, foreach=foreach)
        p.grad = (p.detach().float() * 0.01).half()
        opt.step(loss=loss)
        got[foreach] = float(opt.global_state["ecd"]["F"])
    assert got[False] == pytest.approx(want, rel=1e-12)
    assert got[True] == pytest.approx(want, rel=2e-3)


# --- 0-dim parameters ---------------------------------------------------------------------------
def _scalar_run(cls, kw, path, scalar_shape):
    """Eight steps on f = s² + |w|² + 1 with a parameter s of ``scalar_shape`` (() or (1,))."""
    s = torch.nn.Parameter(torch.full(scalar_shape, 1.5, dtype=torch.float64))
    w = torch.nn.Parameter(torch.linspace(-1.0, 2.0, 5, dtype=torch.float64))
    opt = cls([{"params": [s]}, {"params": [w]}], lr=0.1, seed=0, **kw, **path)
    out = []
    for _ in range(8):
        s.grad, w.grad = 2 * s.detach(), 2 * w.detach()
        opt.step(loss=float((s.detach() ** 2).sum() + (w.detach() ** 2).sum()) + 1)
        out.append(torch.cat([s.detach().reshape(1), w.detach()]))
    assert opt.state[s]["momentum"].shape == scalar_shape
    return torch.stack(out)


@pytest.mark.parametrize(("cls", "kw"), [
    (BBI, {"delta_energy": 0.5, "t0": 3, "n_bounces": 2}),                 # start, bounces
    (ECDSep, {"delta_energy": 0.5, "nu": 0.2, "weight_decay": 0.1}),       # start, rotation
], ids=["bbi", "ecdsep"])
def test_a_0_dim_parameter_on_the_reference_path(cls, kw):
    """The reference path wrote shape-(1,) coefficients into 0-dim tensors: RuntimeError
    "output with shape [] doesn't match the broadcast shape [1]". It now equals the run with
    a 1-element parameter bit for bit, and the foreach and default paths."""
    ref = _scalar_run(cls, kw, {"foreach": False}, ())
    assert torch.equal(ref, _scalar_run(cls, kw, {"foreach": False}, (1,)))
    for path in ({"foreach": True}, {}):
        torch.testing.assert_close(_scalar_run(cls, kw, path, ()), ref, rtol=0, atol=1e-12)
    assert (ref[-1] - ref[0]).abs().min() > 1e-3  # every parameter moved


# --- a model cast after the first step ------------------------------------------------------
@pytest.mark.parametrize("path", [{"foreach": True}, {"foreach": False}, {}],
                         ids=["foreach", "single", "default"])
@pytest.mark.parametrize("cls", [BBI, ECDSep, HeavyBall], ids=["bbi", "ecdsep", "heavyball"])
@pytest.mark.parametrize("cast", ["model", "second group"])
def test_a_model_cast_after_the_first_step_is_refused_and_the_step_changes_nothing(cls, path,
                                                                                   cast):
    """After ``model.double()`` ECDSep (every path), BBI and HeavyBall (foreach and
    single-tensor paths) went on with float32 momenta; now refused as the Langevin family
    refuses it, before any group is written (also when only a later group was cast)."""
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = cls([{"params": [m.weight]}, {"params": [m.bias]}], lr=0.1, seed=1, **path)
    x = torch.randn(4, 3)

    def step(loss):
        if cls is HeavyBall:
            opt.step()
        else:
            opt.step(loss=loss.detach())

    for _ in range(2):
        opt.zero_grad()
        loss = m(x).pow(2).sum() + 1
        loss.backward()
        step(loss)
    if cast == "model":
        m.double()
    else:
        m.bias.data = m.bias.data.double()
    opt.zero_grad()
    loss = (m.weight.double() @ x.double().T).T.add(m.bias.double()).pow(2).sum() + 1
    loss.backward()
    params = [p.detach().clone() for p in m.parameters()]
    moms = [opt.state[p]["momentum"].clone() for p in m.parameters()]
    count = opt.state_dict()["dynopt"]["global"]["step"]
    which, shape = (0, r"\(2, 3\)") if cast == "model" else (1, r"\(2,\)")
    with pytest.raises(ValueError, match=rf"state\['momentum'\] of parameter {which} must be a "
                       rf"contiguous torch.float64 tensor of shape {shape} on cpu, got "
                       r"torch.float32"):
        step(loss)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), params, strict=True))
    assert all(torch.equal(opt.state[p]["momentum"], q)
               for p, q in zip(m.parameters(), moms, strict=True))
    assert opt.state_dict()["dynopt"]["global"]["step"] == count == 2


@pytest.mark.parametrize("cls", [BBI, ECDSep], ids=["bbi", "ecdsep"])
def test_a_model_cast_before_the_first_step_trains_in_the_new_dtype(cls):
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    opt = cls(m.parameters(), lr=0.1, seed=1)
    m.double()
    loss = m(torch.randn(4, 3, dtype=torch.float64)).pow(2).sum() + 1
    loss.backward()
    opt.step(loss=loss.detach())
    assert opt.state[m.weight]["momentum"].dtype == torch.float64
