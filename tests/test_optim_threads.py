"""Fused optimizer paths give the same bits with any number of numba threads (issue 10, item 8).

BBI's fused |Π|² reduction was a ``prange`` reduction whose order followed the thread split:
594,773 of 600,000 parameters differed between 1 and 2 threads after 200 steps. Every fused
path is checked here: same seed, same data, 1 thread vs 2 threads, bit-exact after 12 steps (float64, where a last-bit difference of the reduction is not
rounded away by a cast to float32).
"""

from __future__ import annotations

import numba
import pytest
import torch

from dynopt.backends.numba.kick_drift_kernels import PARALLEL_MIN
from dynopt.optim import (
    BBI,
    AdaptiveLangevin,
    HeavyBall,
    Langevin,
    NoseHoover,
    OverdampedLangevin,
)

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs at least 2 numba threads")

FACTORIES = {
    "Langevin": lambda ps: Langevin(ps, lr=0.05, temperature=1e-3, seed=1, fused=True),
    "AdaptiveLangevin": lambda ps: AdaptiveLangevin(ps, lr=0.05, seed=1, fused=True),
    "NoseHooverChain": lambda ps: NoseHoover(ps, lr=0.05, chain_length=3, scope="model", seed=1,
                                             fused=True),
    "LM": lambda ps: OverdampedLangevin(ps, lr=0.05, temperature=1e-3, scheme="lm", seed=1,
                                        fused=True),
    "HeavyBall": lambda ps: HeavyBall(ps, lr=0.05, gamma=0.5, fused=True, seed=1),
    "BBI": lambda ps: BBI(ps, lr=0.05, fused=True, seed=1, t0=5, t1=7),
}


def _run(name: str, threads: int) -> list[torch.Tensor]:
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        ps = [torch.randn(PARALLEL_MIN + 12345, generator=g, dtype=torch.float64),
              torch.randn(37, 3, generator=g, dtype=torch.float64)]
        opt = FACTORIES[name](ps)
        for _ in range(12):
            for p in ps:
                p.grad = p * (1.0 + 0.1 * p * p)
            loss = sum(float((0.5 * p * p + 0.025 * p ** 4).sum()) for p in ps)
            opt.step(loss=loss) if name == "BBI" else opt.step()
        return [p.clone() for p in ps]
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_fused_paths_do_not_depend_on_the_thread_count(name):
    """Catches: a thread-split-dependent reduction (or noise layout) in any fused kernel."""
    one, two = _run(name, 1), _run(name, 2)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b), (name, int((a != b).sum()))
    assert not torch.equal(one[0], torch.randn(PARALLEL_MIN + 12345,
                                               generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64))
