"""Every validated parameter of every public constructor, with a bad value (issue 10).

One row per (constructor, parameter, kind of constraint); each kind expands to bad values and
the exact error each must give: the right type, a message that names the parameter and shows
the value, and for optimizer hyperparameters the ``(param group N)`` that says where it came
from. A parameter that silently accepts its bad values, or an error that loses its name, value
or group, fails here.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from dynopt import events as E
from dynopt import integrators as I
from dynopt import optim as O
from dynopt import potentials as P
from dynopt import systems as S

NAN, INF = float("nan"), float("inf")

#: kind -> [(bad value, error type, message after "<name> must be ")]
KINDS = {
    "positive": [(0, ValueError, "> 0, got 0.0"), (-1, ValueError, "> 0, got -1.0"),
                 (NAN, ValueError, "finite, got nan"), (INF, ValueError, "finite, got inf"),
                 ("x", TypeError, "a real number, got 'x'"),
                 (True, TypeError, "a real number, got True"),
                 (np.array(True), TypeError, r"a real number, got array\(True\)")],
    "nonnegative": [(-1, ValueError, ">= 0, got -1.0"), (NAN, ValueError, "finite, got nan"),
                    (INF, ValueError, "finite, got inf"), ("x", TypeError, "a real number")],
    "real": [(NAN, ValueError, "finite, got nan"), (INF, ValueError, "finite, got inf"),
             ("x", TypeError, "a real number, got 'x'")],
    "at_least_one": [(0.5, ValueError, ">= 1, got 0.5"), (NAN, ValueError, "finite, got nan")],
    "int>=1": [(0, ValueError, ">= 1, got 0"), (-1, ValueError, ">= 1, got -1"),
               (2.5, TypeError, "an integer, got 2.5"), (NAN, TypeError, "an integer, got nan")],
    "int>=0": [(-1, ValueError, ">= 0, got -1"), (2.5, TypeError, "an integer, got 2.5")],
    "positive_array": [(0, ValueError, "> 0 everywhere, got 0.0"),
                       (-1, ValueError, "> 0 everywhere, got -1.0"),
                       (NAN, ValueError, "finite, got nan"),
                       ("x", TypeError, "array-like of real numbers, got 'x'"),
                       ("2", TypeError, "array-like of real numbers, got '2'"),
                       (True, TypeError, "array-like of real numbers, got True")],
    "unit_interval_open": [(1.0, ValueError, r"in \[0, 1\), got 1.0"),
                           (-0.5, ValueError, r"in \[0, 1\), got -0.5")],
    "optional_bool": [(1, TypeError, "None or a bool, got 1"), ("x", TypeError, "None or a bool")],
    "bool": [(1, TypeError, "a bool, got 1")],
    "seed": [(-1, ValueError, ">= 0, got -1"), (2.5, TypeError, "an integer, got 2.5")],
    "sy_order": [(4, ValueError, r"one of \[1, 3, 5, 7\], got 4"),
                 (True, ValueError, r"one of \[1, 3, 5, 7\], got True"),
                 (3.0, ValueError, r"one of \[1, 3, 5, 7\], got 3.0")],
}

POT = P.Harmonic()


def _params() -> list[torch.Tensor]:
    return [torch.zeros(3, requires_grad=True)]


def _two_groups() -> list[dict]:
    return [{"params": [torch.zeros(3, requires_grad=True)]},
            {"params": [torch.zeros(2, requires_grad=True)]}]


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


# (label, factory(**kw), group suffix for hyperparameters, {parameter: kind})
SYSTEMS = [
    ("Hamiltonian", lambda **kw: S.Hamiltonian(POT, **kw), {"mass": "positive_array"}),
    ("Langevin", lambda **kw: S.Langevin(POT, **kw),
     {"gamma": "nonnegative", "temperature": "nonnegative", "mass": "positive_array"}),
    ("OverdampedLangevin", lambda **kw: S.OverdampedLangevin(POT, **kw),
     {"gamma": "positive", "temperature": "nonnegative"}),
    ("AdaptiveLangevin", lambda **kw: S.AdaptiveLangevin(POT, **kw),
     {"temperature": "positive", "sigma_a": "nonnegative", "eps": "positive", "xi0": "real",
      "mass": "positive_array"}),
    ("NoseHoover", lambda **kw: S.NoseHoover(POT, **kw),
     {"temperature": "positive", "tau": "positive", "thermostat_mass": "positive",
      "xi0": "real", "mass": "positive_array"}),
    ("NoseHooverChain", lambda **kw: S.NoseHooverChain(POT, **kw),
     {"temperature": "positive", "tau": "positive", "chain_length": "int>=1",
      "n_substeps": "int>=1", "sy_order": "sy_order", "mass": "positive_array"}),
    ("BornInfeld", lambda **kw: S.BornInfeld(POT, **kw),
     {"v0": "real", "delta_energy": "nonnegative", "t0": "int>=1", "t1": "int>=1",
      "n_bounces": "int>=0", "eps1": "nonnegative", "eps2": "nonnegative"}),
    ("ECDSep", lambda **kw: S.ECDSep(POT, **kw),
     {"F0": "real", "eta": "at_least_one", "s": "nonnegative", "nu": "nonnegative",
      "delta_energy": "nonnegative", "eps1": "nonnegative", "eps2": "nonnegative"}),
    ("PortHamiltonian", lambda **kw: S.PortHamiltonian(POT, **kw),
     {"gamma": "nonnegative", "mass": "positive_array"}),
]
POTENTIALS = [
    ("Harmonic", P.Harmonic, {"omega": "positive_array", "dim": "int>=1"}),
    ("DoubleWell", P.DoubleWell, {"dim": "int>=1"}),
    ("Ackley", P.Ackley, {"dim": "int>=1", "a": "positive", "b": "positive", "c": "positive"}),
    ("Rastrigin", P.Rastrigin, {"dim": "int>=1", "A": "positive"}),
    ("Rosenbrock", P.Rosenbrock, {"dim": "int>=1", "a": "positive", "b": "positive"}),
    ("Zakharov", P.Zakharov, {"dim": "int>=1"}),
    ("MultiBasin", P.MultiBasin,
     {"dim": "int>=1", "a1": "positive", "a2": "positive", "w1": "positive", "w2": "positive",
      "coupling": "nonnegative", "offset": "real"}),
    ("Custom", lambda **kw: P.Custom(**({"dim": 2, "value": _sum} | kw)), {"dim": "int>=1"}),
]
OPTIMIZERS = [
    ("Langevin", lambda **kw: O.Langevin(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "gamma": "nonnegative", "temperature": "nonnegative",
      "mass": "positive"}),
    ("OverdampedLangevin", lambda **kw: O.OverdampedLangevin(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "temperature": "nonnegative"}),
    ("AdaptiveLangevin", lambda **kw: O.AdaptiveLangevin(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "temperature": "positive", "sigma_a": "nonnegative", "eps": "positive",
      "xi0": "real", "mass": "positive"}),
    ("NoseHoover", lambda **kw: O.NoseHoover(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "temperature": "positive", "tau": "positive",
      "thermostat_mass": "positive", "chain_length": "int>=1", "xi0": "real",
      "n_substeps": "int>=1", "sy_order": "sy_order", "mass": "positive"}),
    ("AdLaLa", lambda **kw: O.AdLaLa(_two_groups(), **kw),
     {"lr": "nonnegative", "gamma": "nonnegative", "temperature": "positive",
      "sigma_a": "nonnegative", "eps": "positive", "xi0": "real"}),
    ("LOL", lambda **kw: O.LOL(_two_groups(), **kw),
     {"lr": "nonnegative", "gamma": "nonnegative", "temperature": "nonnegative"}),
    ("Partitioned", lambda **kw: O.Partitioned(
        [{"params": _params(), "dynamics": "langevin"}], **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "gamma": "nonnegative", "temperature": "nonnegative",
      "mass": "positive"}),
    ("BBI", lambda **kw: O.BBI(_params(), **({"lr": 0.1} | kw)), {"lr": "nonnegative"}),
    ("ECDSep", lambda **kw: O.ECDSep(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "weight_decay": "nonnegative"}),
    ("HeavyBall", lambda **kw: O.HeavyBall(_params(), **({"lr": 0.1} | kw)),
     {"lr": "nonnegative", "gamma": "nonnegative"}),
    ("DDPNOpt", lambda **kw: O.DDPNOpt(_net(), **({"base": _ddp_base(kw)} | kw)),
     {"lr": "nonnegative", "weight_decay": "nonnegative", "momentum": "nonnegative",
      "dampening": "nonnegative", "alpha": "nonnegative", "eps": "nonnegative",
      "damping": "positive", "ekfac_decay": "unit_interval_open", "update_freq": "int>=1",
      "vxx_reg": "nonnegative"}),
]
#: Constructor-level optimizer arguments (not param-group keys: no group in the message).
OPTIMIZER_FLAGS = {
    "Langevin": {"seed": "seed", "foreach": "optional_bool", "fused": "optional_bool"},
    "OverdampedLangevin": {"seed": "seed", "foreach": "optional_bool", "fused": "optional_bool"},
    "AdaptiveLangevin": {"seed": "seed", "fused": "optional_bool"},
    "NoseHoover": {"seed": "seed", "fused": "optional_bool"},
    "BBI": {"seed": "seed", "fused": "optional_bool", "foreach": "optional_bool",
            "v0": "real", "delta_energy": "nonnegative", "t0": "int>=1", "t1": "int>=1",
            "n_bounces": "int>=0", "eps1": "nonnegative", "eps2": "nonnegative"},
    "ECDSep": {"seed": "seed", "foreach": "optional_bool", "F0": "real", "eta": "at_least_one",
               "nu": "nonnegative", "s": "nonnegative", "delta_energy": "nonnegative",
               "eps1": "nonnegative", "eps2": "nonnegative"},
    "HeavyBall": {"seed": "seed", "fused": "optional_bool", "foreach": "optional_bool"},
    "DDPNOpt": {"seed": "seed"},
}
EVENTS = [
    ("LossBelow", lambda **kw: E.LossBelow(**({"fraction": 0.5} | kw)),
     {"fraction": "positive", "once": "bool"}),
    ("RelativeReduction", lambda **kw: E.RelativeReduction(**({"fraction": 0.5} | kw)),
     {"fraction": "unit_interval_open", "once": "bool"}),
    ("Plateau", lambda **kw: E.Plateau(**({"k": 3} | kw)), {"k": "int>=1", "once": "bool"}),
    ("Threshold", lambda **kw: E.Threshold(**({"value": 1.0} | kw)),
     {"value": "real", "once": "bool"}),
    ("EnergyBelow", lambda **kw: E.EnergyBelow(**({"value": 1.0} | kw)), {"value": "real"}),
    ("EnergyAbove", lambda **kw: E.EnergyAbove(**({"value": 1.0} | kw)), {"value": "real"}),
    ("AtStep", lambda **kw: E.AtStep(**({"n": 3} | kw)), {"n": "int>=0"}),
    ("SetFriction", lambda **kw: E.SetFriction(**({"gamma": 1.0} | kw)),
     {"gamma": "nonnegative"}),
]


def _ddp_base(kw):
    """A DDPNOpt base that reads the hyperparameter under test (groups hold only their base's
    keys; a key of another base is refused, tested in test_ddpnopt.py)."""
    from dynopt.optim.ddpnopt import BASE_HYPERPARAMETERS

    return next((b for b, keys in BASE_HYPERPARAMETERS.items() if set(kw) <= set(keys) | {
        "lr", "weight_decay", "vxx_reg"}), "sgd")


def _sum(q):
    return q.sum(-1)


def _cases():
    for group, table, suffix in (("systems", SYSTEMS, ""), ("potentials", POTENTIALS, ""),
                                 ("optim", OPTIMIZERS, " (param group "),
                                 ("events", EVENTS, "")):
        for label, factory, params in table:
            for name, kind in params.items():
                for value, exc, tail in KINDS[kind]:
                    yield pytest.param(factory, name, value, exc, tail, suffix,
                                       id=f"{group}.{label}.{name}={value!r}")
    for label, factory, _ in OPTIMIZERS:
        for name, kind in OPTIMIZER_FLAGS.get(label, {}).items():
            for value, exc, tail in KINDS[kind]:
                yield pytest.param(factory, name, value, exc, tail, "",
                                   id=f"optim.{label}.{name}={value!r}")


@pytest.mark.parametrize(("factory", "name", "value", "exc", "tail", "suffix"), list(_cases()))
def test_bad_value_is_refused_naming_parameter_and_value(factory, name, value, exc, tail,
                                                         suffix):
    with pytest.raises(exc) as info:
        factory(**{name: value})
    message = str(info.value)
    assert re.search(rf"(^|\W){re.escape(name)} must be {tail}", message), message
    if suffix:  # group hyperparameters say which group (0, or 1 for AdLaLa/LOL's gamma)
        assert re.search(r" \(param group [01]\)$", message), message


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_nose_hoover_chain_tau_is_positive(bad):
    """The issue's example: NoseHooverChain(tau=0) and tau=-1 must not pass silently."""
    with pytest.raises(ValueError, match=f"tau must be > 0, got {bad}"):
        S.NoseHooverChain(POT, tau=bad)


