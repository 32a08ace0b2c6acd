"""What a run records per chain instead of the whole state: ``integrate(..., observables=...)``.

Built-ins (by name or as objects): :class:`Loss` (``"loss"``), :class:`HeldoutLoss`
(``"heldout_loss"``), :class:`LayerKinetic` (``"layer_kinetic"``), :class:`LayerConfigurational`
(``"layer_configurational"``), :class:`Projections` (``"projections"``), :class:`Theta`
(``"theta"``); any callable ``f(state)`` through :class:`Callback`. The potential, kinetic
energy, energy, invariant and thermostat variables are always recorded.
:func:`layer_temperatures` turns the per-layer records into temperatures with standard errors.
See docs/networks.md.
"""

from .base import Context as Context
from .base import Observable as Observable
from .callback import Callback as Callback
from .layers import LayerConfigurational as LayerConfigurational
from .layers import LayerKinetic as LayerKinetic
from .loss import HeldoutLoss as HeldoutLoss
from .loss import Loss as Loss
from .names import NAMES as NAMES
from .recorder import Recorder as Recorder
from .temperatures import LayerTemperature as LayerTemperature
from .temperatures import layer_temperatures as layer_temperatures
from .theta import Projections as Projections
from .theta import Theta as Theta

__all__ = ["NAMES", "Callback", "Context", "HeldoutLoss", "LayerConfigurational",
           "LayerKinetic", "LayerTemperature", "Loss", "Observable", "Projections", "Recorder",
           "Theta", "layer_temperatures"]
