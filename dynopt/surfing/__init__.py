"""Surfing: latent recovery by continuation over network snapshots (Song, Fan & Lafferty, 2019).

* :func:`surf`: the non-autonomous gradient flow (or Langevin dynamics) over snapshots θ_0 … θ_K,
  integrated with dynopt's own schemes, with the accumulated work W.
* :class:`SnapshotRecorder`: records the snapshots during a training loop.
* :func:`reconstruction_potential`: U(x) = ½‖A G_θ(x) − y‖² as a dynopt potential.
"""

from .potential import reconstruction_potential as reconstruction_potential
from .recorder import SnapshotRecorder as SnapshotRecorder
from .surf import SurfResult as SurfResult
from .surf import surf as surf

__all__ = ["SnapshotRecorder", "SurfResult", "reconstruction_potential", "surf"]
