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

import importlib
from typing import TYPE_CHECKING, Any

from . import diagnostics, events, integrators, observables, potentials, systems
from .errors import DivergenceError
from .integrate import integrate
from .stepping import State
from .trajectory import Trajectory

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first use
    from . import optim, replicas, surfing
    from .monitor import TrainingMonitor

#: Imported on first use (PEP 562): they load torch.optim machinery (and, through
#: ``torch.compiler.disable``, torch._dynamo: about 1 s) that integrate() does not need.
_LAZY = {"optim": ".optim", "replicas": ".replicas", "surfing": ".surfing",
         "TrainingMonitor": ".monitor"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        value = module if name[0].islower() else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dynopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = ["DivergenceError", "State", "TrainingMonitor", "Trajectory", "__version__",
           "diagnostics", "events", "integrate", "integrators", "observables", "optim",
           "potentials", "replicas", "surfing", "systems"]
