"""Validation of a checkpoint before :meth:`DynamicsOptimizer.load_state_dict` changes anything.

:func:`validate` reads a ``state_dict`` and either raises (``ValueError`` or ``TypeError`` naming
the offending entry) or returns what ``load_state_dict`` needs, already checked: the param groups
(with schedule placeholders resolved), the optimizer-level state and ready-made generators. Only
then does ``load_state_dict`` mutate the optimizer, so a rejected checkpoint leaves it exactly as
it was. What is checked:

* the structure: ``state``, ``param_groups`` and the ``"dynopt"`` entry (a plain
  ``torch.optim`` checkpoint has none: it would silently drop the RNG state and step counter);
* the optimizer class recorded in ``"dynopt"`` (a Langevin checkpoint is not an
  AdaptiveLangevin one) and, per group, the ``dynamics``;
* every hyperparameter, with the optimizer's own group validation;
* seed, step counters and generator states (and, in :class:`~dynopt.optim.Partitioned`, the
  noise kind the run was drawn with). CUDA generator states follow the parameters: when the
  checkpoint's CUDA keys and the parameters' CUDA devices differ only by index, one to one (a
  ``"cuda:0"`` checkpoint loaded by a DDP rank whose parameters are on ``cuda:1``), they are
  restored on the parameters' devices (:func:`cuda_key_map`). A state for a device this machine
  lacks (a GPU checkpoint on a CPU-only machine) cannot be restored: it is dropped with one
  ``RuntimeWarning`` naming its key, and the rest loads;
* every per-parameter state entry against its parameter (:class:`Key`): presence of the required
  buffers, shape, floating dtype and finite values (tensors are moved to the parameter's device
  as torch does);
* the optimizer-level state (thermostat variables, energies) through the subclass hook
  ``_validate_global_state``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["PRIOR_STATE", "Key", "check_scalar_tensor", "check_vector", "cuda_key_map",
           "validate"]

#: Placeholder stored in ``state_dict()`` for a hyperparameter given as a schedule callable.
SCHEDULE = "<schedule>"
#: Prefix of the entry of a scheme object that no string names (a splitting with fractions).
INTEGRATOR = "<integrator>"


def scheme_entry(integrator: Any) -> str:
    """A scheme object as a checkpoint entry: the string that builds the same scheme (its name
    or letters), else ``"<integrator>"`` and its letters with fractions, which a load matches
    against the optimizer's own scheme object."""
    from ..integrators import resolve

    letters = integrator.letters()
    try:
        if resolve(integrator.name).letters() == letters:
            return str(integrator.name)
    except (ValueError, TypeError):
        pass
    return INTEGRATOR + repr([(str(c), float(f)) for c, f in letters])


def _same_integrator(key: str, entry: str, current: Any) -> Any:
    """The optimizer's own scheme object, if its letters are the checkpoint's."""
    from ..integrators.base import AbstractIntegrator

    if not (isinstance(current, AbstractIntegrator)
            and scheme_entry(current) == entry):
        raise ValueError(f"the checkpoint's {key} was the scheme object {entry[len(INTEGRATOR):]}"
                         f" (letters, fractions); construct the optimizer with the same scheme "
                         f"before loading (it has {current!r})")
    return current
#: Seeds are 64-bit (Philox keys and torch generator seeds).
_SEED_LIMIT = 1 << 64
#: Step counters enter the fused path's 64-bit Philox counter as 16·step + slot.
_COUNT_LIMIT = 1 << 60


@dataclass(frozen=True)
class Key:
    """What a per-parameter state entry may hold under one key.

    Attributes:
        kind: ``"param"`` (a floating tensor shaped like the parameter), ``"count"`` (an integer
            ≥ 0, or a 0-d/1-element tensor holding one) or ``"vector"`` (a floating 1-D tensor of
            ``size`` finite elements).
        required: Whether a non-empty entry must hold this key.
        size: The length of a ``"vector"``.
    """

    kind: str
    required: bool = False
    size: int = 0


#: Per-parameter state of :mod:`dynopt.optim.prior` (the tether's θ₀), allowed for every optimizer.
PRIOR_STATE = {"anchor": Key("param")}


def _fail(where: str, message: str) -> ValueError:
    return ValueError(f"cannot load the checkpoint: {where} {message}; the optimizer was left "
                      "unchanged")


