"""Session 15's probe of Surfing and DDPNOpt: each test failed before its fix.

* surf: snapshots that do not fit (a broadcastable shape, another output size), snapshots holding
  NaN, the divergence report's step, and arguments whose wrong type gave a raw error.
* DDPNOpt: hyperparameters set after construction are checked at the step.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynopt.errors import DivergenceError
from dynopt.optim import DDPNOpt
from dynopt.surfing import surf


def generators(k: int, out: int = 6) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, out)).double()
            for _ in range(k)]


Y = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)
KW = dict(x0=torch.zeros(3, dtype=torch.float64), steps_per_snapshot=5, lr=0.1)


# --- surf: snapshots that do not fit -----------------------------------------------------------
def test_state_dict_snapshot_with_a_broadcastable_shape_is_named():
    """A bias of shape (1,) broadcast inside functional_call: surf ran on a different network."""
    snaps = generators(3)
    sds = [copy.deepcopy(s.state_dict()) for s in snaps]
    sds[1]["2.bias"] = torch.zeros(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"snapshot 1 does not fit model: '2.bias' has shape "
                                         r"\(1,\) but the model's has \(6,\)"):
        surf(sds, Y, model=copy.deepcopy(snaps[0]), **KW)


@pytest.mark.parametrize("out", [1, 5])
def test_module_snapshot_with_another_output_size_is_named(out):
    """Output size 1 broadcast against the targets (a silent run), 5 gave a raw RuntimeError
    in the middle of the run."""
    snaps = generators(3)
    snaps[1] = generators(1, out)[0]
    with pytest.raises(ValueError, match=f"snapshot 1 outputs {out} values per code but "
                                         "snapshot 0 outputs 6"):
        surf(snaps, Y, **KW)


@pytest.mark.parametrize("inner", ["dynamics", "adam"])
@pytest.mark.parametrize("steps", [[5, 5, 5], [5, 5, 0]])
def test_nonfinite_snapshot_is_named(inner, steps):
    """With no steps on it, a NaN snapshot gave NaN loss and work silently; with steps, a
    'diverged ... lower lr' that no lr could cure."""
    snaps = generators(3)
    with torch.no_grad():
        snaps[2][2].bias[0] = float("nan")
    with pytest.raises(ValueError, match="snapshot 2 holds non-finite values in '2.bias'"):
        surf(snaps, Y, **{**KW, "steps_per_snapshot": steps, "inner": inner})
    sds = [s.state_dict() for s in snaps]
    with pytest.raises(ValueError, match="snapshot 2 holds non-finite values in '2.bias'"):
        surf(sds, Y, model=generators(1)[0], **{**KW, "steps_per_snapshot": steps})


# --- surf: the divergence report ---------------------------------------------------------------
def test_divergence_step_counts_the_steps_on_the_snapshot():
    """DivergenceError.step counted the whole run's steps (so steps_per_snapshot[k] = step − 1
    ran past the divergence when earlier snapshots had steps); inner='adam' counted the
    snapshot's. Both now count the snapshot's, and the message gives both."""
    snaps = generators(2)
    snaps[1] = nn.Sequential(nn.Linear(3, 6)).double()   # quadratic U: a large step blows up
    kw = dict(x0=torch.ones(3, dtype=torch.float64), lr=50.0)
    with pytest.raises(DivergenceError, match=r"snapshot 1 at step \d+ of its 300") as info:
        surf(snaps, Y, steps_per_snapshot=[4, 300], **kw)
    step = info.value.step
    assert f"at step {step} of its 300 (step {4 + step} of the run" in str(info.value)
    ok = surf(snaps, Y, steps_per_snapshot=[4, step - 1], **kw)
    assert bool(torch.isfinite(ok.x).all())
    with pytest.raises(DivergenceError, match=f"at step {step} of its {step} "):
        surf(snaps, Y, steps_per_snapshot=[4, step], **kw)


@pytest.mark.parametrize("n", [1, 3])
def test_adam_codes_that_overflow_are_reported_at_their_step(n):
    """inner='adam' checked only the gradient: codes that overflowed at a snapshot's last step
    came back as inf with a NaN loss, and otherwise the error named the step after."""
    g = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6)).double()
    with pytest.raises(DivergenceError, match=f"snapshot 1 at step 1 of its {n} "
                                              r"\(step 1 of the run; chain 0\)") as info:
        surf([g, g], Y, x0=torch.ones(3, dtype=torch.float64), steps_per_snapshot=[0, n],
             lr=1e308, inner="adam")   # Adam's first step lr/(1 − β₁) overflows
    assert info.value.step == 1


# --- surf: arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "exc", "match"), [
    (dict(steps_per_snapshot=2.0), TypeError, "steps_per_snapshot must be an integer, got 2.0"),
    (dict(steps_per_snapshot=[5, 2.5]), TypeError, r"steps_per_snapshot\[1\] must be an integer"),
    (dict(seed=1.5), TypeError, "seed must be an integer, got 1.5"),
    (dict(seed="a"), TypeError, "seed must be an integer, got 'a'"),
    (dict(dtype="float32"), ValueError, "dtype must be torch.float32 or torch.float64"),
    (dict(dtype=torch.int64), ValueError, "dtype must be torch.float32 or torch.float64"),
])
def test_surf_arguments_are_named(kw, exc, match):
    """Before: "'float' object is not iterable", a seed 1.5 silently taken as 1, "invalid
    literal for int()", and torch's own as_tensor() error."""
    with pytest.raises(exc, match=match):
        surf(generators(2), Y, **{**KW, **kw})


