"""Ensemble throughput by ensemble size and scheme, on the numba backend (issue 11's block width).

BAOAB (Langevin) and adaptive Langevin's default scheme on the 2-D double well (h = 0.05,
τ = 0.25) at 100, 1,000 and 10,000 chains, and the Nosé–Hoover chain at 10,000: million
chain-steps per second, best of 5 runs, with the block width :func:`dynopt.backends.numba.kernel.
block_lanes` chose. Adaptive Langevin and the Nosé–Hoover chain run their thermostat ops
through the extended-op function pointer (:mod:`dynopt.backends.numba.extended_ops`), whose
per-call cost shows at small blocks.

    python benchmarks/ensemble_sizes.py [--quick] [--update-docs]
"""

from __future__ import annotations

import time

from _common import command, markdown_table, parse_args, write_section

import dynopt
from dynopt import potentials, systems
from dynopt.backends.numba.kernel import block_lanes

WORK = 2_000_000  # chain-steps per run at 1,000 chains and more (100 chains: 2M too)


def rate(system: object, chains: int, repeats: int) -> float:
    """Best of ``repeats`` runs of ≈ WORK chain-steps, in M chain-steps/s."""
    n_steps = max(1, WORK // chains)
    dynopt.integrate(system, None, [1.0, 1.0], h=0.05, n_steps=10, n_chains=chains, seed=1,
                     backend="numba")  # compile / warm up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dynopt.integrate(system, None, [1.0, 1.0], h=0.05, n_steps=n_steps, n_chains=chains,
                         seed=1, backend="numba", record_every=n_steps)
        best = min(best, time.perf_counter() - t0)
    return chains * n_steps / best / 1e6


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    repeats = 3 if args.quick else 5
    well = potentials.DoubleWell(dim=2)
    cases = [
        ("Langevin (BAOAB)", systems.Langevin(well, gamma=1.0, temperature=0.25),
         (100, 1_000, 10_000)),
        ("adaptive Langevin (default scheme)",
         systems.AdaptiveLangevin(well, temperature=0.25, sigma_a=1.0), (100, 1_000, 10_000)),
        ("Nosé–Hoover chain (default scheme)",
         systems.NoseHooverChain(well, temperature=0.25), (10_000,)),
    ]
    rows = []
    for name, system, sizes in cases:
        for c in sizes:
            r = rate(system, c, repeats)
            rows.append([name, c, block_lanes(c), round(r, 1)])
            print(f"{name:38s} {c:6d} chains  {block_lanes(c):3d} lanes  {r:7.1f} M/s")
    if args.update_docs:
        table = markdown_table(["system", "chains", "lanes per block", "M chain-steps/s"], rows)
        write_section("ensemble-sizes", "Ensemble throughput by size and scheme (numba)",
                      command("ensemble_sizes", args), table,
                      notes=(f"Best of {repeats} runs of about {WORK:,} chain-steps each, 2-D "
                             "double well, h = 0.05, τ = 0.25. See docs/architecture.md for the "
                             "block width and the extended ops."))


if __name__ == "__main__":
    main()
