"""Events: triggers on observables (loss, energy, step count, state) with actions (set the
friction, switch dynamics, bounce, stop), the same in ``integrate()`` and in optimizers.

Example (goal-oriented braking, Burghoff et al. 2023)::

    from dynopt.events import LossBelow, SetFriction
    from dynopt.optim import HeavyBall
    opt = HeavyBall(model.parameters(), lr=0.1, gamma=0.1,
                    events=[LossBelow(0.1, then=SetFriction(1.0))])

Every firing is logged (:class:`Firing`: step, chain, observable value, actions): in
``traj.events`` after ``integrate(..., events=...)`` and in ``optimizer.event_log``.
"""

from .actions import Action as Action
from .actions import Bounce as Bounce
from .actions import SetFriction as SetFriction
from .actions import Stop as Stop
from .actions import SwitchDynamics as SwitchDynamics
from .engine import EventLog as EventLog
from .engine import EventSet as EventSet
from .engine import Firing as Firing
from .triggers import AtStep as AtStep
from .triggers import EnergyAbove as EnergyAbove
from .triggers import EnergyBelow as EnergyBelow
from .triggers import LossBelow as LossBelow
from .triggers import Plateau as Plateau
from .triggers import RelativeReduction as RelativeReduction
from .triggers import StateCondition as StateCondition
from .triggers import Threshold as Threshold
from .triggers import Trigger as Trigger

__all__ = ["Action", "AtStep", "Bounce", "EnergyAbove", "EnergyBelow", "EventLog", "EventSet",
           "Firing", "LossBelow", "Plateau", "RelativeReduction", "SetFriction",
           "StateCondition", "Stop", "SwitchDynamics", "Threshold", "Trigger"]
