"""The public names of design.md §2, which tests outside the project use: every one exists, with
the keyword names the contract gives (integrate's, the systems' ``gamma``/``temperature``/
``mass``/``potential``, the optimizers' ``lr``/``gamma``/``temperature``), and the CLI offers
its four commands. Renaming any of them breaks outside code silently; here it fails."""

from __future__ import annotations

import inspect

import pytest

import dynopt
import dynopt.diagnostics as D
import dynopt.integrators as I
import dynopt.optim as O
import dynopt.potentials as P
import dynopt.surfing as SF
import dynopt.systems as S
from dynopt.cli import COMMANDS

NAMES = {
    S: "Hamiltonian Langevin OverdampedLangevin AdaptiveLangevin NoseHoover NoseHooverChain "
       "BornInfeld ECDSep PortHamiltonian",
    I: "Splitting BAOAB ABOBA OBABO Leapfrog EulerMaruyama LeimkuhlerMatthews",
    P: "Harmonic DoubleWell Ackley Rastrigin Rosenbrock Custom",
    D: "energy_drift kinetic_temperature configurational_temperature autocorrelation "
       "integrated_autocorrelation_time effective_sample_size rhat",
    O: "Langevin OverdampedLangevin AdaptiveLangevin NoseHoover AdLaLa LOL BBI ECDSep HeavyBall "
       "DDPNOpt",
    SF: "surf",
}


@pytest.mark.parametrize("module", NAMES, ids=lambda m: m.__name__)
def test_every_public_name_exists(module):
    missing = [n for n in NAMES[module].split() if not callable(getattr(module, n, None))]
    assert not missing, (module.__name__, missing)


def test_integrate_signature():
    sig = inspect.signature(dynopt.integrate)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:3]] == ["system", "integrator", "q0"]
    for name in ("h", "n_steps", "backend", "seed", "p0", "n_chains", "record_every"):
        assert sig.parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    assert sig.parameters["record_every"].default == 1
    for name in ("seed", "p0", "n_chains"):
        assert sig.parameters[name].default is None, name


def test_trajectory_fields():
    traj = dynopt.integrate(S.Langevin(P.Harmonic(dim=2)), "BAOAB", [0.1, 0.2], h=0.1,
                            n_steps=4, n_chains=3, seed=0, backend="torch", progress=False)
    assert traj.t.shape == (5,) and traj.q.shape == (3, 5, 2) and traj.p.shape == (3, 5, 2)
    assert traj.energy.shape == (3, 5) and isinstance(traj.extras, dict)


@pytest.mark.parametrize("cls", [S.Langevin, S.AdaptiveLangevin, S.NoseHoover,
                                 S.NoseHooverChain, S.OverdampedLangevin, S.PortHamiltonian],
                         ids=lambda c: c.__name__)
def test_system_keyword_names(cls):
    params = inspect.signature(cls.__init__).parameters
    assert "potential" in params
    keys = {"Langevin": ("gamma", "temperature", "mass"),
            "AdaptiveLangevin": ("temperature", "mass"), "NoseHoover": ("temperature", "mass"),
            "NoseHooverChain": ("temperature", "mass"),
            "OverdampedLangevin": ("temperature", "gamma"), "PortHamiltonian": ("gamma", "mass")}
    assert all(k in params for k in keys[cls.__name__]), params


@pytest.mark.parametrize("cls", [O.Langevin, O.OverdampedLangevin, O.AdaptiveLangevin,
                                 O.NoseHoover, O.AdLaLa, O.LOL, O.BBI, O.ECDSep, O.HeavyBall,
                                 O.DDPNOpt], ids=lambda c: c.__name__)
def test_optimizers_take_lr_and_are_torch_optimizers(cls):
    import torch

    assert issubclass(cls, torch.optim.Optimizer)
    params = inspect.signature(cls.__init__).parameters
    assert "lr" in params
    wants = {"Langevin": ("gamma", "temperature"), "AdLaLa": ("gamma", "temperature"),
             "LOL": ("gamma", "temperature"), "HeavyBall": ("gamma",)}
    assert all(k in params for k in wants.get(cls.__name__, ())), params


def test_cli_commands():
    assert {"study", "train", "reproduce", "bench"} <= set(COMMANDS)