def test_optimizer_error_names_the_param_group_it_came_from():
    groups = _two_groups()
    groups[1]["mass"] = 0.0
    with pytest.raises(ValueError, match=r"^mass must be > 0, got 0.0 \(param group 1\)$"):
        O.Langevin(groups, lr=0.1)
    groups = _two_groups()
    groups[1]["lr"] = -2.0
    with pytest.raises(ValueError, match=r"^lr must be >= 0, got -2.0 \(param group 1\)$"):
        O.HeavyBall(groups, lr=0.1)


@pytest.mark.parametrize(
    ("factory", "exc", "message"),
    [
        (lambda: O.Langevin(_params(), lr=0.1, events=3), TypeError, None),
        (lambda: O.HeavyBall(_params(), lr=0.1, events=3), TypeError,
         "events must be a dynopt.events trigger or a list of them, got 3"),
        (lambda: O.BBI(_params(), lr=0.1, events=math.pi), TypeError,
         "events must be a dynopt.events trigger or a list of them, got 3.14"),
        (lambda: O.ECDSep(_params(), lr=0.1, events=["x"]), TypeError,
         r"events\[0\] must be a dynopt.events trigger .*got 'x'"),
        (lambda: I.Splitting("BXB"), ValueError, r"scheme 'BXB' contains unknown letter"),
        (lambda: I.Splitting(3), TypeError, "scheme must be a string of letters, got 3"),
        (lambda: I.Splitting("BAB", [0.5, 0.5]), ValueError,
         "fractions has 2 entries but scheme 'BAB' has 3"),
        (lambda: I.Splitting("BAB", [0.5, 1.0, NAN]), ValueError,
         r"fractions\[2\] must be finite, got nan"),
        (lambda: P.Custom(2, value=3), TypeError, "value must be callable, got 3"),
        (lambda: P.Custom(2), ValueError, "needs at least one of value= or numba_value="),
    ],
)
def test_other_arguments_are_refused_by_name(factory, exc, message):
    with pytest.raises(exc, match=message):
        factory()
