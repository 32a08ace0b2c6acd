"""scikit-learn's bundled digits and wine data sets as standardized train/test splits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .._validation import check_int, check_probability
from .split import Split

__all__ = ["load_digits_split", "load_wine_split"]


def _split(loader: Callable[[], Any], name: str, test_fraction: float, seed: int,
           standardize: bool) -> Split:
    test_fraction = check_probability("test_fraction", test_fraction, open_right=True)
    seed = check_int("seed", seed, minimum=0)
    data = loader()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    n_test = round(test_fraction * len(y))
    if n_test == 0 or n_test >= len(y) - 1:
        raise ValueError(f"test_fraction={test_fraction} leaves {n_test} test and "
                         f"{len(y) - n_test} training examples of {len(y)}; both sets need "
                         "examples (and at least 2 for training)")
    te, tr = idx[:n_test], idx[n_test:]
    if standardize:
        mu = x[tr].mean(0)
        sd = x[tr].std(0)
        sd[sd == 0] = 1.0
        x = (x - mu) / sd
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y)
    return Split(xt[tr], yt[tr], xt[te], yt[te], n_classes=int(y.max()) + 1, name=name)


def load_digits_split(test_fraction: float = 0.3, seed: int = 0, standardize: bool = True) -> Split:
    """8×8 handwritten digits (1797 samples, 64 features, 10 classes), split and standardized
    with training-set statistics."""
    from sklearn.datasets import load_digits

    return _split(load_digits, "digits", test_fraction, seed, standardize)


def load_wine_split(test_fraction: float = 0.3, seed: int = 0, standardize: bool = True) -> Split:
    """Wine recognition (178 samples, 13 features, 3 classes), split and standardized."""
    from sklearn.datasets import load_wine

    return _split(load_wine, "wine", test_fraction, seed, standardize)