def _count(value: Any, where: str) -> int:
    if isinstance(value, Tensor):
        if value.numel() != 1 or (value.is_floating_point() and not bool(
                torch.isfinite(value).all())):
            raise _fail(where, f"must be a non-negative integer, got a tensor {value!r}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
            isinstance(value, float) and (not math.isfinite(value) or value != int(value))):
        raise _fail(where, f"must be a non-negative integer, got {value!r}")
    if int(value) < 0:
        raise _fail(where, f"must be >= 0, got {value!r}")
    if int(value) >= _COUNT_LIMIT:
        raise _fail(where, f"must be < 2**60 (the noise counter is 16·step + slot in 64 bits), "
                    f"got {value!r}")
    return int(value)


def check_vector(value: Any, where: str, size: int | None, *, finite: bool = True) -> None:
    """A floating 1-D tensor (of ``size`` elements if given) with finite values, or raise."""
    if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() != 1 or (
            size is not None and value.numel() != size):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        want = f"({size},)" if size is not None else "1-D"
        raise _fail(where, f"must be a floating {want} tensor, got {shape}")
    if finite and not bool(torch.isfinite(value).all()):
        raise _fail(where, "holds non-finite values")


def check_scalar_tensor(value: Any, where: str) -> None:
    """A finite floating 1-element tensor (or a finite real number), or raise."""
    if isinstance(value, Tensor):
        check_vector(value.reshape(-1), where, 1)
    elif isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
            float(value)):
        raise _fail(where, f"must be a finite number, got {value!r}")


def _check_entry(entry: Any, p: Tensor, schema: dict[str, Key], where: str) -> None:
    if not isinstance(entry, Mapping):
        raise _fail(where, f"must be a dict, got {type(entry).__name__}")
    if not entry:
        return
    for key in entry:
        if key not in schema:
            raise _fail(f"{where}[{key!r}]", f"is not a state of this optimizer (expected "
                        f"keys: {sorted(schema)})")
    for key, spec in schema.items():
        if key not in entry:
            if spec.required:
                raise _fail(where, f"lacks {key!r} (present: {sorted(entry)}); a partial state "
                            "would feed the update mismatched buffers")
            continue
        value, at = entry[key], f"{where}[{key!r}]"
        if spec.kind == "count":
            _count(value, at)
        elif spec.kind == "vector":
            check_vector(value, at, spec.size)
        else:
            if not isinstance(value, Tensor) or not value.is_floating_point() or value.is_complex():
                raise _fail(at, f"must be a floating tensor, got {type(value).__name__}"
                            + (f" of dtype {value.dtype}" if isinstance(value, Tensor) else ""))
            if value.shape != p.shape:
                raise _fail(at, f"has shape {tuple(value.shape)} but its parameter has shape "
                            f"{tuple(p.shape)}")
            if value.is_sparse or value.layout != torch.strided:
                raise _fail(at, "must be a dense (strided) tensor")
            if not bool(torch.isfinite(value).all()):
                raise _fail(at, "holds non-finite values")


def cuda_key_map(saved_keys: list[str], devices: set[torch.device]) -> dict[str, str]:
    """Where the checkpoint's CUDA generator states go: ``{saved key: key to restore under}``.

    When the saved CUDA keys and the CUDA devices of the parameters (``devices``) are different
    sets of the same size, saved key i (in index order) goes to parameter device i; otherwise
    every key stays as it is. This is what a resume under ``DistributedDataParallel`` needs: rank
    r's parameters are on ``cuda:r``, the checkpoint (rank 0's) holds ``"cuda:0"``, and every
    rank must continue the same stream (ranks draw identical noise). Pure: no device is touched.

    Args:
        saved_keys: The checkpoint's generator keys (any device type; non-CUDA keys are ignored).
        devices: The devices the optimizer's parameters are on.
    """
    saved = [torch.device(k) for k in saved_keys]
    saved = [d for d in saved if d.type == "cuda"]
    have = sorted({d for d in devices if d.type == "cuda"}, key=lambda d: d.index or 0)
    if (not saved or len(saved) != len(have) or set(saved) == set(have)
            or any(d.index is None for d in [*saved, *have])):
        return {}
    saved.sort(key=lambda d: d.index)
    return {str(s): str(h) for s, h in zip(saved, have, strict=True)}


def _restorable(dev: torch.device) -> bool:
    """Whether a generator can be created on ``dev`` on this machine (its device type is
    available and, where counted, the index exists)."""
    if dev.type == "cpu":
        return True
    module = getattr(torch, dev.type, None)
    available = getattr(module, "is_available", None)
    if available is None or not available():
        return False
    count = getattr(module, "device_count", None)
    return dev.index is None or count is None or dev.index < count()