# --- DDPNOpt: hyperparameters set after construction ------------------------------------------
def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _step(model: nn.Module, opt: DDPNOpt) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 4, dtype=torch.float64, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


@pytest.mark.parametrize(("base", "key", "value", "exc", "match"), [
    ("sgd", "vxx_reg", float("nan"), ValueError, "vxx_reg must be finite"),     # was taken as 0
    ("sgd", "vxx_reg", -0.5, ValueError, "vxx_reg must be >= 0"),               # was taken as 0
    ("sgd", "weight_decay", -1.0, ValueError, "weight_decay must be >= 0"),     # ran
    ("sgd", "costate", "Bellman", ValueError, "costate must be one of"),        # back-prop
    ("sgd", "expansion", "second", ValueError, "expansion must be one of"),     # Gauss-Newton
    ("sgd", "feedback", "yes", TypeError, "feedback must be a bool"),           # truthy
    ("sgd", "momentum", float("nan"), ValueError, "momentum must be finite"),   # 'lower lr'
    ("rmsprop", "feedback_curvature", "Batch", ValueError, "feedback_curvature must be one of"),
    ("adam", "eps", -1.0, ValueError, "eps must be >= 0"),                      # ran
    ("adam", "betas", (0.9, 1.5), ValueError, r"betas\[1\] must be in \[0, 1\)"),  # complex
    ("ekfac", "update_freq", 0, ValueError, "update_freq must be >= 1"),   # ZeroDivisionError
    ("ekfac", "ekfac_decay", 1.5, ValueError, r"ekfac_decay must be in \[0, 1\)"),  # ran
])
@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
def test_hyperparameter_set_after_construction_is_checked_at_the_step(
        base, key, value, exc, match, nonfinite):
    model = _model()
    opt = DDPNOpt(model, lr=0.05, base=base, nonfinite=nonfinite)
    _step(model, opt)
    before = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict())
    opt.param_groups[0][key] = value
    with pytest.raises(exc, match=rf"{match}.*param group 0.*DDPNOpt step 2: no parameter"):
        _step(model, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert opt.global_state["step"] == 1
    torch.testing.assert_close(opt.state_dict()["state"], state["state"], rtol=0, atol=0)


def test_betas_error_at_construction_names_the_group():
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1.0 \(param "
                                         r"group 0\)"):
        DDPNOpt(_model(), base="adam", betas=(0.9, 1.0))


# --- SnapshotRecorder: resuming a training run -------------------------------------------------
def test_recorder_resumes_from_its_state_dict():
    """The recorder had no state_dict: a resumed run's recorder restarted its count at 0 and
    took the resumed, partly trained network as θ_0 (surfing's benign random start)."""
    import io

    from dynopt.surfing import SnapshotRecorder

    def train(model, opt, rec, n):
        g = torch.Generator().manual_seed(3)
        for _ in range(n):
            loss = model(torch.randn(4, 3, generator=g, dtype=torch.float64)).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    ref_model = generators(1)[0]
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    ref = SnapshotRecorder(ref_model, every=2)
    ref.attach(ref_opt)
    train(ref_model, ref_opt, ref, 3)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    resumed = SnapshotRecorder(copy.deepcopy(ref_model), every=2)   # records the trained net
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.count == 3 and resumed.steps == [0, 2] == ref.steps
    assert all(torch.equal(a[k], b[k]) for a, b in zip(resumed.snapshots, ref.snapshots,
                                                       strict=True) for k in a)
    resumed.step()                                   # step 4 is due
    assert resumed.steps == [0, 2, 4]
    with pytest.raises(ValueError, match=r"state\['steps'\]\[1\] must be <= 1"):
        resumed.load_state_dict({**ref.state_dict(), "count": 1})
    assert resumed.steps == [0, 2, 4]                # unchanged


@pytest.mark.parametrize("track", [1, "no"])
def test_track_must_be_a_bool(track):
    """track="no" switched the diagnostics on (bool("no")); the other flags raise."""
    with pytest.raises(TypeError, match=f"track must be a bool, got {track!r}"):
        DDPNOpt(_model(), track=track)


@pytest.mark.parametrize(("at", "exc", "match"), [
    (5, TypeError, "at must be a sequence of step numbers, got 5"),        # 'int' not iterable
    ("12", TypeError, "at must be a sequence of step numbers, got '12'"),  # at[i] ... '1'
    ([3, 0], ValueError, r"at\[1\] must be >= 1, got 0"),                  # at[i]
])
def test_recorder_at_is_named(at, exc, match):
    from dynopt.surfing import SnapshotRecorder

    with pytest.raises(exc, match=match):
        SnapshotRecorder(generators(1)[0], at=at)
