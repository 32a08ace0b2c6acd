"""Every refusal of ``load_state_dict`` that no other test reached (found by a line-coverage run).

Each case builds an optimizer from :mod:`optim_zoo`, trains a source copy a few steps, damages one
entry of its ``state_dict()`` and loads it into a second copy. The load must raise an error that
names the damaged entry, and leave the optimizer and its parameters bit for bit as they were
("bad input gets a clear error, and nothing is lost"). The one-line bug each case catches is the
check it names going missing: the damaged value then reaches the update (a NaN or a wrongly
shaped buffer in θ several steps later), or the load fails half-way with an unrelated error after
part of the state was replaced.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from optim_zoo import FACTORIES, data, model, train
from state_equal import same

from dynopt.events import LossBelow, SetFriction


def _trained(name: str, steps: int, **kw: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    m = model()
    opt = FACTORIES[name](m, **kw)
    train(m, opt, data(steps), name)
    return m, opt


def _first_state(sd: dict[str, Any]) -> dict[str, Any]:
    return sd["state"][min(sd["state"])]


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], Any]:
    def corrupt(sd: dict[str, Any]) -> Any:
        node = sd
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return sd
    return corrupt


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], Any]:
    def corrupt(sd: dict[str, Any]) -> Any:
        node = sd
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return sd
    return corrupt


def _first_state_set(key: str, make: Callable[[torch.Tensor], Any]
                     ) -> Callable[[dict[str, Any]], Any]:
    def corrupt(sd: dict[str, Any]) -> Any:
        st = _first_state(sd)
        st[key] = make(st[key])
        return sd
    return corrupt


def _drop_last_param(sd: dict[str, Any]) -> Any:
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]
    return sd


def _event_log(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def corrupt(sd: dict[str, Any]) -> Any:
        sd["dynopt"]["global"]["events"]["log"][field] = value
        return sd
    return corrupt


def _bbi_without(key: str) -> Callable[[dict[str, Any]], Any]:
    def corrupt(sd: dict[str, Any]) -> Any:
        del sd["dynopt"]["global"]["bbi"][key]
        return sd
    return corrupt


G = ("dynopt", "global")
#: (optimizer of optim_zoo, damage, error type, message the error must carry)
CASES: dict[str, tuple[str, Callable[[dict[str, Any]], Any], type, str]] = {
    "not a dict": ("Langevin", lambda sd: list(sd.items()), TypeError,
                   r"state_dict must be a dict, got list"),
    "no 'state' entry": ("Langevin", _delete(("state",)), ValueError,
                         r"the state_dict has no 'state' entry"),
    "dynopt entry not a dict": ("Langevin", _set(("dynopt",), 3), ValueError,
                                r"dynopt must be a dict, got int"),
    "global not a dict": ("Langevin", _set(G, [1, 2]), ValueError,
                          r"dynopt\['global'\] must be a dict, got list"),
    "global lacks 'skipped'": ("Langevin", _delete((*G, "skipped")), ValueError,
                               r"dynopt\['global'\] lacks 'skipped'"),
    "step 2.5": ("Langevin", _set((*G, "step"), 2.5), ValueError,
                 r"dynopt\['global'\]\['step'\] must be a non-negative integer, got 2.5"),
    "step a NaN tensor": ("Langevin", _set((*G, "step"), torch.tensor(float("nan"))), ValueError,
                          r"dynopt\['global'\]\['step'\] must be a non-negative integer"),
    "generator keyed by an int": ("Langevin", _set(("dynopt", "generators"),
                                                   {0: torch.zeros(5056, dtype=torch.uint8)}),
                                  ValueError, r"\['generators'\]\[0\] must be keyed by a device "
                                  "string"),
    "generator state float": ("Langevin", _set(("dynopt", "generators"),
                                               {"cpu": torch.zeros(5056)}),
                              ValueError, r"\['generators'\]\['cpu'\] must be a uint8 tensor"),
    "generator keyed 'gpu7'": ("Langevin", _set(("dynopt", "generators"),
                                                {"gpu7": torch.zeros(5056, dtype=torch.uint8)}),
                               ValueError, r"\['generators'\]\['gpu7'\] is not keyed by a "
                               "device"),
    "param group not a dict": ("Langevin", _set(("param_groups", 0), [0, 1]), ValueError,
                               r"param group 0 must be a dict with a 'params' list"),
    "param group one parameter short": ("Langevin", _drop_last_param, ValueError,
                                        r"param group 0 has 3 parameters, this optimizer's has 4"),
    "sparse momentum": ("Langevin", _first_state_set("momentum_buffer", lambda t: t.to_sparse()),
                        ValueError, r"\['momentum_buffer'\] must be a dense \(strided\) tensor"),
    "thermostat vector of the wrong size": (
        "AdaptiveLangevin", _first_state_set("extras", lambda t: torch.zeros(t.numel() + 1)),
        ValueError, r"\['extras'\] must be a floating \(1,\) tensor, got \(2,\)"),
    "thermostat vector NaN": (
        "AdaptiveLangevin", _first_state_set("extras", lambda t: torch.full_like(t, math.nan)),
        ValueError, r"\['extras'\] holds non-finite values"),
    "thermostat vector integer": (
        "AdaptiveLangevin", _first_state_set("extras", lambda t: t.to(torch.int64)),
        ValueError, r"\['extras'\] must be a floating \(1,\) tensor"),
    "BBI |p|^2 a string": ("BBI", _set((*G, "ps2"), "0.5"), ValueError,
                           r"dynopt\['global'\]\['ps2'\] must be a finite number, got '0.5'"),
    "BBI |p|^2 inf": ("BBI", _set((*G, "ps2"), math.inf), ValueError,
                      r"dynopt\['global'\]\['ps2'\] must be a finite number, got inf"),
    "BBI |p|^2 negative": ("BBI", _set((*G, "ps2"), -1.0), ValueError,
                           r"dynopt\['global'\]\['ps2'\] must be non-negative"),
    "BBI state lacks a key": ("BBI", _bbi_without("kick_rate"), ValueError,
                              r"dynopt\['global'\]\['bbi'\] must hold exactly"),
    "BBI state NaN": ("BBI", _set((*G, "bbi", "kick_rate"), torch.tensor([math.nan])),
                      ValueError, r"\['bbi'\]\['kick_rate'\] must be a 1-element floating "
                      "tensor, not NaN"),
    "event state lacks 'log'": ("HeavyBall", _delete((*G, "events", "log")), ValueError,
                                r"\['events'\] must hold \['done', 'log', 'trig'\]"),
    "event 'done' a float": ("HeavyBall", _set((*G, "events", "done", 0), torch.zeros(1)),
                             ValueError, r"\['events'\]\['done'\]\[0\] must be a bool tensor"),
    "event log of ragged lists": ("HeavyBall", _event_log("step", [1, 2, 3]), ValueError,
                                  r"\['events'\]\['log'\] must hold lists step, chain, event, "
                                  "value of one length"),
    "event log naming event 5 of 1": ("HeavyBall", _event_log("event", [5]), ValueError,
                                      r"\['events'\]\['log'\]\['event'\] must hold event "
                                      r"indices in \[0, 1\)"),
    "thermostat extras not a dict": ("NoseHooverChain", _set((*G, "extras"), [1.0]), ValueError,
                                     r"dynopt\['global'\]\['extras'\] must be a dict"),
    "thermostat extras of no group": ("NoseHooverChain",
                                      _set((*G, "extras", "group7"), torch.zeros(6)), ValueError,
                                      r"\['extras'\]\['group7'\] belongs to no param group"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_checkpoint_is_refused_by_name_and_changes_nothing(case):
    name, damage, error, message = CASES[case]
    kw: dict[str, Any] = {}
    if name == "HeavyBall":  # an event that has fired: its log has one row
        kw["events"] = [LossBelow(10.0, then=SetFriction(0.4))]
    _, src = _trained(name, 3, **kw)
    sd = src.state_dict()
    if name == "HeavyBall":
        assert len(sd["dynopt"]["global"]["events"]["log"]["event"]) == 1
    bad = damage(copy.deepcopy(sd))
    m, opt = _trained(name, 2, **kw)
    before = copy.deepcopy(opt.state_dict())
    theta = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(error, match=message):
        opt.load_state_dict(bad)
    assert same(opt.state_dict(), before)
    assert all(torch.equal(a, p.detach()) for a, p in zip(theta, m.parameters(), strict=True))
    opt.load_state_dict(sd)  # the undamaged checkpoint still loads into the same optimizer
    assert same(opt.state_dict(), sd)


def test_a_step_count_saved_as_a_tensor_loads_as_that_integer():
    """``global['step']`` as a 0-d tensor (as torch.optim saves its own steps) is accepted and
    read as its integer, and the resumed run continues the same noise stream bit for bit.
    Catches: the tensor branch of the count check rejecting it, or keeping the tensor."""
    m_ref, _ = _trained("Langevin", 5)
    _, src = _trained("Langevin", 3)
    sd = copy.deepcopy(src.state_dict())
    sd["dynopt"]["global"]["step"] = torch.tensor(sd["dynopt"]["global"]["step"])
    m, opt = _trained("Langevin", 1)
    m.load_state_dict(_trained("Langevin", 3)[0].state_dict())
    opt.load_state_dict(sd)
    assert type(opt.global_state["step"]) is int and opt.global_state["step"] == 3
    train(m, opt, data(5)[3:], "Langevin")
    for a, b in zip(m.parameters(), m_ref.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_schedule_in_the_checkpoint_needs_a_schedule_in_the_optimizer():
    """A checkpoint saved with ``lr`` a schedule stores a marker, not a number; loading it into
    an optimizer with a plain lr must say so. Catches: the marker string reaching the update."""
    _, src = _trained("Langevin", 3, lr=lambda step: 0.1 / (1 + step))
    sd = src.state_dict()
    assert isinstance(sd["param_groups"][0]["lr"], str)
    _, opt = _trained("Langevin", 2)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match="the checkpoint's lr was a schedule; construct the "
                                         "optimizer with the same schedule"):
        opt.load_state_dict(sd)
    assert same(opt.state_dict(), before)
