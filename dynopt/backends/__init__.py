"""Backends that execute programs: ``numba`` (CPU, fused, cached kernels) and ``torch``."""

from __future__ import annotations

from .base import AbstractBackend, Divergence, Records

__all__ = ["NO_JIT_REASON", "AbstractBackend", "Divergence", "Records", "get_backend",
           "numba_jit_disabled"]

#: Why the numba backend (and dynopt's CPU optimizer kernels) cannot run under
#: ``NUMBA_DISABLE_JIT=1``; the library's error and the command line's share it.
NO_JIT_REASON = ("its kernels use numba intrinsics and compiled function pointers, which have "
                 "no pure-Python form")

_INSTANCES: dict[str, AbstractBackend] = {}


def get_backend(name: str) -> AbstractBackend:
    """The backend called ``name`` (imported lazily, so numba is not compiled for torch users).

    Raises:
        RuntimeError: For ``"numba"`` under ``NUMBA_DISABLE_JIT=1``: its kernels use numba
            intrinsics and compiled function pointers, which have no pure-Python form.
    """
    if name == "numba" and numba_jit_disabled():
        raise RuntimeError(f"backend='numba' cannot run with NUMBA_DISABLE_JIT=1 "
                           f"({NO_JIT_REASON}): unset NUMBA_DISABLE_JIT, or use backend='torch'")
    if name not in _INSTANCES:
        if name == "numba":
            from .numba.runner import NumbaBackend

            _INSTANCES[name] = NumbaBackend()
        elif name == "torch":
            from .torch.runner import TorchBackend

            _INSTANCES[name] = TorchBackend()
        else:
            raise ValueError(f"backend must be 'numba' or 'torch', got {name!r}")
    return _INSTANCES[name]


def numba_jit_disabled() -> bool:
    """Whether numba's compiler is off (``NUMBA_DISABLE_JIT=1``, read by numba at import)."""
    import numba

    return bool(numba.config.DISABLE_JIT)
