"""Session 16's numerical probe of the core (systems, integrators, backends, integrate()).

Each test failed on the code before its fix; the docstrings say what it was.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import dynopt
from dynopt import stepping
from dynopt.events import AtStep, SetFriction
from dynopt.optim import HeavyBall
from dynopt.potentials import Harmonic
from dynopt.systems import NoseHooverChain, OverdampedLangevin, PortHamiltonian

BACKENDS = ("numba", "torch")


# --- an amplifying explicit friction step (γt > 2) -----------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["FBA", "BAFAB"])
def test_integrate_refuses_an_amplifying_friction_step(backend, scheme):
    """γh = 3 makes F multiply p by 1 − γh = −2 every step: integrate() ran it and returned
    |p| ≈ 1e15 after 50 steps, where HeavyBall refuses the same update. Now both raise the one
    message of :func:`~dynopt.systems.port_hamiltonian.friction_factor`."""
    system = PortHamiltonian(Harmonic(dim=2), gamma=30.0)
    with pytest.raises(ValueError, match=r"gamma \* h = 30.0 \* 0.1 = 3 > 2"):
        dynopt.integrate(system, scheme, [1.0, 1.0], h=0.1, n_steps=5, backend=backend, seed=0)
    m = torch.nn.Linear(2, 1)
    m(torch.ones(1, 2)).sum().backward()
    with pytest.raises(ValueError, match=r"gamma \* lr = 30.0 \* 0.1 = 3 > 2"):
        HeavyBall(m.parameters(), lr=0.1, gamma=30.0).step()


def test_friction_check_is_per_substep_and_allows_the_boundary():
    """The check is per F sub-step of duration t: "FFBA" at γh = 3 has γt = 1.5 (c = −0.5) and
    runs; γh = 2 (c = −1) runs; the exact-friction letter C is never refused."""
    pot = Harmonic(dim=1)
    dynopt.integrate(PortHamiltonian(pot, gamma=30.0), "FFBA", [1.0], h=0.1, n_steps=3,
                     backend="numba", seed=0)
    dynopt.integrate(PortHamiltonian(pot, gamma=20.0), "FBA", [1.0], h=0.1, n_steps=3,
                     backend="numba", seed=0)
    dynopt.integrate(PortHamiltonian(pot, gamma=300.0), "BACAB", [1.0], h=0.1, n_steps=3,
                     backend="numba", seed=0)
    with pytest.raises(ValueError, match=r"gamma \* 0.5\*h = 50.0 \* 0.05 = 2.5 > 2"):
        dynopt.integrate(PortHamiltonian(pot, gamma=50.0), "FFBA", [1.0], h=0.1, n_steps=3,
                         backend="numba", seed=0)


def test_an_event_friction_and_a_continued_state_are_checked():
    """A SetFriction event whose γ makes F amplify is refused before the run (it ran, and the
    chain blew up after the event fired); so is a state whose per-chain γ (set by an event of
    an earlier run at a smaller h) amplifies at the new h, and the single-step API."""
    system = PortHamiltonian(Harmonic(dim=1), gamma=0.0)
    with pytest.raises(ValueError, match=r"gamma \* h = 30.0 \* 0.1"):
        dynopt.integrate(system, "FBA", [1.0], h=0.1, n_steps=5, backend="numba", seed=0,
                         events=[AtStep(2, then=SetFriction(30.0))])
    first = dynopt.integrate(system, "FBA", [1.0], h=0.01, n_steps=3, backend="numba", seed=0,
                             events=[AtStep(1, then=SetFriction(30.0))])
    assert first.extras["gamma"][0, -1] == 30.0
    with pytest.raises(ValueError, match=r"gamma \* h = 30.0 \* 0.1"):
        dynopt.integrate(system, "FBA", None, h=0.1, n_steps=5, state=first.final_state)
    with pytest.raises(ValueError, match=r"gamma \* h = 30.0 \* 0.1"):
        stepping.run(system, dynopt.integrators.Splitting("FBA"), first.final_state, n_steps=1,
                     h=0.1)


# --- vector extras keep their axis when their size is 1 ----------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_chains", [1, 3])
def test_chain_of_length_one_keeps_its_link_axis(backend, n_chains):
    """A Nosé–Hoover chain's v and eta have one entry per link: with chain_length=1 they were
    squeezed to (chain, draw) while chain_length=2 gave (chain, draw, 2), so code written for
    M links broke at M = 1. Now (chain, draw, M) for every M; scalar extras stay squeezed."""
    for m in (1, 2):
        system = NoseHooverChain(Harmonic(dim=1), chain_length=m)
        traj = dynopt.integrate(system, None, [0.5], h=0.05, n_steps=4, n_chains=n_chains,
                                backend=backend, seed=3)
        assert traj.extras["v"].shape == (n_chains, 5, m)
        assert traj.extras["eta"].shape == (n_chains, 5, m)
        assert traj.extras["invariant"].shape == (n_chains, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_overdamped_noise_memory_keeps_its_coordinate_axis(backend):
    """The overdamped LM memory noise_prev has one entry per coordinate: dim=1 squeezed it to
    (chain, draw) while dim=2 gave (chain, draw, 2). Now (chain, draw, dim) for every dim."""
    for dim in (1, 2):
        system = OverdampedLangevin(Harmonic(dim=dim), temperature=0.5)
        traj = dynopt.integrate(system, "lm", np.zeros(dim), h=0.05, n_steps=4, n_chains=2,
                                backend=backend, seed=3)
        assert traj.extras["noise_prev"].shape == (2, 5, dim)
        np.testing.assert_array_equal(traj.extras["noise_prev"][:, -1],
                                      np.asarray(traj.final_state.x.tolist()))


def test_observables_run_keeps_the_link_axis_too():
    """The observables recorder (torch, observables=) squeezed the same way; it now shares
    integrate()'s rule (:func:`dynopt.trajectory.recorded_extras`)."""
    system = NoseHooverChain(Harmonic(dim=2), chain_length=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = dynopt.integrate(system, None, [0.5, 0.1], h=0.05, n_steps=4, n_chains=2,
                                backend="torch", seed=3, observables=["theta"])
    assert traj.extras["v"].shape == (2, 5, 1)
