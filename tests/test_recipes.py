"""The extension recipes of CONTRIBUTING.md, each done here as a newcomer would do it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import dynopt
import dynopt.integrators as I
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.optim import dynamics as D

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sghmc_dynamics.py"
SYSTEM = S.Langevin(P.DoubleWell(dim=2), gamma=0.7, temperature=0.4)
Q0 = np.array([[0.5, -0.3], [1.2, 0.4], [-0.8, 0.1]])


def test_add_a_splitting_is_a_string_and_optionally_one_named_class():
    """Recipe "add a splitting": no kernel code, no compile; a name is one decorated class."""
    @I.named("test-obaab-name")
    class OBAAB(I.Splitting):
        def __init__(self) -> None:
            super().__init__("OBABO", name="OBAAB")

    try:
        kw = dict(h=0.05, n_steps=50, seed=3, record_every=10)
        by_name = dynopt.integrate(SYSTEM, "test-obaab-name", Q0, **kw)
        by_string = dynopt.integrate(SYSTEM, "OBABO", Q0, **kw)
        np.testing.assert_array_equal(by_name.q, by_string.q)
        assert type(I.resolve("TEST_OBAAB_NAME")) is OBAAB
    finally:
        I.NAMED.pop("test-obaab-name")


@pytest.fixture(scope="module")
def sghmc():
    spec = importlib.util.spec_from_file_location("sghmc_recipe_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    D.REGISTRY.pop("sghmc", None)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_add_a_system_from_existing_ops_runs_in_integrate(sghmc, backend):
    """Recipe "add a system from existing ops": the example's system needs no kernel change; in
    integrate() it is Langevin at the reduced injected temperature τ(1 − B̂/γ), bit for bit
    (given the same initial momenta: the default ones are drawn at each system's own τ)."""
    pot = P.DoubleWell(dim=2)
    new = sghmc.SGHMCSystem(pot, gamma=0.7, grad_noise=0.2, temperature=0.4)
    ref = S.Langevin(pot, gamma=0.7, temperature=0.4 * (1.0 - 0.2 / 0.7))
    kw = dict(h=0.05, n_steps=40, seed=5, record_every=10, backend=backend, p0=-0.5 * Q0)
    a = dynopt.integrate(new, "BAOAB", Q0, **kw)
    b = dynopt.integrate(ref, "BAOAB", Q0, **kw)
    np.testing.assert_array_equal(a.q, b.q)
    np.testing.assert_array_equal(a.p, b.p)
