"""Host synchronisations that a GPU would make, counted on the CPU.

On CUDA, every read of a device value on the host (``item``, ``float``, ``bool``) and every
tensor built from host data (``torch.tensor(list, device="cuda")``, ``torch.as_tensor(array,
device="cuda")``, a Python list used as an index) waits for the device: the latter is a copy from
pageable memory, which synchronises the stream. The CPU makes neither wait, so
:class:`HostTraffic` counts the aten calls behind them instead (``aten._local_scalar_dense`` and
``aten.lift_fresh``), each with the dynopt line that made it. The steady steps of the optimizers
and the per-call work of the torch potentials must make none of the second kind and only the
reads their docs state (tests/test_device.py counts the real synchronisations on a GPU).
"""

from __future__ import annotations

import copy
import math
import traceback

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.backends.torch import ops as tops
from dynopt.events import AtStep, LossBelow, SetFriction, Stop
from dynopt.optim import BBI, AdaptiveLangevin, HeavyBall, NoseHoover, Partitioned
from dynopt.optim import bound as bound_module
from dynopt.optim.partitioned import Partitioned as _Partitioned

aten = torch.ops.aten
F64 = torch.float64


def _site() -> str:
    frames = [f for f in traceback.extract_stack() if "/dynopt/" in f.filename]
    if not frames:
        return "?"
    f = frames[-1]
    return f"{f.filename.split('/dynopt/')[-1]}:{f.lineno}"


