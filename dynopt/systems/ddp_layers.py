"""Moved to :mod:`dynopt.ddp.layers`; this name is the same module object (old imports and
monkeypatches keep working)."""

import sys

from ..ddp import layers as _moved

sys.modules[__name__] = _moved
