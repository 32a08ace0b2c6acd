"""Reprs record every setting that changes the dynamics (they go into study reports and ArviZ
attributes), and arguments of the wrong kind get a TypeError naming them."""

from __future__ import annotations

import numpy as np
import pytest

from dynopt import diagnostics as dg
from dynopt.observables.layers import layer_slices
from dynopt.potentials import Harmonic, MultiBasin
from dynopt.systems import Hamiltonian, Langevin, NoseHoover, PortHamiltonian


@pytest.mark.parametrize("make", [
    lambda m: Hamiltonian(Harmonic(dim=2), mass=m),
    lambda m: Langevin(Harmonic(dim=2), mass=m),
    lambda m: NoseHoover(Harmonic(dim=2), temperature=1.0, mass=m),
    lambda m: PortHamiltonian(Harmonic(dim=2), gamma=0.5, mass=m),
])
def test_system_repr_shows_a_non_unit_mass(make):
    assert repr(make([1.0, 4.0])) != repr(make(1.0))
    assert "mass=[1.0, 4.0]" in repr(make([1.0, 4.0])) and "mass=2.0" in repr(make(2.0))
    assert ", mass=" not in repr(make(1.0))


def test_multi_basin_repr_shows_non_default_settings():
    assert repr(MultiBasin()) == "MultiBasin(dim=2)"
    r = repr(MultiBasin(a1=0.3, coupling=0.5, c1=[-1.0, -3.0]))
    assert r == "MultiBasin(dim=2, c1=[-1.0, -3.0], a1=0.3, coupling=0.5)"


@pytest.mark.parametrize("sl", [slice(0, 0), slice(3, 1), slice(0, 9), slice(-1, 2),
                                slice(0, 4, -1)])
def test_empty_or_outside_layer_groups_are_refused(sl):
    # an empty block divided by n = 0 later, with an unrelated "must be finite" error
    with pytest.raises(ValueError, match="groups\\['a'\\] must be a non-empty slice"):
        layer_slices(None, 4, {"a": sl})
    assert layer_slices(None, 4, {"a": slice(0, 4, 2)}) == {"a": slice(0, 4, 2)}


def test_configurational_temperature_names_a_wrong_potential():
    with pytest.raises(TypeError, match="potential must be a dynopt potential .*got 'harmonic'"):
        dg.configurational_temperature(np.zeros((1, 10, 1)), "harmonic")


def test_kinetic_temperature_refuses_a_bool_or_text_mass():
    p = np.ones((1, 10, 1))
    for bad in (True, "2"):
        with pytest.raises(TypeError, match="mass must be array-like of real numbers"):
            dg.kinetic_temperature(p, mass=bad)


def test_tensor_arrays_of_any_float_dtype_are_read_and_bool_tensors_refused():
    import torch

    from dynopt._validation import as_finite_array

    # bfloat16 has no numpy dtype: it failed with torch's own "unsupported ScalarType"
    np.testing.assert_array_equal(
        as_finite_array("mass", torch.tensor([1.0, 2.0], dtype=torch.bfloat16)), [1.0, 2.0])
    with pytest.raises(TypeError, match="mass must be array-like of real numbers"):
        as_finite_array("mass", torch.tensor([True, False]))