class HostTraffic(TorchDispatchMode):
    """Records ``("tensor from host data", site)`` for ``aten.lift_fresh`` and ``("read",
    site)`` for ``aten._local_scalar_dense``; ``reads_of`` filters the reads of one tensor's
    storage."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is aten.lift_fresh.default:
            self.events.append(("tensor from host data", _site(), 0))
        elif func is aten._local_scalar_dense.default:
            self.events.append(("read", _site(), args[0].untyped_storage().data_ptr()))
        return func(*args, **(kwargs or {}))

    def made(self) -> list[str]:
        return [s for k, s, _ in self.events if k == "tensor from host data"]

    def reads(self) -> list[str]:
        return [s for k, s, _ in self.events if k == "read"]

    def reads_of(self, t: torch.Tensor) -> int:
        ptr = t.untyped_storage().data_ptr()
        return sum(k == "read" and p == ptr for k, _, p in self.events)


def _params(seed: int = 0, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(9, 3, generator=g, dtype=dtype).requires_grad_(),
            torch.randn(9, generator=g, dtype=dtype).requires_grad_()]


def _grads(ps: list[torch.Tensor], k: int) -> None:
    g = torch.Generator().manual_seed(100 + k)
    for p in ps:
        p.grad = 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype)


def _steady_traffic(opt, ps, loss_of=None, warm=2, steps=4):  # type: ignore[no-untyped-def]
    """Per step after ``warm`` steps: a HostTraffic of that step (gradients set outside it)."""
    out = []
    for k in range(warm + steps):
        _grads(ps, k)
        loss = None if loss_of is None else loss_of(k)
        if k < warm:
            opt.step() if loss is None else opt.step(loss=loss)
            continue
        with HostTraffic() as t:
            opt.step() if loss is None else opt.step(loss=loss)
        out.append(t)
    return out


# --- events: one read per step, no host-made tensors -----------------------------------------

@pytest.mark.parametrize("loss_kind", ["tensor", "float"])
def test_events_make_no_host_tensor_per_step(loss_kind):
    """HeavyBall with a loss event that never fires: each step reads exactly one value (the OR
    of the fired flags) and builds no tensor from host data. Catches: the step counter built
    as torch.tensor([step], device=...) every step whether or not an event watches it, and a
    float loss copied from the host (each a host-to-device copy that synchronises a GPU)."""
    ps = _params()
    opt = HeavyBall(ps, lr=0.1, gamma=0.5, nonfinite="ignore",
                    events=[LossBelow(1e-6, then=SetFriction(2.0))])

    def loss_of(k):  # type: ignore[no-untyped-def]
        return 10.0 - k if loss_kind == "float" else torch.tensor(10.0 - k, dtype=F64)

    for t in _steady_traffic(opt, ps, loss_of):
        assert t.made() == [], t.events
        assert len(t.reads()) == 1 and t.reads()[0].startswith("optim/_events.py"), t.events
    assert "gamma_override" not in opt.global_state


def test_a_step_event_still_sees_the_step():
    """The step value is built only for events that watch it, and then the right one."""
    ps = _params()
    opt = HeavyBall(ps, lr=0.1, gamma=0.5, events=[AtStep(3, SetFriction(1.5))])
    for k in range(5):
        _grads(ps, k)
        opt.step(loss=1.0)
        assert opt.global_state.get("gamma_override") == (1.5 if k >= 3 else None), k
    assert [f.step for f in opt.event_log] == [3]


def _braking_run(bounded: bool, gamma_after: float = 2.0, lr: float = 0.1, steps: int = 12):  # type: ignore[no-untyped-def]
    ps = _params(dtype=F64)
    opt = HeavyBall(ps, lr=lr, gamma=0.5, events=[LossBelow(0.5, then=SetFriction(gamma_after))])
    if not bounded:
        opt._result_bounded = lambda *_: False
    out = []
    for k in range(steps):
        _grads(ps, k)
        opt.step(loss=10.0 - k)  # falls below half the first loss mid-run: fires once
        out.append([p.detach().clone() for p in ps] + [opt.state[p]["momentum"].clone()
                                                       for p in ps])
    return out, opt


def test_heavy_ball_events_keep_the_overflow_bound():
    """With a braking event attached, HeavyBall still proves its steps finite by the bound
    (no snapshot, no result scan: one host synchronisation per step less on a GPU), the bound
    taking the event's friction into account; the run, firing step included, is bit-identical
    to one that snapshots every step. Catches: events sending every step to the snapshot path,
    and a bound computed with the friction before the event fired."""
    got, opt = _braking_run(bounded=True)
    ref, ref_opt = _braking_run(bounded=False)
    assert opt.result_checks == {"bound": 11, "snapshot": 1}
    assert ref_opt.result_checks == {"bound": 0, "snapshot": 12}
    assert opt.global_state["gamma_override"] == 2.0
    fired = [f.step for f in opt.event_log]
    assert len(fired) == 1 and fired == [f.step for f in ref_opt.event_log]
    for a, b in zip(got, ref, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_an_event_friction_the_update_would_refuse_keeps_the_snapshot_path():
    """An event friction with γh > 2 (refused by the update only when it fires): the bound
    does not raise for it, every step snapshots. Catches: a bound that ignores the event's γ
    (|1 − γh| > 1 amplifies the momenta) or raises before the event fires."""
    _, opt = _braking_run(bounded=True, gamma_after=30.0, lr=0.1, steps=5)  # γh = 3
    assert opt.result_checks == {"bound": 0, "snapshot": 5}


def test_a_stop_event_leaves_no_carried_bound():
    """A Stop firing inside a bounded step writes nothing: that step's bounds (for the update
    it did not make) are not carried to later steps."""
    ps = _params(dtype=F64)
    opt = HeavyBall(ps, lr=0.1, gamma=0.5, events=[AtStep(3, Stop())])
    for k in range(3):
        _grads(ps, k)
        opt.step(loss=1.0)
    assert bound_module._CARRY in opt.__dict__
    before = [p.detach().clone() for p in ps]
    _grads(ps, 3)
    opt.step(loss=1.0)
    assert opt.stopped and opt.result_checks["bound"] == 3
    assert bound_module._CARRY not in opt.__dict__
    assert all(torch.equal(a, p) for a, p in zip(before, ps, strict=True))


# --- thermostats: no host-made tensors per step --------------------------------------------------

THERMOSTATS = {
    "adaptive-langevin (tensor scope)": lambda ps, **kw: AdaptiveLangevin(
        ps, lr=0.1, temperature=1e-3, **kw),
    "nose-hoover chain (group scope)": lambda ps, **kw: NoseHoover(
        ps, lr=0.1, temperature=1e-3, chain_length=3, scope="group", **kw),
    "partitioned": lambda ps, **kw: Partitioned(
        [{"params": ps[:1], "dynamics": "adaptive-langevin"},
         {"params": ps[1:], "dynamics": "nose-hoover"}], lr=0.1, temperature=1e-3, **kw),
}
#: The paths that run on a GPU (the fused path is the CPU's numba kernel).
PATHS = {"foreach": {"foreach": True}, "single": {"foreach": False, "fused": False}}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(THERMOSTATS))
def test_thermostat_steps_make_no_host_tensors(name, path, monkeypatch):
    """A steady thermostat step builds no tensor from host data and, where reading a value
    would synchronise (any device but the CPU, forced here), reads none. Catches: the
    cohort's holder and N vectors rebuilt with torch.tensor(list) every step, the bucket
    positions indexed with a Python list, and the Nosé–Hoover chain's stiffness test read on
    the host every call."""
    monkeypatch.setattr(tops, "_host_read_is_free", lambda t: False, raising=False)
    ps = _params()
    opt = THERMOSTATS[name](ps, seed=3, nonfinite="ignore", **PATHS[path])
    for t in _steady_traffic(opt, ps):
        assert t.made() == [] and t.reads() == [], t.events


def _nh_run(patch_reads: bool, monkeypatch, stiff: bool) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    if patch_reads:
        monkeypatch.setattr(tops, "_host_read_is_free", lambda t: False)
    else:
        monkeypatch.undo()
    ps = _params(dtype=F64)
    # far from equilibrium (gradients 10⁴× the thermal scale), order-3 Suzuki–Yoshida: the
    # backward substeps go stiff and the chain falls back to forward substeps
    opt = NoseHoover(ps, lr=0.1, temperature=1e-6 if stiff else 1e-1, chain_length=3,
                     scope="tensor", sy_order=3 if stiff else 1, foreach=True)
    out = []
    for k in range(6):
        _grads(ps, k)
        if stiff:
            for p in ps:
                p.grad.mul_(1e3)
        opt.step()
        out += [p.detach().clone() for p in ps] + [opt.state[p]["extras"].clone() for p in ps]
    return out


@pytest.mark.parametrize("stiff", [False, True], ids=["equilibrium", "stiff"])
def test_nose_hoover_chain_without_the_host_test_is_bit_identical(stiff, monkeypatch):
    """The chain computes its fallback always and selects it per scope on the device, instead
    of reading the stiffness test on the host: the same numbers, stiff or not."""
    ref = _nh_run(False, monkeypatch, stiff)
    got = _nh_run(True, monkeypatch, stiff)
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))
    assert all(bool(torch.isfinite(t).all()) for t in got)


def test_cached_layout_follows_the_participating_tensors(monkeypatch):
    """Parameters dropping out of a step (no gradient) and coming back change the thermostat
    layout (holders, N, bucket positions): the cached device tensors follow, bit-identical to
    building them afresh every step."""
    def run(fresh: bool) -> list[torch.Tensor]:
        if fresh:
            real = _Partitioned._device_layout
            monkeypatch.setattr(_Partitioned, "_device_layout",
                                lambda self, key, dev, make: (self._layout_cache.clear(),
                                                              real(self, key, dev, make))[1])
        ps = [*_params(dtype=F64), _params(seed=1)[1][:4].detach().requires_grad_()]
        opt = AdaptiveLangevin(ps, lr=0.1, temperature=1e-3, foreach=True, scope="group",
                               seed=5)
        out = []
        for k in range(8):
            _grads(ps, k)
            if k in (3, 4):
                ps[1].grad = None
            opt.step()
            out += [p.detach().clone() for p in ps]
            out.append(opt.global_state["extras"]["group0"].clone())
        monkeypatch.undo()
        return out

    got, ref = run(False), run(True)
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


# --- BBI: the loss and |Π|² read once per step ---------------------------------------------------

def _bbi(**kw):  # type: ignore[no-untyped-def]
    ps = _params()
    ps.append(_params(seed=1, dtype=F64)[1][:5].detach().requires_grad_())  # a second bucket
    opt = BBI([{"params": ps[:2]}, {"params": ps[2:]}], lr=0.02, seed=0, t0=None, t1=None,
              **kw)
    return ps, opt


@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
def test_bbi_reads_the_loss_once_and_keeps_ps2_on_the_device(nonfinite):
    """A steady BBI step (foreach path, two groups, two dtypes) reads the loss once, although
    the bound check and the step both need it, and leaves |Π|² on the device for the next step
    (a tensor, the same value as the host sum), which fetches it with the loss in one transfer
    (bbi._to_host). Catches: the loss read twice, |Π|² read on the host per group and bucket at
    the end of every step. (BBI's scalar state lives on the CPU: reading it costs nothing.)"""
    ps, opt = _bbi(foreach=True, nonfinite=nonfinite)
    losses = [torch.tensor(2.0 - 0.01 * k, dtype=torch.float32) for k in range(6)]
    traffic = _steady_traffic(opt, ps, lambda k: losses[k])
    for k, t in enumerate(traffic, start=2):
        assert t.reads_of(losses[k]) == 1, t.events
        assert not any("eventful.py" in s for s in t.reads()), t.events
    if nonfinite == "raise":
        assert opt.result_checks == {"bound": 5, "snapshot": 1}
    ps2 = opt.global_state["ps2"]
    assert isinstance(ps2, torch.Tensor) and ps2.dtype == F64
    assert float(ps2) == opt.norm2([opt.state[p]["momentum"] for p in ps])


def test_bbi_host_values_are_fetched_together():
    """bbi._to_host: numbers, CPU and other tensors as the floats float() gives, exactly."""
    from dynopt.optim.bbi import _to_host

    x = torch.tensor(0.1, dtype=torch.float32)
    got = _to_host([x, 2.5, torch.tensor([1.0 / 3.0], dtype=F64)])
    assert got == [float(x), 2.5, 1.0 / 3.0]


def test_bbi_with_ps2_on_the_device_resumes_bit_identically():
    """|Π|² kept as a tensor in the global state is saved and restored with it."""
    ps, opt = _bbi(foreach=True)
    for k in range(4):
        _grads(ps, k)
        opt.step(loss=2.0 - 0.01 * k)
    assert isinstance(opt.global_state["ps2"], torch.Tensor)
    sd = copy.deepcopy(opt.state_dict())  # (torch's load may adopt the tensors it is given)
    qs, opt2 = _bbi(foreach=True)
    with torch.no_grad():
        for p, q in zip(ps, qs, strict=True):
            q.copy_(p)
    opt2.load_state_dict(sd)
    for k in range(4, 8):
        for a, b in ((ps, opt), (qs, opt2)):
            _grads(a, k)
            b.step(loss=2.0 - 0.01 * k)
    assert all(torch.equal(p, q) for p, q in zip(ps, qs, strict=True))


# --- potentials and systems: constants copied once per device ------------------------------------

POTENTIALS = {
    "harmonic": lambda: P.Harmonic(omega=[1.0, 2.0, 3.0], dim=3),
    "localized": lambda: P.Localized(P.DoubleWell(dim=3), localization=0.5,
                                     center=[0.1, 0.2, 0.3]),
    "multi-basin": lambda: P.MultiBasin(dim=3),
}


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_torch_potentials_copy_their_constants_once(name):
    """value and grad of a torch batch: the potential's numpy constants become tensors on the
    first call per device and dtype only. Catches: torch.as_tensor(array, device=q.device) on
    every call (a host-to-device copy per gradient on a GPU)."""
    pot = POTENTIALS[name]()
    q = torch.randn(4, 3, dtype=F64)
    ref_v, ref_g = pot.value(q.numpy()), pot.grad(q.numpy())
    pot.grad(q)
    with HostTraffic() as t:
        for _ in range(3):
            v, g = pot.value(q), pot.grad(q)
    assert t.made() == [], t.events
    np.testing.assert_allclose(v.numpy(), ref_v, rtol=1e-15, atol=0)
    np.testing.assert_allclose(g.numpy(), ref_g, rtol=1e-15, atol=0)
    with HostTraffic() as first:  # another dtype: its own copies, on the first call only
        pot.grad(q.float())
    with HostTraffic() as later:
        pot.grad(q.float())
    assert len(first.made()) >= 1 and later.made() == []


def test_potential_constants_are_read_only_and_replaceable():
    """The cached arrays cannot change under the cache: an in-place write is refused, an
    assigned new array is used from the next call."""
    pot = P.Harmonic(omega=[1.0, 2.0], dim=2)
    q = torch.ones(1, 2, dtype=F64)
    assert torch.equal(pot.grad(q), torch.tensor([[1.0, 4.0]], dtype=F64))
    with pytest.raises(ValueError, match="read-only"):
        pot.omega[0] = 3.0
    pot.omega = np.array([3.0, 1.0])
    assert torch.equal(pot.grad(q), torch.tensor([[9.0, 1.0]], dtype=F64))
    with pytest.raises(ValueError, match="read-only"):
        P.MultiBasin(dim=2).c1[0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        P.Localized(P.DoubleWell(dim=2), center=[0.0, 1.0]).center[0] = 2.0
    system = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.1, mass=[1.0, 2.0])
    with pytest.raises(ValueError, match="read-only"):
        system.mass[0] = 3.0


def test_kinetic_energy_copies_the_masses_once():
    system = S.Langevin(P.DoubleWell(dim=3), gamma=1.0, temperature=0.1, mass=[1.0, 2.0, 4.0])
    p = torch.randn(5, 3, dtype=F64)
    want = 0.5 * (p.numpy() ** 2 / np.array([1.0, 2.0, 4.0])).sum(-1)
    system.kinetic_energy(p)
    with HostTraffic() as t:
        k = system.kinetic_energy(p)
        system.kinetic_energy(p)
    assert t.made() == []
    np.testing.assert_allclose(k.numpy(), want, rtol=1e-15, atol=0)


@pytest.mark.parametrize("name", list(POTENTIALS))
def test_torch_integrate_makes_no_host_tensors_per_step(name):
    """integrate(backend="torch"): the tensors built from host data do not grow with the
    number of steps (setup and records only)."""
    def made(n: int) -> int:
        system = S.Langevin(POTENTIALS[name](), gamma=1.0, temperature=0.1)
        with HostTraffic() as t:
            dynopt.integrate(system, "BAOAB", [0.1, 0.2, 0.3], h=0.01, n_steps=n,
                             record_every=n, seed=0, backend="torch")
        return len(t.made())

    assert made(5) == made(40)


# --- DDPNOpt: the consistency check's host traffic --------------------------------------------------

def test_ddpnopt_regularized_factor_reads_no_cholesky_status():
    """The Gauss-Newton factor with εI (no S) reads nothing on the host: a failed Cholesky
    gives NaN, selected on the device. Catches: bool(info.any()) per stage and step."""
    from dynopt.ddp.trajectory import _regularized_factor

    qx = torch.randn(4, 2, 3, dtype=F64)
    with HostTraffic() as t:
        z, clipped = _regularized_factor(None, qx, 0.1, False)
    assert t.reads() == [] and clipped is None
    v = qx.transpose(1, 2) @ qx + 0.1 * torch.eye(3, dtype=F64)
    assert torch.equal(z, torch.linalg.cholesky(v).transpose(1, 2))
    bad = qx.clone()
    bad[1, 0, 0] = math.inf
    z, _ = _regularized_factor(None, bad, 0.1, False)
    assert z.shape == (4, 3, 3) and bool(torch.isnan(z).all())


def test_ddpnopt_consistency_fit_reads_its_inputs_in_one_go(monkeypatch):
    """The per-step check that the gradients fit the recorded forward pass moves its inputs
    (|a|², |b|², the rounding scale and the least-squares system) to the host once: on the CPU
    no value of the device side is read one by one. Catches: float() of three scalars and two
    separate .cpu() copies per stage."""
    import torch.nn.functional as F

    from dynopt.ddp.trajectory import DDPTrajectory
    from dynopt.optim import DDPNOpt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 1)).double()
    opt = DDPNOpt(model, lr=0.01, base="adam", terminal_hessian="identity")
    reads: list[int] = []
    real = DDPTrajectory._fit_scale

    def counted(self, rec, st):  # type: ignore[no-untyped-def]
        with HostTraffic() as t:
            out = real(self, rec, st)
        reads.append(len([s for s in t.reads() if "trajectory" in s]))
        return out

    monkeypatch.setattr(DDPTrajectory, "_fit_scale", counted)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 3, generator=g, dtype=F64)
        y = torch.randn(8, 1, generator=g, dtype=F64)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    assert reads and all(n == 2 for n in reads), reads  # the two reads of the CPU fit result