def _param_devices(opt: Any) -> set[torch.device]:
    return {p.device for g in opt.param_groups for p in g["params"]}


def _generators(saved: Any, opt: Any) -> tuple[dict[str, torch.Generator], list[str]]:
    """The checkpoint's generators, ready to use, and the keys whose device is not here.

    CUDA states are restored on the parameters' CUDA devices when the two differ only by index
    (:func:`cuda_key_map`); a state for a device this machine lacks (a GPU checkpoint loaded on
    a CPU-only machine) cannot be restored: it is dropped and its key returned.
    """
    if not isinstance(saved, Mapping):
        raise _fail("dynopt['generators']", f"must be a dict, got {type(saved).__name__}")
    states = {}
    for key, st in saved.items():
        where = f"dynopt['generators'][{key!r}]"
        if not isinstance(key, str):
            raise _fail(where, "must be keyed by a device string")
        if not isinstance(st, Tensor) or st.dtype != torch.uint8:
            raise _fail(where, "must be a uint8 tensor (torch.Generator.get_state())")
        try:
            torch.device(key)
        except (RuntimeError, ValueError, TypeError) as err:
            raise _fail(where, f"is not keyed by a device ({err})") from None
        states[key] = st
    remap = cuda_key_map(list(states), _param_devices(opt))
    out, dropped = {}, []
    for key, st in states.items():
        target = remap.get(key, key)
        if not _restorable(torch.device(target)):
            dropped.append(key)
            continue
        try:
            gen = torch.Generator(device=target)
            gen.set_state(st.cpu())
        except (RuntimeError, ValueError, TypeError) as err:
            where = f"dynopt['generators'][{key!r}]"
            onto = f" (restored on {target!r}, the parameters' device)" if target != key else ""
            raise _fail(where, f"is not a valid generator state for {key!r}{onto} "
                        f"({err})") from None
        out[target] = gen
    return out, dropped


