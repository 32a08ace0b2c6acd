r"""A generated classification task: labels from a random deep "teacher" network.

Inputs ``x ~ N(0, I_d)``; the teacher is a random tanh MLP ``d → w → … → w → C`` with
N(0, gain²/fan_in) weights and no biases; the clean label is

.. math:: y(x) = \arg\max_c \big(T(x)_c + b_c\big),

with the offsets b found by iterating ``b_c ← b_c − 0.1 log(C · freq_c)`` from ``−T̄`` (the mean
logits) on the generated inputs (ratio clipped to [0.2, 5]), so that the classes are roughly
balanced. A fraction ``label_noise`` of the *training* labels is replaced by a uniformly drawn
class (the test labels stay clean, so test accuracy measures how well the teacher's decision
function was learned; the best achievable test accuracy is 100 %). Everything is generated from
``seed``: nothing is downloaded.

| symbol | code |
|---|---|
| d, C | ``n_features``, ``n_classes`` |
| w, depth | ``hidden`` |
| gain | ``gain`` |
| label-noise rate | ``label_noise`` |
"""

from __future__ import annotations

import itertools
import math

import torch

from .._validation import check_int, check_positive, check_probability
from .split import Split

__all__ = ["make_teacher_split"]

#: iterations of the class-balancing bias update b_c ← b_c − 0.1 log(C·freq_c) (the ratio
#: clipped to [0.2, 5])
BALANCE_ITERATIONS = 200


def make_teacher_split(n_train: int = 4000, n_test: int = 2000, *, n_features: int = 10,
                       n_classes: int = 10, hidden: tuple[int, ...] = (64, 64),
                       gain: float = 1.0, label_noise: float = 0.05, seed: int = 0) -> Split:
    """The teacher task as a standardized :class:`Split` (see the module docstring).

    Args:
        n_train, n_test: Sample counts (≥ 1).
        n_features: Input dimension d ≥ 1.
        n_classes: Number of classes C ≥ 2.
        hidden: Hidden widths of the teacher (each ≥ 1; may be empty: a linear teacher).
        gain: Weight scale (> 0): larger makes the decision boundary more nonlinear.
        label_noise: Fraction of training labels replaced by a uniform class, in [0, 1).
        seed: Seed of the inputs, the teacher and the noise.

    Raises:
        ValueError: Naming the parameter, for out-of-range sizes or rates.
    """
    n_train = check_int("n_train", n_train, minimum=1)
    n_test = check_int("n_test", n_test, minimum=1)
    n_features = check_int("n_features", n_features, minimum=1)
    n_classes = check_int("n_classes", n_classes, minimum=2)
    widths = [check_int(f"hidden[{i}]", w, minimum=1) for i, w in enumerate(hidden)]
    gain = check_positive("gain", gain)
    label_noise = check_probability("label_noise", label_noise, open_right=True)
    g = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    n = n_train + n_test
    x = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    h = x
    dims = [n_features, *widths, n_classes]
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(dims)):
        w = torch.randn(fan_in, fan_out, generator=g, dtype=torch.float64)
        h = h @ (w * gain / math.sqrt(fan_in))
        if i < len(dims) - 2:
            h = torch.tanh(h)
    bias = -h.mean(0)
    for _ in range(BALANCE_ITERATIONS):       # equalize the class frequencies
        freq = torch.bincount((h + bias).argmax(1), minlength=n_classes).double() / n
        bias -= 0.1 * torch.log((freq * n_classes).clamp(0.2, 5.0))
    y = (h + bias).argmax(1)
    flip = torch.rand(n_train, generator=g, dtype=torch.float64) < label_noise
    noisy = torch.randint(0, n_classes, (n_train,), generator=g)
    y_train = torch.where(flip, noisy, y[:n_train])
    xs = x.float()
    return Split(xs[:n_train], y_train, xs[n_train:], y[n_train:], n_classes=n_classes,
                 name="teacher")
