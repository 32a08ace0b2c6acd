"""``dynopt compile``: compile dynopt's numba kernels into the on-disk cache ahead of first use.

numba compiles a kernel the first time it runs and keeps the machine code in the cache
(``~/.cache/dynopt/numba/<version>-<hash of the kernel sources>``, see
:mod:`dynopt.backends.numba.cache`). On an empty cache that first run stalls: in session 14's
clean-clone ``.ci/run`` on the 2-core Xeon this command took 30 s for the ``integrate()``
kernel, 23 s for the extended ops and 77 s for the optimizer kernels (README). It pays those
costs up front, e.g. in a Docker build or a CI set-up step (``.ci/setup.sh`` runs it), and
prints what each part took.

    dynopt compile                      # everything
    dynopt compile --only integrate     # just the integrate() kernel
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

HELP = "Compile the numba kernels into the on-disk cache now (instead of on first use)."


def _integrate() -> None:
    """The integrate() kernel, the noise generator and the potential evaluations."""
    import numpy as np

    import dynopt
    from dynopt import potentials, systems

    system = systems.Langevin(potentials.DoubleWell(dim=1), gamma=1.0, temperature=0.5)
    dynopt.integrate(system, "BAOAB", np.zeros((2, 1)), h=0.1, n_steps=2, seed=0,
                     backend="numba", record_every=1, progress=False)


def _extended() -> None:
    """Thermostat, braking and energy-conserving ops (loaded by programs that use them), and
    the noise fill with the float64 transform (``noise="gaussian-f64"``)."""
    from dynopt.backends.numba import extended_ops, fill_f64  # noqa: F401  (compiled at import)


def _optimizers() -> None:
    """The fused CPU optimizer kernels (parallel and serial variants, float32 and float64) and
    the finite/bound scans, through one step of each fused optimizer; ECDSep's Philox fill of
    its rotation normals."""
    import torch

    from dynopt.backends.numba.segment_kernel import SERIAL_BELOW
    from dynopt.optim import BBI, ECDSep, HeavyBall, Langevin
    from dynopt.optim.finite import FAST_ABOVE

    for dtype in (torch.float32, torch.float64):
        for n in (64, max(SERIAL_BELOW, FAST_ABOVE)):  # serial and parallel variants
            for make in (lambda ps: Langevin(ps, lr=1e-3, temperature=1e-4, seed=0),
                         lambda ps: HeavyBall(ps, lr=1e-3),
                         lambda ps: BBI(ps, lr=1e-3),
                         lambda ps: ECDSep(ps, lr=1e-3, seed=0)):
                p = torch.nn.Parameter(torch.zeros(n, dtype=dtype))
                opt = make([p])
                for _ in range(2):  # the first step initialises state, the second is steady
                    p.grad = torch.full_like(p, 1e-3)
                    # a positive loss: BBI does not move (nor compile its kernel) at ℓ = v₀ = 0
                    opt.step(lambda: torch.ones((), dtype=torch.float64))


#: Part name → what it compiles, in the order they run.
PARTS: dict[str, Callable[[], None]] = {
    "integrate": _integrate,
    "extended": _extended,
    "optimizers": _optimizers,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", action="append", choices=list(PARTS), default=None,
                        help="compile only this part (repeatable; default: every part)")


def run(args: argparse.Namespace) -> int:
    from dynopt.backends import numba_jit_disabled

    if numba_jit_disabled():
        print("dynopt compile: error: NUMBA_DISABLE_JIT=1 turns numba's compiler off, so there "
              "is nothing to compile (and dynopt's numba kernels cannot run): unset "
              "NUMBA_DISABLE_JIT", file=sys.stderr)
        return 2
    from dynopt.backends.numba.cache import CACHE, CACHE_PATH

    if not CACHE:
        print("dynopt compile: error: no writable numba cache directory (set "
              "DYNOPT_CACHE_DIR); compiled code would not be kept", file=sys.stderr)
        return 2
    total = time.perf_counter()
    for name in args.only or list(PARTS):
        t0 = time.perf_counter()
        PARTS[name]()
        print(f"{name:12s} {time.perf_counter() - t0:6.1f} s", flush=True)
    print(f"{'total':12s} {time.perf_counter() - total:6.1f} s; cache: {CACHE_PATH}")
    return 0