def validate(opt: Any, state_dict: Any) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                   dict[str, torch.Generator], int]:
    """Check ``state_dict`` against ``opt`` (see the module docstring).

    Returns:
        ``(param_groups, global_state, generators, seed)``: the groups to hand to
        ``torch.optim.Optimizer.load_state_dict`` (schedules resolved) and the checked
        optimizer-level state.

    Raises:
        ValueError, TypeError: Naming the offending entry; nothing has been changed.
    """
    cls = type(opt).__name__
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise _fail("the state_dict", f"has no {key!r} entry")
    extra = state_dict.get("dynopt")
    if extra is None:
        groups = state_dict["param_groups"]
        named = isinstance(groups, list | tuple) and any(
            isinstance(pid, str) for g in groups if isinstance(g, Mapping)
            for pid in (g.get("params") or ()))
        origin = ("its param groups list parameters by name, as "
                  "torch.distributed.checkpoint's get_state_dict/get_optimizer_state_dict do: "
                  "they keep only an optimizer's 'state' and 'param_groups' and drop dynopt's "
                  "entry" if named else
                  "it was not saved by a dynopt optimizer (a plain torch.optim checkpoint, or "
                  "the entry was removed)")
        save = (f"Checkpoint {cls}.state_dict() itself (torch.save; it loads with "
                "weights_only=True)" if named else f"Save with {cls}.state_dict()")
        raise ValueError(
            f"cannot load the checkpoint: it has no 'dynopt' entry: {origin}. Loading it would "
            "silently drop the random-number state, step counter and thermostat variables. "
            f"{save}, or start a fresh {cls} instead of loading; the optimizer was left "
            "unchanged")
    if not isinstance(extra, Mapping):
        raise _fail("dynopt", f"must be a dict, got {type(extra).__name__}")
    saved_cls = extra.get("optimizer")
    if saved_cls is not None and saved_cls != cls:
        raise _fail("dynopt['optimizer']", f"is {saved_cls!r}: a {saved_cls} checkpoint cannot be "
                    f"loaded into a {cls}")
    for key in ("seed", "global", "generators"):
        if key not in extra:
            raise _fail("dynopt", f"lacks {key!r}")
    seed = extra["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not (
            0 <= int(seed) < _SEED_LIMIT):
        raise _fail("dynopt['seed']", f"must be an integer in [0, 2**64), got {seed!r}")
    glob = extra["global"]
    if not isinstance(glob, Mapping):
        raise _fail("dynopt['global']", f"must be a dict, got {type(glob).__name__}")
    glob = dict(glob)
    for key in ("step", "skipped"):
        if key not in glob:
            raise _fail("dynopt['global']", f"lacks {key!r}")
        glob[key] = _count(glob[key], f"dynopt['global'][{key!r}]")  # a tensor: its integer
    generators, dropped = _generators(extra["generators"], opt)

    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, list | tuple) or len(saved_groups) != len(opt.param_groups):
        n = len(saved_groups) if isinstance(saved_groups, list | tuple) else saved_groups
        raise _fail("param_groups", f"has {n} groups, this optimizer has "
                    f"{len(opt.param_groups)}")
    groups: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    owner: dict[Any, tuple[int, dict[str, Any], Tensor]] = {}
    for gi, (saved, current) in enumerate(zip(saved_groups, opt.param_groups, strict=True)):
        if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), list | tuple):
            raise _fail(f"param group {gi}", "must be a dict with a 'params' list")
        saved = opt._saved_group(dict(saved))
        if len(saved["params"]) != len(current["params"]):
            raise _fail(f"param group {gi}", f"has {len(saved['params'])} parameters, this "
                        f"optimizer's has {len(current['params'])}")
        # keys added after the checkpoint was written take the optimizer's neutral defaults
        # (as __setstate__ does); a hyperparameter of the group's dynamics that is missing is an
        # error; keys that are not dynopt's (a scheduler's initial_lr, SWALR's swa_lr, added
        # after the checkpoint was taken, e.g. by Lightning's lr_find) keep their current value
        absent = [k for k in current if k != "params" and k not in saved
                  and k not in opt.defaults]
        dynamics_keys = _dynamics_hypers(current)
        missing = sorted(k for k in absent if k in dynamics_keys)
        if missing:
            raise _fail(f"param group {gi}", f"lacks the hyperparameters {missing}")
        if "dynamics" in current and saved.get("dynamics") != current["dynamics"]:
            raise _fail(f"param group {gi}", f"runs dynamics={saved.get('dynamics')!r}, this "
                        f"optimizer's runs {current['dynamics']!r}")
        group = {**{k: opt.defaults[k] for k in current if k not in saved and k in opt.defaults},
                 **{k: current[k] for k in absent}, **saved}
        for k, v in saved.items():
            if isinstance(v, str) and v == SCHEDULE:
                if not callable(current.get(k)):
                    raise ValueError(f"the checkpoint's {k} was a schedule; construct the "
                                     f"optimizer with the same schedule before loading")
                group[k] = current[k]
            elif isinstance(v, str) and v.startswith(INTEGRATOR):
                group[k] = _same_integrator(k, v, current.get(k))
        probe = {**group, "params": current["params"]}
        try:
            opt._validate_group(probe, gi)
        except (ValueError, TypeError) as err:
            raise type(err)(f"cannot load the checkpoint: {err}; the optimizer was left "
                            "unchanged") from None
        groups.append(group)
        probes.append(probe)
        for pid, p in zip(saved["params"], current["params"], strict=True):
            owner[pid] = (gi, probe, p)

    state = state_dict["state"]
    if not isinstance(state, Mapping):
        raise _fail("state", f"must be a dict, got {type(state).__name__}")
    for pid, entry in state.items():
        if not isinstance(pid, int | str) or pid not in owner:
            raise _fail(f"state[{pid!r}]", "belongs to no parameter of the param groups")
        gi, probe, p = owner[pid]
        schema = opt._state_schema(probe)
        if schema is not None:
            _check_entry(entry, p, schema, f"state[{pid!r}] (param group {gi})")
    opt._validate_global_state(glob, probes)
    if dropped:  # warned only once the checkpoint is known to load
        warnings.warn(
            f"{cls}.load_state_dict: the checkpoint's generator states {dropped} were not "
            "restored: this machine has no such device. The noise the run draws on its "
            "parameters' devices comes from generators seeded from the optimizer's seed (or "
            "restored, if the checkpoint holds them), so it does not continue the saved run's "
            "noise bit for bit (moving a run to another device type never does)",
            RuntimeWarning, stacklevel=3)
    return groups, dict(glob), generators, int(seed)


def _dynamics_hypers(group: Mapping[str, Any]) -> frozenset[str]:
    """The hyperparameters of a Partitioned group's ``dynamics`` (none for other optimizers,
    whose hyperparameters are all in ``defaults``)."""
    name = group.get("dynamics")
    if not isinstance(name, str):
        return frozenset()
    from .dynamics import REGISTRY

    entry = REGISTRY.get(name)
    return frozenset(entry.hypers) if entry is not None else frozenset()
