"""A Monte Carlo estimate with its standard error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Estimate"]


@dataclass(frozen=True)
class Estimate:
    """An estimate and its standard error (scalars, or arrays over trailing dimensions).

    Every statistical diagnostic that estimates an average (the temperatures,
    :func:`~dynopt.diagnostics.estimate_mean`) returns one, with ``se`` from batch means
    (:func:`~dynopt.diagnostics.batch_means_se`).

    Attributes:
        value: The estimate.
        se: Its standard error.

    Example:
        >>> est = Estimate(0.2503, 0.0004)
        >>> est.agrees(0.25)            # |value − target| <= 4·se
        True
        >>> str(est)
        '0.2503 ± 0.0004'
    """

    value: Any
    se: Any

    def z(self, target: Any) -> Any:
        """(value − target)/se: the deviation from ``target`` in standard errors."""
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (np.asarray(self.value) - target) / np.asarray(self.se)
        return float(out) if np.ndim(out) == 0 else out

    def agrees(self, target: Any, n_se: float = 4.0, bias: float = 0.0) -> bool:
        """Whether |value − target| <= n_se·se + bias everywhere (the project's test criterion)."""
        dev = np.abs(np.asarray(self.value) - target)
        return bool(np.all(dev <= n_se * np.asarray(self.se) + bias))

    def __float__(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        if np.ndim(self.value) == 0:
            return f"{float(self.value):.4g} ± {float(self.se):.2g}"
        return f"{np.asarray(self.value)} ± {np.asarray(self.se)}"
