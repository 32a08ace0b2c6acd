"""Mutation-testing gaps of the data sets and the training loop.

Each test states a property of the documented contract (dynopt/data, dynopt/training.py) that
a one-line bug would break: the spiral geometry and its point reflection, independent train
and test draws, a partition of the tabular data, a seeded batch order, the loop's evaluation
schedule and seed, the accuracy of sigmoid outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynopt.data import batches, load_wine_split, make_spirals
from dynopt.data.spirals import spiral_points
from dynopt.training import accuracy, fit, mlp


# --- spirals --------------------------------------------------------------------------------------
def test_spiral_class_one_is_the_point_reflection_of_class_zero():
    """Class 1 is −x of class 0 (the authors' construction), point for point; labels 0 then 1."""
    x, y = spiral_points(40, generator=torch.Generator().manual_seed(2))
    assert torch.equal(x[20:], -x[:20])
    assert torch.equal(y, torch.cat([torch.zeros(20), torch.ones(20)]))


def test_noise_free_spiral_points_lie_on_the_stated_curve():
    """Without noise a class-0 point is r(cos φ, sin φ) with r = a t^p and φ = 2π b t^p, i.e.
    φ ≡ 2π b r / a (mod 2π): checked for the defaults and for other a, b."""
    for turns, radius in ((4.0, 2.0), (1.5, 3.0)):
        x, _ = spiral_points(200, turns=turns, noise=0.0, radius=radius,
                             generator=torch.Generator().manual_seed(0))
        pts = x[:100].double()
        r = torch.linalg.vector_norm(pts, dim=1)
        assert float(r.max()) <= radius * (1 + 1e-6)
        phi = torch.atan2(pts[:, 1], pts[:, 0])
        want = 2 * math.pi * turns * r / radius
        # the angle difference modulo 2π, folded into [−π, π): float32 rounding only
        d = torch.remainder(phi - want + math.pi, 2 * math.pi) - math.pi
        assert float(d.abs().max()) < 1e-4 * (1 + 2 * math.pi * turns), float(d.abs().max())


def test_spiral_test_points_are_drawn_independently_of_the_training_points():
    """The test set continues the seeded stream: no test point repeats a training point
    (noise-free, so a reused stream would repeat the curve parameters exactly)."""
    s = make_spirals(n_train=40, n_test=60, noise=0.0, seed=5)
    train = {tuple(p) for p in s.x_train.tolist()}
    assert not any(tuple(p) in train for p in s.x_test.tolist())


# --- tabular splits ---------------------------------------------------------------------------------
def test_tabular_split_is_a_partition_of_the_data_set_rows():
    """Unstandardized, train ∪ test is exactly the data set (as a multiset of rows): disjoint,
    nothing lost, nothing repeated; the seed decides which rows go where."""
    from sklearn.datasets import load_wine

    raw = np.asarray(load_wine().data, dtype=np.float32)
    s = load_wine_split(test_fraction=0.3, seed=2, standardize=False)
    both = np.concatenate([s.x_train.numpy(), s.x_test.numpy()])
    key = np.lexsort(both.T[::-1])
    want = np.lexsort(raw.T[::-1])
    np.testing.assert_array_equal(both[key], raw[want])
    other = load_wine_split(test_fraction=0.3, seed=3, standardize=False)
    assert not torch.equal(other.x_test, s.x_test)


# --- batches ----------------------------------------------------------------------------------------
def test_batch_order_follows_the_generator_and_covers_every_example_once():
    x = torch.arange(23.0).reshape(-1, 1)
    y = torch.arange(23)

    def order(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return [int(v) for _, yb in batches(x, y, 5, g) for v in yb]

    a, b = order(7), order(7)
    assert a == b and sorted(a) == list(range(23))
    assert order(8) != a
    assert [int(v) for _, yb in batches(x, y, 5, shuffle=False) for v in yb] == list(range(23))


# --- the training loop ------------------------------------------------------------------------------
def test_accuracy_rounds_sigmoid_outputs_and_takes_the_argmax_of_logits():
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    assert accuracy(torch.tensor([0.2, 0.7, 0.4, 0.49]), y) == 0.75
    assert accuracy(torch.tensor([[0.1], [0.9], [0.6], [0.3]]), y) == 1.0
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.1, 3.0], [-5.0, 1.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 2, 0])) == pytest.approx(2 / 3)


def _fit(seed: int, epochs: int = 3, eval_every: int = 1):
    torch.manual_seed(0)
    split = make_spirals(n_train=40, n_test=20, seed=1)
    model = mlp(2, 1, (8,), sigmoid_output=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hist = fit(model, opt, split, epochs=epochs, batch_size=8, seed=seed, eval_every=eval_every)
    return hist, torch.nn.utils.parameters_to_vector(model.parameters()).detach()


def test_fit_evaluates_every_eval_every_epochs_and_after_the_last():
    hist, _ = _fit(0, epochs=5, eval_every=2)
    assert hist.epoch == [2, 4, 5]
    assert len(hist.test_loss) == len(hist.train_accuracy) == 3


def test_fit_minibatch_order_follows_its_seed():
    """The same seed gives the same parameters bit for bit; another seed another order (the
    same initial model and data), hence other parameters."""
    _, a = _fit(0)
    _, b = _fit(0)
    _, c = _fit(1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)



# --- the teacher task -------------------------------------------------------------------------------
def test_teacher_training_labels_are_the_clean_labels_up_to_the_stated_noise_rate():
    """Splits of the same total size share the inputs and the teacher (both drawn before the
    labels), so rows that one split trains on and another holds out have the held-out split's
    clean labels as reference: identical at label_noise = 0, changed in a fraction
    0.2·(1 − 1/C) = 0.18 at label_noise = 0.2 (binomial SE 0.012 over 1000 rows)."""
    from dynopt.data import make_teacher_split

    held = make_teacher_split(500, 1500, seed=6, label_noise=0.3)   # rows 500.. are clean
    clean = make_teacher_split(1500, 500, seed=6, label_noise=0.0)
    noisy = make_teacher_split(1500, 500, seed=6, label_noise=0.2)
    assert torch.equal(clean.x_train[500:], held.x_test[:1000])
    ref = held.y_test[:1000]
    assert torch.equal(clean.y_train[500:], ref)
    changed = float((noisy.y_train[500:] != ref).double().mean())
    se = math.sqrt(0.18 * 0.82 / 1000)
    assert abs(changed - 0.18) < 4 * se, changed
