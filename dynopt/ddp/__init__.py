"""A feed-forward network read as a discrete-time control system, for :class:`DDPNOpt`.

:class:`DDPTrajectory` (trajectory.py) runs the three passes of differential dynamic programming
on an ``nn.Sequential``; its layers are described in layers.py. It is not an
:class:`~dynopt.systems.AbstractSystem` (it lowers no letters to ops; it is the machinery of
:class:`dynopt.optim.DDPNOpt`), so it lives here rather than in :mod:`dynopt.systems`, which keeps
``DDPTrajectory`` as an alias for existing imports.
"""

from .trajectory import DDPTrajectory as DDPTrajectory

__all__ = ["DDPTrajectory"]
