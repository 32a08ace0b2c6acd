"""Ensemble throughput: BAOAB on DoubleWell(dim=2), 10,000 chains, side by side in one run.

Compares dynopt's numba backend (Gaussian and discrete noise), dynopt's torch backend, a plain
batched-torch loop of the same scheme (what a user would write by hand), and a naive numba loop
drawing from ``np.random`` (the generator-bound baseline of design.md §4), and the optional JAX
peers of :mod:`_ensemble_peers` (a hand-written JAX jit + lax.scan BAOAB, jax-md's
``simulate.nvt_langevin``, BlackJAX's ``sghmc``), each skipped with a note when its package is
absent; ``pip install -e .[peers]`` installs them (they are not dynopt dependencies and CI does
not install them). Reports million particle-steps per second, the ratio to the plain
batched-torch loop, and ⟨q²⟩ over the chains' final positions (± its standard error) next to
the exact value, so that every row is seen to sample the same distribution.

    python benchmarks/ensemble_throughput.py [--quick] [--update-docs]
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import torch
from _common import markdown_table, parse_args, plain_baoab_double_well, time_call, write_section
from _ensemble_peers import jax_peers

import dynopt
from dynopt import potentials, systems

C = 10_000
H, GAMMA, TAU = 0.05, 1.0, 0.25


def plain_torch_loop(n_steps: int, dtype: torch.dtype) -> torch.Tensor:
    """BAOAB written by hand with batched torch ops (:func:`_common.plain_baoab_double_well`)."""
    return plain_baoab_double_well(C, n_steps, dtype, h=H, gamma=GAMMA, tau=TAU)


def exact_q2() -> float:
    """⟨q²⟩ of one coordinate under exp(−(q² − 1)²/τ), by quadrature on [−4, 4]."""
    x = np.linspace(-4.0, 4.0, 400_001)
    w = np.exp(-((x * x - 1) ** 2) / TAU)
    return float(np.sum(x * x * w) / np.sum(w))


def q2_estimate(q: object) -> tuple[float, float]:
    """Mean of q² over all chains and coordinates and its standard error (the chains and the
    two coordinates are independent)."""
    x = np.asarray(q, dtype=np.float64) ** 2
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


@nb.njit(parallel=True, cache=True)
def naive_numba(q: np.ndarray, p: np.ndarray, n_steps: int, c: float, d: float) -> None:
    """The straightforward numba loop: one chain at a time, np.random normals."""
    for i in nb.prange(q.shape[0]):
        for _ in range(n_steps):
            for j in range(2):
                x = q[i, j]
                p[i, j] -= 0.5 * H * 4 * x * (x * x - 1)
                q[i, j] += 0.5 * H * p[i, j]
                p[i, j] = c * p[i, j] + d * np.random.standard_normal()
                q[i, j] += 0.5 * H * p[i, j]
                x = q[i, j]
                p[i, j] -= 0.5 * H * 4 * x * (x * x - 1)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    torch.set_num_threads(2)
    reps = 3 if args.quick else 7
    system = systems.Langevin(potentials.DoubleWell(dim=2), gamma=GAMMA, temperature=TAU)
    rows = []

    def dynopt_run(backend: str, n: int, **kw: object) -> np.ndarray:
        return dynopt.integrate(system, "BAOAB", [1.0, 1.0], h=H, n_steps=n, n_chains=C,
                                seed=1, record_every=n, backend=backend, **kw).q[:, -1]

    cases = [
        ("dynopt numba backend, Gaussian noise (float64)", lambda: dynopt_run("numba", 2000), 2000),
        ("dynopt numba backend, discrete noise (float64)",
         lambda: dynopt_run("numba", 2000, noise="discrete"), 2000),
        ("dynopt torch backend (float32)", lambda: dynopt_run("torch", 300, dtype="float32"), 300),
        ("dynopt torch backend (float64)", lambda: dynopt_run("torch", 300), 300),
        ("plain batched torch loop (float32)", lambda: plain_torch_loop(300, torch.float32), 300),
        ("plain batched torch loop (float64)", lambda: plain_torch_loop(300, torch.float64), 300),
    ]
    q = np.ones((C, 2))
    p = np.zeros((C, 2))
    c = math.exp(-GAMMA * H)
    d = math.sqrt((1 - c * c) * TAU)

    def naive_numba_run() -> np.ndarray:
        naive_numba(q, p, 300, c, d)
        return q

    cases.append(("naive numba loop with np.random (float64)", naive_numba_run, 300))
    peers, skipped = jax_peers(C, 300, h=H, gamma=GAMMA, tau=TAU)
    cases += [(label, fn, 300) for label, fn in peers]
    results = {}
    for label, fn, n in cases:
        final: list[object] = []
        t = time_call(lambda fn=fn, final=final: final.append(fn()), repeats=reps)
        results[label] = (C * n / t / 1e6, *q2_estimate(final[-1]))
        print(f"{label:52s} {results[label][0]:8.1f} M particle-steps/s  "
              f"⟨q²⟩ = {results[label][1]:.4f} ± {results[label][2]:.4f}", flush=True)
    for note in skipped:
        print(note)
    exact = exact_q2()
    ref = results["plain batched torch loop (float32)"][0]
    for label, (rate, m, se) in results.items():
        rows.append((label, f"{rate:.1f}", f"{rate / ref:.2f}×", f"{m:.4f} ± {se:.4f}",
                     f"{(m - exact) / se:+.1f}"))
    table = markdown_table(["implementation", "M particle-steps/s", "vs plain torch (f32)",
                            "⟨q²⟩ ± SE", "(⟨q²⟩ − exact) / SE"], rows)
    print(table)
    off = [label for label, (_, m, se) in results.items() if abs(m - exact) > 4 * se]
    print(f"exact ⟨q²⟩ = {exact:.4f} (quadrature); rows more than 4 SE from it: "
          f"{', '.join(off) if off else 'none'}")
    gauss = results["dynopt numba backend, Gaussian noise (float64)"][0]
    verdict = (f"Issue 14 target, Gaussian numba row ≥ 600 M particle-steps/s: {gauss:.0f} "
               f"({'met' if gauss >= 600 else 'missed'}).")
    print(verdict)
    if args.update_docs:
        write_section(
            "ensemble", "Ensemble throughput: BAOAB, DoubleWell(dim=2), 10,000 chains",
            "python benchmarks/ensemble_throughput.py --update-docs", table,
            "A particle-step is one BAOAB step of one chain (2 coordinates, 2 normals). Target "
            "(issue 2): numba ≥ 3× the plain batched-torch loop. The numba backend draws its "
            "normals from a counter-based Philox-4x32-10 generator with a vectorized Box–Muller "
            "transform inside the fused kernel; the plain loops use torch.randn / np.random. "
            f"⟨q²⟩: mean of q² over the final positions of all chains and both coordinates "
            f"(exact {exact:.4f}, by quadrature); the BAOAB rows differ from it by their "
            "O(h²) bias and the noise, BlackJAX's sghmc (a first-order Euler step) by an O(h) "
            "bias. The JAX peers (optional: `pip install -e .[peers]`; rows missing here were "
            "not installed) run 300 steps inside one jit-compiled call (compilation excluded); "
            "XLA uses its own CPU thread pool, JAX's default threefry generator draws the "
            "normals. " + verdict + " The Gaussian row's normals cost about half its time "
            "(the discrete row draws its noise almost free; see the noise-generators "
            "section); the rest is the interpreter's op loop over blocks of up to 256 chains "
            "(kernel.block_lanes). The same script on commit 4ab67dc (before the 512-bit "
            "vectors and the wider blocks), same session: Gaussian 253.4, discrete 369.5 "
            "M/s." + ("" if not skipped else " " + " ".join(skipped)))


if __name__ == "__main__":
    main()
