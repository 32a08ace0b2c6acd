"""Small models step without entering a parallel numba region.

Each parallel numba kernel the optimizers call between torch ops has a serial variant for small
work (segment_kernel.SERIAL_BELOW, kick_drift_kernels.PARALLEL_MIN, finite.FAST_ABOVE, one
fill_tensor task): on 2 cores a parallel region cost far more than such work (ECDSep's rotation
fill, which had no serial variant, made its step ~8x slower on a 9k-parameter MLP). These tests
replace every parallel kernel of :mod:`dynopt.backends.numba` with one that raises, and step each
optimizer with a fused CPU path on a 10-parameter and an 8,970-parameter model (the shapes of
benchmarks/small_step.py), with and without the step snapshot, checking that the serial kernels
ran instead.
"""

from __future__ import annotations

import importlib
import pkgutil

import numba
import pytest
import torch
from numba.core.registry import CPUDispatcher

import dynopt.backends.numba as nbpkg
from dynopt.optim import BBI, ECDSep, HeavyBall, Langevin, OverdampedLangevin, finite

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="needs numba's JIT")

#: The serial entry points that the fused paths call (module, name).
SERIAL = (("dynopt.backends.numba.segment_kernel", "run_segment_serial"),
          ("dynopt.backends.numba.kick_drift_kernels", "_serial"),
          ("dynopt.backends.numba.block_memory", "absmax_blocks_serial"),
          ("dynopt.backends.numba.fill_tensor", "_fill_serial"))


def _parallel_kernels() -> list[tuple[object, str]]:
    """(module, name) of every ``parallel=True`` numba kernel in dynopt.backends.numba."""
    found = []
    for info in pkgutil.iter_modules(nbpkg.__path__):
        mod = importlib.import_module(f"{nbpkg.__name__}.{info.name}")
        for name, obj in vars(mod).items():
            if (isinstance(obj, CPUDispatcher) and obj.targetoptions.get("parallel")
                    and obj.__module__ == mod.__name__):
                found.append((mod, name))
    return found


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Parallel kernels raise; calls of the serial entry points are counted."""
    kernels = _parallel_kernels()
    assert len(kernels) >= 5, kernels  # the scan sees them (segment, kick-drift, block, fill)

    def refuse(name: str):  # type: ignore[no-untyped-def]
        def kernel(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise AssertionError(f"parallel numba kernel {name} entered")
        return kernel

    for mod, name in kernels:
        monkeypatch.setattr(mod, name, refuse(f"{mod.__name__}.{name}"))
    calls: dict[str, int] = {}
    for modname, name in SERIAL:
        mod = importlib.import_module(modname)
        orig = getattr(mod, name)

        def count(*args, _orig=orig, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] = calls.get(_name, 0) + 1
            return _orig(*args, **kwargs)
        monkeypatch.setattr(mod, name, count)
    return calls


def _model(n: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """10 parameters (2x4 + 2), or small_step.py's 64-64-64-10 MLP (8,970 in 6 tensors)."""
    g = torch.Generator().manual_seed(0)
    shapes = ([(2, 4), (2,)] if n == 10
              else [(64, 64), (64,), (64, 64), (64,), (10, 64), (10,)])
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g, dtype=dtype)
        p.grad = torch.randn(s, generator=g, dtype=dtype)
        params.append(p)
    assert sum(p.numel() for p in params) == n
    return params


OPTIMIZERS = {
    "Langevin": (lambda ps: Langevin(ps, lr=1e-3, seed=0), "run_segment_serial"),
    "Langevin ignore": (lambda ps: Langevin(ps, lr=1e-3, seed=0, nonfinite="ignore"),
                        "run_segment_serial"),
    "OverdampedLangevin": (lambda ps: OverdampedLangevin(ps, lr=1e-3, seed=0),
                           "run_segment_serial"),
    "HeavyBall": (lambda ps: HeavyBall(ps, lr=1e-3), "_serial"),
    "HeavyBall ignore": (lambda ps: HeavyBall(ps, lr=1e-3, nonfinite="ignore"), "_serial"),
    "BBI": (lambda ps: BBI(ps, lr=1e-3, seed=0, t0=None, t1=None), "_serial"),
    "ECDSep": (lambda ps: ECDSep(ps, lr=1e-3, seed=0), "_fill_serial"),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [10, 8970])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_small_model_steps_run_only_serial_numba_kernels(guarded: dict[str, int], name: str,
                                                         n: int, dtype: torch.dtype) -> None:
    make, serial = OPTIMIZERS[name]
    params = _model(n, dtype)
    before = [p.detach().clone() for p in params]
    opt = make(params)
    loss = torch.tensor(1.0, dtype=dtype)
    for _ in range(3):
        if name.startswith(("HeavyBall", "BBI", "ECDSep")):  # their steps take the loss
            opt.step(loss=loss)
        else:
            opt.step()
    assert guarded.get(serial, 0) >= 3, guarded  # the fused numba path ran, serially
    if "ignore" not in name:
        assert guarded.get("absmax_blocks_serial", 0) >= 3, guarded  # the gradient check
    assert all(torch.isfinite(p).all() for p in params)
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_the_guard_sees_a_parallel_kernel(guarded: dict[str, int]) -> None:
    """At FAST_ABOVE elements the gradient check takes the parallel scan: the guard refuses it
    (so the test above would fail if a small model entered a parallel kernel)."""
    with pytest.raises(AssertionError, match="parallel numba kernel .*absmax_blocks entered"):
        finite.abs_max([torch.zeros(finite.FAST_ABOVE)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", [k for k in OPTIMIZERS if "ignore" not in k])
def test_small_model_snapshot_steps_run_only_serial_numba_kernels(
        guarded: dict[str, int], monkeypatch: pytest.MonkeyPatch, name: str,
        dtype: torch.dtype) -> None:
    """The step snapshot (rollback.Snapshot: copy_all, then the finiteness scan of what the step
    wrote), taken when the overflow bound cannot prove the step finite, stays serial too."""
    make, serial = OPTIMIZERS[name]
    params = _model(8970, dtype)
    opt = make(params)
    monkeypatch.setattr(opt, "_result_bounded", lambda used=None: False)
    loss = torch.tensor(1.0, dtype=dtype)
    for _ in range(3):
        if name.startswith(("HeavyBall", "BBI", "ECDSep")):
            opt.step(loss=loss)
        else:
            opt.step()
    assert opt.result_checks["snapshot"] == 3, opt.result_checks
    assert guarded.get(serial, 0) >= 3, guarded
    assert all(torch.isfinite(p).all() for p in params)