@pytest.mark.parametrize("base", ["sgd", "rmsprop", "ekfac"])
def test_ddpnopt_reads_tensor_momentum_and_weight_decay_once_per_step(base):
    """Tensor ``lr``, ``momentum`` and ``weight_decay``: one host read of each per step (at
    validation), none in the base updates, with or without the feedback; the parameters equal a
    run with the same values as floats bit for bit. Catches: ``momentum != 0`` and
    ``alpha=weight_decay`` reading the tensor again per parameter tensor (4 + 8 more reads a
    step on this 4-tensor model: 15 in all for sgd)."""
    import torch.nn.functional as F

    from dynopt.optim import DDPNOpt

    def run(as_tensor: bool) -> tuple[list[torch.Tensor], list[HostTraffic]]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(),
                                    torch.nn.Linear(8, 1)).double()
        hp = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3}
        if as_tensor:
            hp = {k: torch.tensor(v, dtype=F64) for k, v in hp.items()}
        opt = DDPNOpt(model, base=base, feedback=base == "ekfac",
                      terminal_hessian="identity", **hp)
        g = torch.Generator().manual_seed(1)
        traffic = []
        for _ in range(3):
            x = torch.randn(8, 3, generator=g, dtype=F64)
            y = torch.randn(8, 1, generator=g, dtype=F64)
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            with HostTraffic() as t:
                opt.step()
            traffic.append(t)
        return [p.detach().clone() for p in model.parameters()], traffic

    got, traffic = run(True)
    want, _ = run(False)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    for t in traffic:
        # (the feedback path also reads its fit and its result check: trajectory.py, finite.py)
        assert [s.split(":")[0] for s in t.reads()].count("optim/base.py") == 3, t.reads()
        assert not [s for s in t.reads() if "ddp_bases" in s or "ddpnopt" in s], t.reads()
