"""Counting host synchronisations of torch code on a device (for tests and benchmarks).

A *host synchronisation* makes the CPU wait for the device: a device-to-host copy,
``.item()``, ``bool()`` / ``float()`` of a device tensor, ``nonzero()`` and the like. dynopt's
optimizers and the torch backend aim at none per step except where documented (the optimizer
events' one check per step, BBI's loss on the host, the finiteness check with
``nonfinite="raise"``).

:class:`HostSyncs` counts them inside a ``with`` block:

* on CUDA with ``torch.cuda.set_sync_debug_mode("warn")``, which makes torch report every
  synchronizing CUDA call as a warning (the runtime's own account, so nothing is missed);
* on the CPU, where nothing synchronises, by counting the Python-level conversions of a tensor
  to a host value that would synchronise on CUDA (``item``, ``bool``, ``float``, ``int``,
  ``__index__``, ``tolist``); ``numpy()`` is not counted (a zero-copy view on the CPU; a CUDA
  tensor needs ``.cpu()`` first, which the CUDA count sees).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

__all__ = ["HostSyncs"]

_CONVERSIONS = ("item", "__bool__", "__float__", "__int__", "__index__", "tolist")


class HostSyncs:
    """Context manager counting host synchronisations on ``device`` (see the module docstring).

    Example:
        >>> t = torch.ones(3)
        >>> with HostSyncs("cpu") as s:
        ...     _ = float(t.sum())
        >>> s.count
        1
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.count = 0
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> HostSyncs:
        self.count = 0
        if self.device.type == "cuda":
            self._mode = torch.cuda.get_sync_debug_mode()
            self._catch = warnings.catch_warnings(record=True)
            self._log = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.synchronize(self.device)
            torch.cuda.set_sync_debug_mode("warn")
        else:
            for name in _CONVERSIONS:
                orig = getattr(torch.Tensor, name)
                self._saved[name] = orig

                def counted(t: torch.Tensor, *a: Any, _orig: Any = orig, **k: Any) -> Any:
                    self.count += 1
                    return _orig(t, *a, **k)

                setattr(torch.Tensor, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode(self._mode)
            self._catch.__exit__(*exc)  # type: ignore[arg-type]
            self.count = sum("synchroniz" in str(w.message) for w in self._log)
        else:
            for name, orig in self._saved.items():
                setattr(torch.Tensor, name, orig)
            self._saved = {}
