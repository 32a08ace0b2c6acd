r"""Partitioned dynamics: every param group runs its own system, all from one gradient per step.

:class:`Partitioned` is the single implementation behind every Langevin-family optimizer of
dynopt (:class:`~dynopt.optim.Langevin`, :class:`~dynopt.optim.OverdampedLangevin`,
:class:`~dynopt.optim.AdaptiveLangevin`, :class:`~dynopt.optim.NoseHoover`,
:class:`~dynopt.optim.AdLaLa`, :class:`~dynopt.optim.LOL`). Each group names a ``dynamics`` and its
hyperparameters; :func:`dynopt.optim.dynamics.build` turns them into a system (with the loss as
the potential) and a splitting scheme, whose *optimizer form* (first-same-as-last rotation,
:meth:`~dynopt.integrators.base.AbstractIntegrator.optimizer_form`) is lowered with the current
step size every step and run by :mod:`dynopt.optim.executor`. Sub-flows on disjoint parameters
commute, so running the groups one after the other is the partitioned integrator of Leimkuhler,
Matthews & Vlaar (2019) (e.g. AdLaLa = ``[A C D E D C A]`` on layer 1, ``[A O A]`` on the others,
then one gradient and ``B_h`` on all).

Group keys (defaults in parentheses; every numeric one is validated, ``lr``, ``gamma`` and
``temperature`` may be schedules ``callable(step) -> value``):

| key | symbol | used by |
|---|---|---|
| ``dynamics`` | | ``"langevin"``, ``"overdamped"``, ``"adaptive-langevin"``, ``"nose-hoover"`` |
| ``lr`` | h | all (step size of the scheme; see each optimizer for the mapping) |
| ``temperature`` (1e-4) | τ = k_BT | all |
| ``gamma`` (0.1) | γ | langevin |
| ``sigma_a`` (0.01), ``eps`` (0.05), ``xi0`` (0.1) | σ_A, ε, ξ₀ | adaptive-langevin |
| ``tau`` (100·lr), ``thermostat_mass``, ``chain_length`` (1) | τ_NH, Q/N, M | nose-hoover |
| ``xi0`` (0) | ξ₀ | nose-hoover |
| ``overdamped_dt`` (``"lr"``) | dt = h or h²/2 | overdamped |
| ``mass`` (1) | M (scalar) | all with momenta |
| ``momentum`` (None) | c = e^{−γh}, replaces γ when set (``OneCycleLR``) | langevin |
| ``weight_decay`` (0), ``localization`` (0), ``nbeta`` (1) | λ, γ_loc, nβ (the prior) | all |
| ``scheme`` (per dynamics) | splitting string or integrator | all |
| ``scope`` (``"tensor"``) | scope of ξ: ``"tensor"``, ``"group"``, ``"model"`` | thermostats |
| ``foreach``, ``fused``, ``maximize``, ``differentiable`` | torch flags | all |

The prior keys make the potential U = nβL + λ|θ|²/2 + γ_loc|θ − θ₀|²/2
(:mod:`dynopt.optim.prior`).

Thermostat scope. ξ (and η, the chain) is one scalar per parameter tensor (``"tensor"``, the
authors' choice), per group, or shared by every ``scope="model"`` group (which must then have
identical dynamics and hyperparameters). N, the number of degrees of freedom in
ξ̇ = ε(pᵀM⁻¹p − Nτ), is the number of elements in the scope that take part in the step (tensors
without a gradient are skipped). Per-tensor variables live in ``state[p]["extras"]``, the others
in ``global_state["extras"]``; all are float64 and saved in ``state_dict()``. A tensor whose first
gradient comes after its shared ξ has started joins the scope's steady step from zero momentum,
so that ξ takes one update per step.

Initial state. Momenta start at zero (the authors' convention; the first step opens with the
half kick B_{h/2}), ξ at ξ₀, the LM noise memory with fresh normals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from .._validation import check_choice
from ..stepping import NOISES
from . import bound
from . import dynamics as dyn_registry
from ._paths import choose_path, device_of, same_device
from .base import FOREIGN_KEYS, DynamicsOptimizer, drop_unset_momentum
from .checkpoint import PRIOR_STATE, Key, check_vector
from .dynamics import Spec, build, checks, group_keys, validate_group
from .executor import Bucket, Context, Slot, Thermostats, draw_views, execute

__all__ = ["Partitioned"]

_LOW = (torch.bfloat16, torch.float16)
#: Group keys every dynamics accepts besides its own hyperparameters (torch's flags).
_TORCH_FLAGS = frozenset({"params", "foreach", "fused", "maximize", "differentiable"})
#: Keys whose per-tensor values are independent of the parameter dtype (kept on load).
_OWN_DTYPE = ("extras", "momentum_buffer", "noise_prev")


class Partitioned(DynamicsOptimizer):
    r"""Each param group runs its own dynamics (see the module docstring for the group keys).

    Example:
        >>> import torch
        >>> from dynopt.optim import Partitioned
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
        ...                             torch.nn.Linear(8, 1))
        >>> opt = Partitioned([
        ...     {"params": model[0].parameters(), "dynamics": "adaptive-langevin"},
        ...     {"params": model[2].parameters(), "dynamics": "langevin", "gamma": 1.0},
        ... ], lr=0.1, temperature=1e-4, seed=0)

    Args:
        params: Param groups; a group without ``"dynamics"`` gets ``dynamics``.
        lr: Step size h (see :mod:`dynopt.optim.dynamics` for each dynamics' mapping).
        dynamics: Default dynamics of groups that do not name one.
        scheme: Default scheme (None: each dynamics' own default).
        weight_decay, localization, nbeta: The prior (:mod:`dynopt.optim.prior`).
        **hyperparameters: Optimizer-wide defaults of any registered dynamics' hyperparameters
            (``temperature``, ``gamma``, ``sigma_a``, ``eps``, ``xi0``, ``tau``,
            ``thermostat_mass``, ``chain_length``, ``n_substeps``, ``sy_order``,
            ``overdamped_dt``, ``mass``, ``scope``, ``momentum``, or a new dynamics' keys; see
            :mod:`dynopt.optim.dynamics`). A group gets the declared default of each key its
            dynamics reads that neither it nor these set; an unknown keyword is a TypeError.
        seed: Seed of the optimizer's noise (shared by all DDP ranks; fresh if None).
        noise: ``"gaussian"`` (default), ``"gaussian-f64"`` or ``"discrete"`` (±√3-type
            three-point variable: cheaper, same moments up to order 3 and (almost) 5). The fused
            path computes ``"gaussian"`` normals with float32 arithmetic for every dtype and
            ``"gaussian-f64"`` with float64 arithmetic for float64 tensors (float32 tensors
            have only the float32 transform); the torch paths draw ``torch.randn`` for both.
        foreach: None (default path), True (foreach), False (single-tensor reference).
        fused: None (default), True (require the fused CPU path), False (never fuse: the
            single-tensor path on the CPU, foreach on CUDA; :func:`dynopt.optim._paths.choose_path`
            is the one rule of every optimizer).
        maximize: Maximize the objective (the gradient is negated).
        differentiable: Run the single-tensor path under autograd.
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"ignore"`` NaN/inf gradients.
    """

    _caches: ClassVar[dict[str, Callable[[], Any]]] = {
        "_spec_cache": dict, "_fused_runner": lambda: None, "_streams": lambda: None,
        "_layout_cache": dict}
    #: Set by single-dynamics subclasses: every group must run this dynamics.
    only_dynamics: ClassVar[str | None] = None

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | Callable[[int], float] = 0.25,
        *,
        dynamics: str | None = None,
        scheme: Any = None,
        weight_decay: float = 0.0,
        localization: float = 0.0,
        nbeta: float = 1.0,
        seed: int | None = None,
        noise: str = "gaussian",
        foreach: bool | None = None,
        fused: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
        **hyperparameters: Any,
    ) -> None:
        self.noise = check_choice("noise", noise, NOISES)
        self._spec_cache: dict[Any, Spec] = {}
        self._fused_runner: Any = None
        self._streams: dict[int, int] | None = None
        self._layout_cache: dict[Any, Tensor] = {}
        unknown = sorted(set(hyperparameters) - dyn_registry.known_keys())
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s) "
                            f"{unknown}; the registered dynamics read "
                            f"{sorted(dyn_registry.known_keys())}")
        defaults: dict[str, Any] = dict(
            lr=lr, dynamics=dynamics, scheme=scheme, weight_decay=weight_decay,
            localization=localization, nbeta=nbeta, foreach=foreach, fused=fused,
            maximize=maximize, differentiable=differentiable)
        # optimizer-wide defaults: the declared ones of every dynamics the groups run (so torch
        # schedulers find e.g. "momentum" when a group runs Langevin), never another's keys
        if isinstance(params, torch.Tensor):  # as torch.optim refuses it (and every other
            raise TypeError(  # dynopt optimizer): a tensor is not a list of its rows
                "params argument given to the optimizer should be an iterable of Tensors or "
                f"dicts, but got {torch.typename(params)}")
        params = list(params)
        running = [self.only_dynamics or dynamics] + [
            g.get("dynamics") for g in params if isinstance(g, dict)]
        for name in dict.fromkeys(running):
            if name in dyn_registry.REGISTRY:
                declared = dyn_registry.get(name).hypers
                defaults = {**{k: h.default for k, h in declared.items()}, **defaults}
        if self.only_dynamics is not None:
            used = group_keys(self.only_dynamics) | _TORCH_FLAGS
            defaults = {k: v for k, v in defaults.items() if k in used}
        defaults.update(hyperparameters)
        super().__init__(params, defaults, seed=seed, nonfinite=nonfinite)

    @property  # type: ignore[override]
    def schedulable(self) -> tuple[str, ...]:  # type: ignore[override]
        """``lr`` and every hyperparameter a registered dynamics declares schedulable."""
        dyns = ([dyn_registry.get(self.only_dynamics)] if self.only_dynamics is not None
                else list(dyn_registry.REGISTRY.values()))
        out = ["lr"]
        for d in dyns:
            out += [k for k, h in d.hypers.items() if h.schedulable and k not in out]
        return tuple(out)

    # --- groups ------------------------------------------------------------------------------
    #: Foreign keys set after construction are refused by the spec cache at the step, after
    #: build() (whose messages, e.g. for OneCycleLR's momentum, are the more specific).
    _checks_late_foreign_keys = True

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._streams = None
        super().add_param_group(param_group)

    def _validate_group(self, group: dict[str, Any], index: int) -> None:
        if group.get("dynamics") is None:
            raise ValueError(f"param group {index} has no 'dynamics'; choose one of "
                             f"{', '.join(map(repr, dyn_registry.names()))}")
        if self.only_dynamics is not None and group["dynamics"] != self.only_dynamics:
            raise ValueError(f"{type(self).__name__} runs dynamics={self.only_dynamics!r} only "
                             f"(param group {index} asks for {group['dynamics']!r}); use "
                             "dynopt.optim.Partitioned to mix dynamics")
        try:
            dyn = dyn_registry.get(group["dynamics"])
        except ValueError as err:
            raise ValueError(f"{err} (param group {index})") from None
        for key, h in dyn.hypers.items():  # this group's own defaults, from its declaration
            group.setdefault(key, h.default)
        super()._validate_group(group, index)
        try:
            validate_group(group, lambda name, fn: self._check_hyper(group, index, name, fn))
        except (ValueError, TypeError) as err:
            msg = str(err)
            raise type(err)(msg if "param group" in msg else f"{msg} (param group {index})"
                            ) from None
        if not (group.get("fused") is None or isinstance(group["fused"], bool)):
            raise TypeError(f"fused must be None or a bool, got {group['fused']!r}")
        if group.get("fused") and (group.get("foreach") or group.get("differentiable")):
            raise ValueError("fused=True cannot be combined with foreach=True or "
                             f"differentiable=True (param group {index})")
        self._spec(group)  # surfaces scheme errors now

    def _refuse_foreign_keys(self, group: dict[str, Any], index: int) -> None:
        """A group's keys are checked against its own dynamics: a hyperparameter of another
        dynamics (or of another torch optimizer) is refused, unless it is just the optimizer-wide
        default torch copies into every group (e.g. ``eps`` of AdLaLa's adaptive group on its
        Langevin groups). The optimizer-wide defaults hold the keys of the dynamics its groups
        run only, so a key of an unused dynamics never appears in a group."""
        used = group_keys(group["dynamics"]) | _TORCH_FLAGS
        for key in sorted((dyn_registry.known_keys() | set(FOREIGN_KEYS)) & set(group)):
            if key in used:
                continue
            if key in self.defaults and _same(group[key], self.defaults[key]):
                continue  # the optimizer-wide default torch copies into every group
            raise ValueError(f"param group {index} runs dynamics={group['dynamics']!r}, "
                             f"which does not use {key!r} (set to {group[key]!r}); it reads "
                             f"{sorted(used - _TORCH_FLAGS)}")

    def _saved_group(self, saved: dict[str, Any]) -> dict[str, Any]:
        """Checkpoints written before dynamics were declarations carry every dynamics' keys in
        every group, at their defaults: drop those this group's dynamics does not read (any
        other value is kept, and refused by the validation that follows)."""
        dyn = saved.get("dynamics")
        if dyn not in dyn_registry.REGISTRY:
            return saved
        used = group_keys(dyn) | _TORCH_FLAGS
        declared = {k: h.default for d in dyn_registry.REGISTRY.values()
                    for k, h in d.hypers.items()}
        return {k: v for k, v in saved.items()
                if k in used or k in self.defaults or k not in declared
                or not _same(v, declared[k])}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("fused", None)
            if group.get("dynamics") in dyn_registry.REGISTRY:
                for key, h in dyn_registry.get(group["dynamics"]).hypers.items():
                    group.setdefault(key, h.default)
        drop_unset_momentum(self.param_groups)

    def _value(self, group: dict[str, Any], name: str) -> Any:
        fn = checks(group["dynamics"]).get(name)
        return self.hyper(group, name, fn)

    def _spec(self, group: dict[str, Any]) -> Spec:
        """The group's system, scheme and lowered ops at the current hyperparameter values
        (cached: plain numbers are looked up as they are, schedules and tensors evaluated)."""
        dyn = dyn_registry.get(group["dynamics"])
        names = dyn.numeric
        raw = tuple(group.get(n) for n in names)
        if all(v is None or type(v) in (float, int) for v in raw):
            values = raw
        else:
            values = tuple(None if v is None else self._value(group, n)
                           for n, v in zip(names, raw, strict=True))
        # the key holds the structural values with their types (True == 1 as a dict key) and
        # the group's key names, so a setting changed or added after construction is a miss,
        # and a miss is validated as construction validates
        key = (dyn.name, values, group.get("scheme"),
               tuple((type(v), v) for v in (group.get(k) for k in dyn.structural)),
               tuple(group))
        spec = self._spec_cache.get(key)
        if spec is None:
            index = next((i for i, g in enumerate(self.param_groups) if g is group), None)
            # construction fills in the keys of a group's dynamics; a dynamics set later has
            # none of them (named in the error instead of a bare KeyError)
            missing = {k: h.default for k, h in dyn.hypers.items()
                       if k not in group and not h.optional}
            if values is raw:  # validate plain values once, when first seen
                values = tuple(None if v is None else self._value(group, n)
                               for n, v in zip(names, raw, strict=True))
            current = dict(zip(names, values, strict=True))
            if current.get("lr") == 0:  # a paused group never runs its ops; its structure
                current["lr"] = 1.0  # (thermostats, buffers) is built at a stand-in step
            try:
                spec = build(group, lambda n: current[n])
            except (ValueError, TypeError, KeyError) as err:
                if missing:
                    raise ValueError(
                        f"param group {index} runs dynamics={dyn.name!r} but has no "
                        f"{sorted(missing)} (was dynamics changed after construction?); set "
                        f"them in the group too (construction would use {missing}) and remove "
                        f"the keys of its previous dynamics ({type(err).__name__}: {err})"
                    ) from None
                msg = str(err)
                if index is None or "param group" in msg:
                    raise
                raise type(err)(f"{msg} (param group {index})") from None
            if index is not None:  # after build, whose messages are the more specific
                self._refuse_foreign_keys(group, index)
            if len(self._spec_cache) > 256:
                self._spec_cache.clear()
            self._spec_cache[key] = spec
        return spec

    def _before_pause(self) -> None:
        # noise streams are numbered over every group's parameters, paused groups included
        self._stream_ids(complete=True)

    def _stream_ids(self, complete: bool = False) -> dict[int, int]:
        """Each parameter's noise stream: its position over every group's parameters. Rebuilt
        after ``add_param_group``, and by :meth:`_update` when it meets a tensor put into
        ``group["params"]`` by hand (as torch's optimizers allow); ``complete`` rebuilds it
        unless it holds exactly the groups' tensors (before paused groups are emptied)."""
        if self._streams is not None and complete and (
                len(self._streams) != sum(len(g["params"]) for g in self.param_groups)
                or any(id(p) not in self._streams
                       for g in self.param_groups for p in g["params"])):
            self._streams = None
        if self._streams is None:
            ids: dict[int, int] = {}
            for group in self.param_groups:
                for p in group["params"]:
                    ids[id(p)] = len(ids)
            self._streams = ids
        return self._streams

    # --- the step ----------------------------------------------------------------------------
    _result_bounded = bound.partitioned_bounded  # the snapshot-free result check

    def _update(self, loss: Any = None, **kwargs: Any) -> None:
        # what this step's bound found (None if it did not run or did not prove the step)
        plan: bound.StepPlan | None = self.__dict__.pop(bound.STEP_PLAN, None)
        streams = self._stream_ids()
        model_unit: list[Any] | None = None
        units: list[list[Any]] = []
        for gi, group in enumerate(self.param_groups):
            params, grads = self.params_with_grad(group)
            # an empty tensor has no degrees of freedom: nothing to step, and a thermostat of
            # its own would divide by N = 0
            members = [(p, g, streams.get(id(p))) for p, g in zip(params, grads, strict=True)
                       if p.numel()]
            if any(m[2] is None for m in members):  # a tensor put into group["params"] by hand
                self._streams = None  # (nothing has changed yet: start the step again)
                return self._update(loss=loss, **kwargs)
            if not members:
                continue
            spec = plan.specs.get(id(group)) if plan is not None else None
            spec = spec or self._spec(group)
            scope = group["scope"] if spec.n_extras else "tensor"
            if scope == "model":
                if model_unit is None:
                    model_unit = [spec, group, members, "model", "model"]
                    units.append(model_unit)
                else:
                    ref = model_unit[0]
                    if (spec.first, spec.steady, spec.mass) != (ref.first, ref.steady, ref.mass):
                        raise ValueError(
                            f"scope='model' shares one thermostat across param groups, so they "
                            f"need identical dynamics and hyperparameters; param group {gi} "
                            "differs from the first such group")
                    model_unit[2] = model_unit[2] + members
            else:
                units.append([spec, group, members, scope, f"group{gi}"])
        cohorts = []
        for spec, group, members, scope, key in units:
            fresh, running, lacking = [], [], []
            for m in members:  # one state lookup per tensor (Tensor.__hash__ is Python)
                st = self.state[m[0]]
                if "step" not in st:
                    fresh.append(m)
                    continue
                running.append(m)
                if spec.needs_prev and "noise_prev" not in st:
                    lacking.append(m)  # its group switched to LM (scheme "em" -> "lm")
                elif spec.stale_prev:  # switched from LM to EM: the memory is not kept, so
                    st.pop("noise_prev", None)  # a switch back starts a fresh one, as a resume
            if lacking:
                self._start_prev(spec, group, lacking)
            if spec.n_extras:  # before any tensor moves: the step is refused whole
                self._check_extras(spec, running, scope, key)
                if fresh and scope != "tensor" and (
                        running or key in self.global_state.get("extras", {})):
                    # a shared ξ takes one update per step, from every tensor of its scope: a
                    # tensor joining a running scope starts from zero momentum and takes the
                    # scope's steady step with the others (two cohorts would update ξ twice)
                    self._start(spec, group, fresh)
                    fresh, running = [], members
            cohorts.append((spec, group, fresh, running, scope, key))
        for spec, group, fresh, running, scope, key in cohorts:
            if fresh:
                self._run_cohort(spec, group, fresh, scope, key, first=True)
            if running:
                self._run_cohort(spec, group, running, scope, key, first=False, plan=plan)

    @torch.compiler.disable  # created eagerly: set inside a traced step, dynamo read it as None
    def _fused(self) -> Any:
        """The fused-path runner, created on first use (it imports the numba kernels)."""
        if self._fused_runner is None:
            from .fused import FusedRunner

            self._fused_runner = FusedRunner()
        return self._fused_runner

    def _context(self, spec: Spec) -> Context:
        return Context(generator=self.generator, seed=self.seed,
                       step=int(self.global_state["step"]), noise=self.noise,
                       minv=1.0 / spec.mass, sqrtm=math.sqrt(spec.mass),
                       fused=self._fused_runner)

    def _run_cohort(self, spec: Spec, group: dict[str, Any], members: list[Any], scope: str,
                    key: str, *, first: bool, plan: bound.StepPlan | None = None) -> None:
        slots = [Slot(param=p, grad=g, state=self.state[p], stream=s) for p, g, s in members]
        thermo = self._thermostats(spec, slots, scope, key)
        buckets = self._buckets(spec, group, slots, plan=plan)
        if thermo is not None:  # where each bucket's Σp² goes in the cohort's k2 vector
            for b in buckets:
                b.index = self._device_layout(("idx", *b.idx), thermo.x.device,
                                              lambda b=b: (b.idx, torch.int64))
        ctx = self._context(spec)
        ctx.differentiable = bool(group.get("differentiable"))
        if first:
            self._init_state(spec, slots, buckets, ctx)
        execute(spec.first_segments if first else spec.steady_segments, slots, thermo, buckets,
                ctx)
        for s in slots:
            s.state["step"] += 1

    def _start(self, spec: Spec, group: dict[str, Any], members: list[Any]) -> None:
        """The initial state of tensors that join a running thermostat scope (see
        :meth:`_update`): zero momenta, fresh LM noise memories, step 0."""
        slots = [Slot(param=p, grad=g, state=self.state[p], stream=s) for p, g, s in members]
        self._init_state(spec, slots, self._buckets(spec, group, slots), self._context(spec))

    def _start_prev(self, spec: Spec, group: dict[str, Any], members: list[Any]) -> None:
        """Fresh LM noise memories for running tensors that have none: their group switched
        from Euler–Maruyama (which keeps none) to Leimkuhler–Matthews, which starts its memory
        with fresh normals as on a first step."""
        slots = [Slot(param=p, grad=g, state=self.state[p], stream=s) for p, g, s in members]
        ctx = self._context(spec)
        for b in self._buckets(spec, group, slots, prev=False):
            self._init_prev(b, slots, ctx)

    def _thermostats(self, spec: Spec, slots: list[Slot], scope: str, key: str
                     ) -> Thermostats | None:
        """The cohort's thermostat variables, stacked (created at ξ₀ on first use)."""
        if not spec.n_extras:
            return None
        if scope == "tensor":
            targets = []
            for i, s in enumerate(slots):
                x = s.state.get("extras")
                if x is None:
                    x = torch.tensor(spec.initial_extras, dtype=_extras_dtype(s.param),
                                     device=s.param.device)
                    s.state["extras"] = x
                s.holder = i
                targets.append(x)
            counts = [float(s.param.numel()) for s in slots]
        else:
            store = self.global_state.setdefault("extras", {})
            x = store.get(key)
            dev = slots[0].param.device
            if x is None:
                x = torch.tensor(spec.initial_extras, dtype=_extras_dtype(slots[0].param),
                                 device=dev)
                store[key] = x
            elif x.device != dev:
                x = x.to(dev)
                store[key] = x
            for s in slots:
                s.holder = 0
            targets = [x]
            counts = [float(sum(s.param.numel() for s in slots))]
        dev = targets[0].device  # per-tensor variables of a model split over devices: gathered
        stacked = (torch.stack([t.to(dev) for t in targets]) if len(targets) > 1
                   else targets[0].unsqueeze(0).clone())
        holders = tuple(s.holder for s in slots)
        n = tuple(counts)
        return Thermostats(
            x=stacked,
            holder=self._device_layout(("holder", *holders), dev,
                                       lambda: (list(holders), torch.int64)),
            n=self._device_layout(("n", stacked.dtype, *n), dev,
                                  lambda: (list(n), stacked.dtype)),
            targets=targets)

    def _device_layout(self, key: tuple[Any, ...], device: torch.device,
                       make: Callable[[], tuple[list[Any], torch.dtype]]) -> Tensor:
        """A small constant tensor of the cohort layout (thermostat holders, element counts N,
        bucket positions) on ``device``, made once per value and device: built from a Python
        list every step, it was a host-to-device copy on a GPU, which synchronises the host.
        Looked up by value (the layout itself), so a change of the participating tensors is a
        miss, never a stale hit. The tensors are only read."""
        full = (device, *key)
        t = self._layout_cache.get(full)
        if t is None:
            values, dtype = make()
            t = torch.tensor(values, dtype=dtype, device=device)
            if len(self._layout_cache) > 256:
                self._layout_cache.clear()
            self._layout_cache[full] = t
        return t

    def _check_extras(self, spec: Spec, running: list[Any], scope: str, key: str) -> None:
        """Refuse thermostat variables made for another structure (``chain_length`` changed
        after the first step): they cannot be carried over."""
        if scope == "tensor":
            held = [self.state[m[0]].get("extras") for m in running]
        else:
            held = [self.global_state.get("extras", {}).get(key)]
        for x in held:
            if x is not None and x.shape[-1] != spec.n_extras:
                self._refuse_resize(spec, x, key)

    def _refuse_resize(self, spec: Spec, x: Tensor, key: str) -> None:
        where = "scope='model'" if key == "model" else f"param group {key[len('group'):]}"
        raise ValueError(
            f"the thermostat state of {where} holds {x.shape[-1]} "
            f"variables but its dynamics ({type(spec.system).__name__}) now needs "
            f"{spec.n_extras}: a structural setting such as chain_length was changed after the "
            "first step; keep it, or build a new optimizer (the thermostat starts again)")

    def _path(self, group: dict[str, Any], tensors: list[Tensor]) -> str:
        """The group's path: the one rule of every dynopt optimizer
        (:func:`dynopt.optim._paths.choose_path`)."""
        return choose_path(group, tensors, type(self).__name__)

    def _buckets(self, spec: Spec, group: dict[str, Any], slots: list[Slot], prev: bool = True,
                 plan: bound.StepPlan | None = None) -> list[Bucket]:
        """The slots' buckets, one per (device, dtype), with their path and the state buffers
        of running tensors (each checked by :func:`_buffer`). A bucket that this step's bound
        ``plan`` holds for exactly these parameters takes its path and checked buffers from it.
        """
        by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, s in enumerate(slots):
            by_key.setdefault((device_of(s.param), s.param.dtype), []).append(i)
        out = []
        for (dev, dt), idx in by_key.items():
            params = [slots[i].param for i in idx]
            planned = plan.buckets.get((id(group), dev, dt)) if plan is not None else None
            if planned is not None and not _identical(planned[0], params):
                planned = None
            path = planned[1] if planned is not None else self._path(group, params)
            b = Bucket(device=dev, dtype=dt, path=path, idx=idx,
                       streams=[slots[i].stream for i in idx])
            if b.path == "fused" and self._fused_runner is None:  # the disabled call costs
                self._fused()                                    # a little: once, not per step
            low = dt in _LOW
            for i in idx:
                s = slots[i]
                g = s.grad
                if low:
                    b.theta.append(s.param.float())
                    g = g.float()
                else:
                    b.theta.append(s.param)
                    if b.path == "fused" and not g.is_contiguous():
                        g = g.contiguous()
                b.grad.append(g)
                if planned is None and "step" in s.state:  # a running tensor: its buffers
                    if spec.has_momentum:                  # must fit (no fresh ones)
                        b.mom.append(_buffer(s, "momentum_buffer", b.compute_dtype))
                    if spec.needs_prev and prev:
                        b.prev.append(_buffer(s, "noise_prev", b.compute_dtype))
            if planned is not None:  # all running, their buffers checked by the bound
                b.mom.extend(planned[2])
                if prev:
                    b.prev.extend(planned[3])
            out.append(b)
        return out

    def _init_state(self, spec: Spec, slots: list[Slot], buckets: list[Bucket],
                    ctx: Context) -> None:
        """Zero momenta and fresh LM noise memories for tensors taking their first step."""
        for b in buckets:
            cd = b.compute_dtype
            for i in b.idx:
                s = slots[i]
                s.state["step"] = 0
                if spec.has_momentum:
                    s.state["momentum_buffer"] = torch.zeros_like(
                        s.param, dtype=cd, memory_format=torch.contiguous_format)
                    b.mom.append(s.state["momentum_buffer"])
            if spec.needs_prev:
                self._init_prev(b, slots, ctx)

    def _init_prev(self, b: Bucket, slots: list[Slot], ctx: Context) -> None:
        """Fresh normals as the LM noise memory of every tensor of bucket ``b``."""
        if b.path == "fused":
            for i in b.idx:
                slots[i].state["noise_prev"] = torch.zeros_like(
                    slots[i].param, memory_format=torch.contiguous_format)
            b.prev.extend(slots[i].state["noise_prev"] for i in b.idx)
            ctx.fused = runner = self._fused()
            runner.init_prev(b, ctx)
        else:
            for i, z in zip(b.idx, draw_views(b, ctx), strict=True):
                slots[i].state["noise_prev"] = z.clone(memory_format=torch.contiguous_format)
            b.prev.extend(slots[i].state["noise_prev"] for i in b.idx)

    # --- diagnostics -------------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self, host: bool = False) -> list[dict[str, Any]]:
        """Live per-group diagnostics, computed on the device (no host sync unless ``host``).

        Returns one dict per group: ``group``, ``dynamics``, ``step``, ``lr``, ``temperature``
        (the target τ; None for a dynamics without one), ``kinetic_temperature`` (Σp²/(M N)
        over the group's tensors with momenta; None for overdamped groups or before the first
        step) and ``xi`` (the thermostat ξ, or v₁ for a chain: the scope's value, the mean over
        tensors for ``scope="tensor"``; before the group's first step, the value it starts
        from, e.g. ξ₀; None without a thermostat). With ``host=True`` tensors
        are converted to floats.
        """
        out = []
        for gi, group in enumerate(self.param_groups):
            spec = self._spec(group)
            moms = [self.state[p]["momentum_buffer"] for p in group["params"]
                    if "momentum_buffer" in self.state.get(p, {})]
            t_kin: Any = None
            if moms:
                k2 = torch.stack([m.double().square().sum().to(moms[0].device) for m in moms])
                t_kin = k2.sum() / (spec.mass * sum(m.numel() for m in moms))
            xi: Any = None
            if spec.n_extras:
                if group["scope"] == "tensor":
                    xs = [self.state[p]["extras"][0] for p in group["params"]
                          if "extras" in self.state.get(p, {})]
                    xi = torch.stack([x.to(xs[0].device) for x in xs]).mean() if xs else None
                else:
                    key = "model" if group["scope"] == "model" else f"group{gi}"
                    x = self.global_state.get("extras", {}).get(key)
                    xi = x[0] if x is not None else None
                if xi is None:  # before the group's first step: the value it will start
                    # from, on the parameters' device (a fill: no host copy), as it will be
                    p0 = group["params"][0] if group["params"] else None
                    xi = torch.full((), spec.initial_extras[0],
                                    dtype=torch.float64 if p0 is None else _extras_dtype(p0),
                                    device=None if p0 is None else p0.device)
            d = {"group": gi, "dynamics": group["dynamics"], "step": self.step_count,
                 "lr": self._value(group, "lr"),
                 "temperature": (self._value(group, "temperature")
                                 if "temperature" in dyn_registry.get(group["dynamics"]).hypers
                                 else None),
                 "kinetic_temperature": t_kin, "xi": xi}
            if host:
                d = {k: (float(v) if isinstance(v, Tensor) else v) for k, v in d.items()}
            out.append(d)
        return out

    # --- state dict --------------------------------------------------------------------------
    def _state_schema(self, group: dict[str, Any]) -> dict[str, Key]:
        spec = self._spec(group)
        out = {"step": Key("count", required=True), **PRIOR_STATE}
        if spec.has_momentum:
            out["momentum_buffer"] = Key("param", required=True)
        if spec.needs_prev:
            out["noise_prev"] = Key("param", required=True)
        elif "noise_prev" in spec.system.extras_layout(1):  # EM groups of earlier versions
            out["noise_prev"] = Key("param", required=False)  # saved one (_after_load drops it)
        if spec.n_extras:
            out["extras"] = Key("vector", required=group.get("scope") == "tensor",
                                size=spec.n_extras)
        return out

    def _validate_global_state(self, glob: dict[str, Any], groups: list[dict[str, Any]]
                               ) -> None:
        extras = glob.get("extras", {})
        if not isinstance(extras, dict):
            raise ValueError("cannot load the checkpoint: dynopt['global']['extras'] must be a "
                             "dict; the optimizer was left unchanged")
        sizes: dict[str, int] = {}
        for gi, group in enumerate(groups):
            n = self._spec(group).n_extras
            if n and group.get("scope") == "group":
                sizes[f"group{gi}"] = n
            elif n and group.get("scope") == "model":
                sizes.setdefault("model", n)
        for key, value in extras.items():
            where = f"dynopt['global']['extras'][{key!r}]"
            if key not in sizes:
                raise ValueError(f"cannot load the checkpoint: {where} belongs to no param group "
                                 "with that thermostat scope; the optimizer was left unchanged")
            check_vector(value, where, sizes[key])

    def _extra_state(self) -> dict[str, Any]:
        """The noise kind (a run continues only under the kind it was drawn with)."""
        return {**super()._extra_state(), "noise": self.noise}

    def _refuse_checkpoint(self, state_dict: dict[str, Any]) -> None:
        """A checkpoint saved under another noise kind is refused (checkpoints of versions that
        did not record it load as before)."""
        super()._refuse_checkpoint(state_dict)
        extra = state_dict.get("dynopt") if isinstance(state_dict, Mapping) else None
        saved_noise = extra.get("noise") if isinstance(extra, Mapping) else None
        if saved_noise is not None and saved_noise != self.noise:
            raise ValueError(
                f"cannot load the checkpoint: it was saved by a {type(self).__name__} with "
                f"noise={saved_noise!r}, and this one draws noise={self.noise!r}; construct it "
                f"with noise={saved_noise!r} to continue that run. The optimizer was left "
                "unchanged")

    def _after_load(self, state_dict: dict[str, Any]) -> None:
        """Per-tensor thermostat variables and float32 momenta of low-precision parameters keep
        their saved dtype (torch would cast them to the parameter's)."""
        super()._after_load(state_dict)
        saved = state_dict["state"]
        self._streams = None
        for sg, group in zip(state_dict["param_groups"], self.param_groups, strict=True):
            for pid, p in zip(sg["params"], group["params"], strict=True):
                entry = saved.get(pid, {})
                for k in _OWN_DTYPE:
                    v = entry.get(k)
                    if not isinstance(v, Tensor):
                        continue
                    want = _extras_dtype(p) if k == "extras" else (
                        torch.float32 if p.dtype in _LOW else p.dtype)
                    cur = self.state[p][k]
                    if cur.dtype != want or not cur.is_contiguous():
                        self.state[p][k] = v.to(device=p.device, dtype=want, copy=True,
                                                memory_format=torch.contiguous_format)
            if not self._spec(group).needs_prev:  # an EM group's memory from an earlier version
                for p in group["params"]:
                    self.state.get(p, {}).pop("noise_prev", None)


def _buffer(s: Slot, key: str, dtype: torch.dtype) -> Tensor:
    """``s.state[key]`` if it fits the parameter (shape, dtype, device, contiguous), else a
    ValueError naming it (a hand-edited state must never reach a kernel)."""
    t = s.state.get(key)
    p = s.param
    if not isinstance(t, Tensor):
        raise ValueError(f"the state of parameter {s.stream} (shape {tuple(p.shape)}) has taken "
                         f"{s.state.get('step')} steps but lacks {key!r}; load a complete "
                         "checkpoint or delete its whole state entry to restart it")
    if (t.shape != p.shape or t.dtype != dtype or not same_device(t, p)
            or not t.is_contiguous()):
        converted = t.shape == p.shape and (t.dtype != dtype or not same_device(t, p))
        raise ValueError(f"state[{key!r}] of parameter {s.stream} must be a contiguous "
                         f"{dtype} tensor of shape {tuple(p.shape)} on {p.device}, got "
                         f"{t.dtype} {tuple(t.shape)} on {t.device}"
                         + ("" if t.is_contiguous() else " (not contiguous)")
                         + ("; was the parameter converted after its first step "
                            "(model.double(), model.to(...))? opt.load_state_dict("
                            "opt.state_dict()) converts the optimizer's state to it"
                            if converted else ""))
    return t


def _identical(a: list[Tensor], b: list[Tensor]) -> bool:
    """The same tensor objects, in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _same(a: Any, b: Any) -> bool:
    return a is b or (not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b)


def _extras_dtype(p: Tensor) -> torch.dtype:
    return torch.float32 if p.device.type == "mps" else torch.float64
