"""dynopt: neural-network training as continuous-time dynamics.

* :mod:`dynopt.systems`: the dynamics (Hamiltonian, Langevin, thermostats, ...).
* :mod:`dynopt.integrators`: discretizations as splitting strings (``"BAOAB"``) and more.
* :func:`dynopt.integrate`: many chains, many steps, recorded for studies.
* :mod:`dynopt.diagnostics`: energy drift, temperatures, ACF / ESS / R-hat, Gibbs histograms.
* :mod:`dynopt.optim`: the same schemes as ``torch.optim.Optimizer`` objects.
* :mod:`dynopt.events`: triggers and actions (e.g. braking when a loss goal is reached).
* :mod:`dynopt.surfing`: continuation over network snapshots.
* :class:`dynopt.TrainingMonitor`: the study observables during any training loop.
"""

from . import (
    diagnostics,
    events,
    integrators,
    observables,
    optim,
    potentials,
    replicas,
    surfing,
    systems,
)
from .errors import DivergenceError
from .integrate import integrate
from .monitor import TrainingMonitor
from .stepping import State
from .trajectory import Trajectory

__version__ = "0.1.0"

__all__ = ["DivergenceError", "State", "TrainingMonitor", "Trajectory", "__version__",
           "diagnostics", "events", "integrate", "integrators", "observables", "optim",
           "potentials", "replicas", "surfing", "systems"]
