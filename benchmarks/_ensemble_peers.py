"""Optional peers of the ensemble benchmark: the same double-well Langevin ensemble in JAX.

Each peer is skipped, with a printed note, when its package is not installed (none of them is a
dependency of dynopt; ``pip install -e .[peers]`` installs them, see setup.cfg). All run
10,000 independent chains of U(q) = Σⱼ (qⱼ² − 1)² (DoubleWell(dim=2)) from q = 1 with the step
size h, friction γ and temperature τ of the dynopt rows; each returns the final positions so
the benchmark can check ⟨q²⟩ against dynopt's.

| peer | scheme | precision |
|---|---|---|
| JAX jit + lax.scan, written by hand | BAOAB (gradient reused first-same-as-last) | float32 |
| jax-md ``simulate.nvt_langevin`` | BAOAB (Davidchack, Ouldridge, Tretyakov 2015) | float32 |
| BlackJAX ``sghmc`` | SGHMC's Euler step (Chen, Fox, Guestrin 2014), first order | float64 |

References: B. Leimkuhler, C. Matthews, AMRX 2013 (BAOAB); T. Chen, E. Fox, C. Guestrin,
"Stochastic Gradient Hamiltonian Monte Carlo", ICML 2014 (SGHMC).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Peer = tuple[str, Callable[[], Any]]


def _missing(package: str, err: Exception) -> str:
    return f"skipped: {package} is not importable ({type(err).__name__}: {err})"


def jax_peers(chains: int, n_steps: int, *, h: float, gamma: float,
              tau: float) -> tuple[list[Peer], list[str]]:
    """The JAX peers that import, each a (label, run) pair where ``run()`` performs
    ``n_steps`` steps of every chain and returns the final q (a ready JAX array), and the notes
    of those skipped."""
    notes: list[str] = []
    try:
        import jax
    except ImportError as err:
        return [], [_missing("jax", err)]
    import jax.numpy as jnp

    peers: list[Peer] = []
    key = jax.random.key(0)
    q32 = jnp.ones((chains, 2), jnp.float32)

    def force(q: Any) -> Any:
        return -4 * q * (q * q - 1)

    c = math.exp(-gamma * h)
    d = math.sqrt((1 - c * c) * tau)

    @jax.jit
    def scan_baoab(key: Any, q: Any) -> Any:
        def step(carry: Any, k: Any) -> tuple[Any, None]:
            q, p, f = carry
            p = p + h / 2 * f
            q = q + h / 2 * p
            p = c * p + d * jax.random.normal(k, q.shape, q.dtype)
            q = q + h / 2 * p
            f = force(q)
            return (q, p + h / 2 * f, f), None

        (q, _, _), _ = jax.lax.scan(step, (q, jnp.zeros_like(q), force(q)),
                                    jax.random.split(key, n_steps))
        return q

    peers.append(("JAX jit + lax.scan BAOAB, batched (float32)",
                  lambda: scan_baoab(key, q32).block_until_ready()))

    try:
        from jax_md import simulate, space
    except ImportError as err:
        notes.append(_missing("jax-md", err))
    else:
        _, shift = space.free()
        init, md_step = simulate.nvt_langevin(lambda q: jnp.sum((q * q - 1) ** 2), shift,
                                              h, tau, gamma=gamma)

        @jax.jit
        def md_run(key: Any, q: Any) -> Any:
            state = init(key, q, mass=1.0, momenta=jnp.zeros_like(q))
            return jax.lax.fori_loop(0, n_steps, lambda _, s: md_step(s), state).position

        peers.append(("jax-md simulate.nvt_langevin (float32)",
                      lambda: md_run(key, q32).block_until_ready()))

    try:
        import blackjax
    except ImportError as err:
        notes.append(_missing("blackjax", err))
    else:
        def log_density_grad(q: Any, _batch: Any) -> Any:
            return jax.grad(lambda x: -jnp.sum((x * x - 1) ** 2))(q)

        # one sghmc step = a momentum refresh, then n_steps Euler steps inside a lax.scan
        sghmc = blackjax.sghmc(log_density_grad, num_integration_steps=n_steps, alpha=gamma)
        with jax.enable_x64(True):
            sghmc_run = jax.jit(lambda key, q: sghmc.step(key, q, None, h, tau))

        def blackjax_run() -> Any:
            with jax.enable_x64(True):
                return sghmc_run(key, jnp.ones((chains, 2), jnp.float64)).block_until_ready()

        peers.append(("BlackJAX sghmc (float64)", blackjax_run))
    return peers, notes
