"""The numba backend: a cached, parallel, fused interpreter of dynopt programs (CPU, float64).

Importing it first configures numba's on-disk cache (:mod:`.cache`): a directory keyed to the
dynopt version and a hash of every kernel source, or no disk cache at all where nothing is
writable.
"""

from . import cache as _cache  # noqa: F401  (must run before any @njit(cache=...) below)
