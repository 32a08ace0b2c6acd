"""Session 16's numerical probe of the core (systems, integrators, backends, integrate()).

Each test failed on the code before its fix; the docstrings say what it was.
"""

from __future__ import annotations

import pytest
import torch

import dynopt
from dynopt import stepping
from dynopt.events import AtStep, SetFriction
from dynopt.optim import HeavyBall
from dynopt.potentials import Harmonic
from dynopt.systems import PortHamiltonian

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
