"""The bundled data sets: sizes, balance, standardization, seeding, and refused arguments."""

from __future__ import annotations

import pytest
import torch

from dynopt.data import batches, load_digits_split, load_wine_split, make_spirals
from dynopt.data.spirals import spiral_points


def test_spirals_have_the_asked_sizes_balanced_classes_and_follow_the_seed():
    s = make_spirals(n_train=40, n_test=60, seed=3)
    assert s.x_train.shape == (40, 2) and s.x_test.shape == (60, 2)
    assert s.y_train.sum().item() == 20 and s.y_test.sum().item() == 30
    assert torch.equal(make_spirals(n_train=40, n_test=60, seed=3).x_train, s.x_train)
    assert not torch.equal(make_spirals(n_train=40, n_test=60, seed=4).x_train, s.x_train)


@pytest.mark.parametrize("kw, name", [({"n_train": 41}, "n_train"), ({"n_test": 7}, "n_test")])
def test_an_odd_spiral_count_is_refused(kw, name):
    """An odd count returned one point fewer than asked, silently."""
    with pytest.raises(ValueError, match=f"{name} must be even"):
        make_spirals(**kw)


@pytest.mark.parametrize("loader, n", [(load_wine_split, 178), (load_digits_split, 1797)])
def test_tabular_splits_partition_the_data_and_standardize_on_the_training_set(loader, n):
    s = loader(test_fraction=0.25, seed=1)
    assert s.x_train.shape[0] + s.x_test.shape[0] == n
    assert s.x_test.shape[0] == round(0.25 * n)
    mean, std = s.x_train.mean(0), s.x_train.std(0, unbiased=False)
    varying = std > 0
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-5)
    assert torch.allclose(std[varying], torch.ones_like(std[varying]), atol=1e-4)


@pytest.mark.parametrize("fraction", [0.999, 0.001])
def test_a_test_fraction_that_empties_a_set_is_refused(fraction):
    """test_fraction=0.999 gave an empty training set and NaN features."""
    with pytest.raises(ValueError, match="both sets need examples"):
        load_wine_split(test_fraction=fraction)


@pytest.mark.parametrize("call", [lambda: make_spirals(seed=1.5), lambda: load_wine_split(seed=-1),
                                  lambda: load_digits_split(seed=1.5)])
def test_data_seeds_are_checked_by_name(call):
    with pytest.raises((ValueError, TypeError), match="seed must be"):
        call()


@pytest.mark.parametrize("args", [(2, 1, (0,)), (0, 1), (2, 0)])
def test_mlp_refuses_a_zero_width_layer(args):
    from dynopt.training import mlp

    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        mlp(*args)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: make_spirals(n_train=0), "n_train must be >= 2, got 0"),
    (lambda: make_spirals(n_test=0), "n_test must be >= 2, got 0"),
    (lambda: spiral_points(10, power=0.0),
     "power must be > 0, got 0.0"),
    (lambda: spiral_points(10, radius=-1),
     "radius must be > 0, got -1"),
    (lambda: list(batches(
        torch.zeros(5, 2), torch.zeros(4), 2)), "got 5 inputs and 4 targets"),
])
def test_data_arguments_are_checked_by_name(call, match):
    """make_spirals(n_train=0) blamed "n"; power ≤ 0 collapsed the spirals or sent them to
    infinity; x and y of different lengths gave a raw IndexError."""
    with pytest.raises(ValueError, match=match):
        call()


def test_network_loss_refuses_a_model_that_overwrites_its_input():
    """ReLU(inplace=True) as the first layer overwrote the user's data (the probe ran on a view
    of it) and, on the lean path, failed later with a raw error."""
    from dynopt.potentials import NetworkLoss

    x, y = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.randn(6, 1)
    x0 = x.clone()
    net = torch.nn.Sequential(torch.nn.ReLU(inplace=True), torch.nn.Linear(3, 1))
    for path in ("auto", "vmap"):
        with pytest.raises(ValueError, match="changes its input in place"):
            NetworkLoss(net, torch.nn.functional.mse_loss, (x, y), path=path)
        assert torch.equal(x, x0)
    later = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(inplace=True),
                                torch.nn.Linear(4, 1))
    NetworkLoss(later, torch.nn.functional.mse_loss, (x, y))  # in place after the input: fine
