"""The torch backend for ``integrate()``: a program executed on ``(chains, dim)`` tensors."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ...potentials.minibatch import gradient_points
from ...program import BBI_EXTRAS, ECD_EXTRAS, GRADIENT_OPS, POSITION_OPS, OpCode, require
from ..base import AbstractBackend, Divergence, Records
from ..state import State
from . import energy_ops, ops
from .streams import ChainStreams

if TYPE_CHECKING:
    from ...program import Program
    from ...systems.base import AbstractSystem

__all__ = ["IMPLEMENTED", "TorchBackend", "resolve_dtype"]

#: The ops this runner implements: every op of the table (:data:`dynopt.program.OPS`).
IMPLEMENTED = frozenset(OpCode)


def resolve_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        if isinstance(dtype, str) and dtype == "float":
            raise ValueError("dtype='float' is ambiguous (float64 in numpy, float32 in torch); "
                             "pass 'float32' or 'float64'")
        # the Python type float is a double, as in numpy and torch.zeros(..., dtype=float)
        names = {"float64": torch.float64, "float32": torch.float32, "double": torch.float64,
                 "float": torch.float64}
        key = getattr(dtype, "__name__", str(dtype))
        if key not in names:
            raise ValueError(f"dtype must be float32 or float64 for backend='torch', got {dtype!r}")
        out = names[key]
    if out not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be float32 or float64 for backend='torch', got {dtype!r}")
    return out


def _finite_rows(state: State) -> torch.Tensor:
    """Per chain: q and p finite and no extra NaN (the numba kernel's divergence rule; extras
    may hold +inf as a "not yet" marker)."""
    ok = torch.isfinite(state.q).all(dim=1) & torch.isfinite(state.p).all(dim=1)
    return ok & ~torch.isnan(state.x).any(dim=1)


def _recorded_u(records: Records) -> torch.Tensor:
    """The recorded potential energies, (chains, records)."""
    if records.observer is not None:
        return records.observer.buffers["potential"]
    return records.u


def _sampler(g: torch.Generator, dev: torch.device) -> Any:
    """Standard normals of a given shape from ``g`` as float64 numpy (initial momenta and
    extras are Gaussian whatever the run's noise kind)."""
    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return ops.standard_normal(shape, g, torch.float64, dev, "gaussian").cpu().numpy()
    return draw


def _extras_by_chain(system: AbstractSystem, dim: int, samplers: list[Any]) -> np.ndarray:
    """Initial extras chain by chain, chain c's from ``samplers[c]`` (per-chain streams)."""
    return np.concatenate([np.asarray(system.initial_extras(1, dim, draw)).reshape(1, -1)
                           for draw in samplers])


class TorchBackend(AbstractBackend):
    """Batched tensor ops over all chains; noise from a seeded ``torch.Generator``.

    Noise is drawn as one ``(chains, dim)`` tensor per noise op per step, in program order, from
    the state's generator: the same draw sequence a :mod:`dynopt.optim` optimizer makes for a
    single parameter tensor, so the two agree for the same seed.
    """

    name = "torch"
    supports_observables = True
    supports_chain_ids = True
    sees_interrupts = True

    def init_state(self, system, q, p, *, seed, noise, dtype, device,  # type: ignore[no-untyped-def]
                   chain_ids=None, draw_extras=True):
        dt = resolve_dtype(dtype)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        gen = ops.seeded(torch.Generator(device=dev), seed)
        n, dim = q.shape
        streams = None if chain_ids is None else ChainStreams(seed, chain_ids, dev)

        def zeros(shape: tuple[int, ...]) -> np.ndarray:
            return np.zeros(shape)

        def drawer(g: torch.Generator) -> Any:
            return _sampler(g, dev)

        if streams is None:
            if p is None:
                p = system.initial_momentum(n, dim, drawer(gen))
            x = system.initial_extras(n, dim, drawer(gen) if draw_extras else zeros)
        else:  # chain c's initial draws from its own stream
            if p is None:
                p = np.concatenate([system.initial_momentum(1, dim, drawer(g)).reshape(1, -1)
                                    for g in streams.generators]) if n else np.zeros((0, dim))
            x = _extras_by_chain(system, dim, [drawer(g) if draw_extras else zeros
                                               for g in streams.generators])

        def tens(label: str, a: np.ndarray) -> torch.Tensor:
            t = torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=dev).reshape(n, -1)
            finite = torch.isfinite(t) | torch.as_tensor(~np.isfinite(a), device=dev).reshape(
                t.shape)  # extras may hold +inf markers on purpose
            if not bool(finite.all()):
                i = int(torch.argmin(finite.reshape(-1).int()))
                raise ValueError(
                    f"{label} value {np.asarray(a).reshape(-1)[i]:g} (flat index {i}) is beyond "
                    f"the range of {dt} (max {torch.finfo(dt).max:g}); use dtype=float64")
            return t

        return State(q=tens("q0", q), p=tens("p0", p), x=tens("extras", x), step=0, seed=seed,
                     backend="torch", noise=noise, generator=gen if streams is None else None,
                     streams=streams)

    def start_extras(self, system, state):  # type: ignore[no-untyped-def]
        # from the run's live generator(s): a new generator seeded like the run's would replay
        # the noise the run draws (at step 0 LM's R_prev would equal its first R)
        n, dim, dev = state.n_chains, state.dim, state.q.device
        if state.streams is None:
            x = system.initial_extras(n, dim, _sampler(state.generator, dev))
        else:
            x = _extras_by_chain(system, dim, [_sampler(g, dev) for g in state.streams.generators])
        return torch.as_tensor(np.ascontiguousarray(x), dtype=state.q.dtype,
                               device=dev).reshape(n, -1)

    def advance(self, system, program: Program, state: State, n_steps: int,  # type: ignore[no-untyped-def]
                records: Records | None) -> Divergence | None:
        """Run without per-step host synchronisation; on a non-finite result, replay the chunk
        from a saved copy step by step to name the exact step (zero cost unless it diverges)."""
        if n_steps == 0:
            return None
        require(program.ops, IMPLEMENTED, "torch runner")
        if state.generator is None and state.streams is None and program.n_noise_ops > 0:
            raise ValueError("this program draws noise but the state has no torch generator; "
                             "create states with dynopt.stepping.init(..., backend='torch')")
        gen_state = state.generator.get_state() if state.generator is not None else None
        stream_state = state.streams.get_state() if state.streams is not None else None
        saved = (state.q.clone(), state.p.clone(), state.x.clone(), gen_state)
        next_record = records.next if records is not None else 0
        self._steps(system, program, state, n_steps, records)
        ok = _finite_rows(state).all()
        written = n_steps // records.every if records is not None else 0
        if written:  # and U of the records just written (one host sync for both)
            ok = ok & torch.isfinite(_recorded_u(records)[:, next_record:next_record + written]
                                     ).all()
        if bool(ok):
            state.step += n_steps
            if records is not None:
                records.next += n_steps // records.every
            return None
        # replay to find the first non-finite step
        state.q.copy_(saved[0])
        state.p.copy_(saved[1])
        state.x.copy_(saved[2])
        if gen_state is not None:
            state.generator.set_state(gen_state)
        if stream_state is not None:
            state.streams.set_state(stream_state)
        if records is not None:
            records.next = next_record
        start = state.step
        try:
            for n in range(n_steps):
                every = records.every if records is not None else 1
                # one step at a time, at its own step number: a minibatch potential picks its
                # batch from state.step, so the replay reads the batches the chunk read
                state.step = start + n
                self._steps(system, program, state, 1, None)
                finite = _finite_rows(state)
                ok = finite
                if records is not None and (n + 1) % every == 0:  # as the numba kernel: U
                    r = records.next + (n + 1) // every - 1  # at a record step counts too
                    self._record(records, r, state, system)
                    ok = finite & torch.isfinite(_recorded_u(records)[:, r])
                if not bool(ok.all()):
                    chain = int(torch.argmin(ok.int()))
                    return Divergence(step=start + n + 1, chain=chain,
                                      potential=bool(finite[chain]))
        finally:
            state.step = start
        raise AssertionError("a non-finite chunk replayed finite")  # pragma: no cover

    @staticmethod
    def _record(records: Records, r: int, state: State, system: AbstractSystem) -> None:
        if records.observer is not None:
            records.observer.record(r, state, system)
            return
        records.q[:, r] = state.q
        records.p[:, r] = state.p
        records.x[:, r] = state.x
        records.u[:, r] = system.potential.value(state.q)

    def _steps(self, system: AbstractSystem, program: Program, state: State, n_steps: int,
               records: Records | None) -> None:
        q, p, x = state.q, state.p, state.x
        dt, dev = q.dtype, q.device
        dim = q.shape[1]
        minv = torch.as_tensor(1.0 / system.mass_vector(dim), dtype=dt, device=dev)
        sqrtm = torch.as_tensor(np.sqrt(system.mass_vector(dim)), dtype=dt, device=dev)
        unit_mass = bool(np.all(system.mass_vector(dim) == 1.0))
        m_inv: torch.Tensor | float = 1.0 if unit_mass else minv
        m_sqrt: torch.Tensor | float = 1.0 if unit_mass else sqrtm
        potential = system.potential
        n_dof = float(dim)

        def kinetic2(pp: torch.Tensor) -> torch.Tensor:
            return (pp * pp * minv).sum(-1, keepdim=True)

        streams = state.streams

        def noise() -> torch.Tensor:
            if streams is not None:
                return streams.normal(dim, dt, state.noise)
            return ops.standard_normal(tuple(q.shape), state.generator, dt, dev, state.noise)

        # stochastic potentials (minibatches): the gradient read at op j of step n uses
        # evaluation n·G + offset[j], a pure function of the step (dynopt.potentials.minibatch)
        stochastic = bool(getattr(potential, "stochastic", False))
        if stochastic:
            offsets, per_step = gradient_points(
                [op.code in GRADIENT_OPS for op in program.ops],
                [op.code in POSITION_OPS for op in program.ops])

        def gradient(n: int, j: int) -> torch.Tensor:
            if stochastic:
                return potential.grad(q, batch=(state.step + n) * per_step + offsets[j])
            return potential.grad(q)

        def value(n: int, j: int) -> torch.Tensor:
            if stochastic:
                return potential.value(q, batch=(state.step + n) * per_step + offsets[j])
            return potential.value(q)

        def col(i: int) -> torch.Tensor:
            return x[:, i:i + 1]

        def cols(names: tuple[str, ...], o: int) -> dict[str, torch.Tensor]:
            return {name: col(o + j) for j, name in enumerate(names)}

        grad: torch.Tensor | None = None
        every = records.every if records is not None else n_steps + 1
        for n in range(n_steps):
            for j, op in enumerate(program.ops):
                code = op.code
                # the gradient cache, from the op table (as in the numba kernel)
                if code in GRADIENT_OPS and grad is None:
                    grad = gradient(n, j)
                if code == OpCode.DRIFT:
                    ops.drift_(q, p, op.f[0], m_inv)
                elif code == OpCode.KICK:
                    ops.kick_(p, grad, op.f[0])
                elif code == OpCode.OU:
                    ops.ou_(p, op.f[0], op.f[1], m_sqrt, noise())
                elif code == OpCode.GRAD_STEP:
                    ops.grad_step_(q, grad, op.f[0])
                elif code == OpCode.WIENER:
                    ops.wiener_(q, op.f[0], noise())
                elif code == OpCode.LM_NOISE:
                    o = op.i[0]
                    ops.lm_noise_(q, x[:, o:o + dim], op.f[0], noise())
                elif code == OpCode.FRICTION:
                    eta = col(op.i[1]) if op.i[1] >= 0 else None
                    ops.friction_(p, col(op.i[0]), op.f[0], eta)
                elif code == OpCode.ADD_NOISE:
                    ops.add_noise_(p, op.f[0], m_sqrt, noise())
                elif code == OpCode.THERMOSTAT:
                    ops.thermostat_(col(op.i[0]), p, op.f[0], op.f[1], op.f[2] > 0.5, n_dof,
                                    kinetic2)
                elif code == OpCode.OU_XI:
                    ops.ou_thermostat_(p, col(op.i[0]), op.f[0], op.f[1], m_sqrt, noise())
                elif code == OpCode.NHC:
                    m, n_sub, n_sy, xo, eo = op.i
                    q_rest = list(op.f[3:3 + m - 1])
                    weights = list(op.f[3 + m - 1:3 + m - 1 + n_sy])
                    ops.nhc_(p, [col(xo + j) for j in range(m)], [col(eo + j) for j in range(m)],
                             op.f[0], op.f[1], op.f[2], q_rest, weights, n_sub, n_dof, kinetic2)
                elif code == OpCode.LIN_FRIC:
                    energy_ops.linear_friction_(p, col(op.i[0]), op.f[0])
                elif code == OpCode.SC_KICK:
                    energy_ops.scaled_kick_(p, grad, op.f[0], col(op.i[0]))
                elif code == OpCode.SC_DRIFT:
                    energy_ops.scaled_drift_(q, p, op.f[0], col(op.i[0]), m_inv)
                elif code == OpCode.BBI_SHELL:
                    c = energy_ops.BBIConstants.from_op(op.f)
                    # float64 as in the optimizer: near the floor v₀, E₀²/V and |p|² leave
                    # float32's range long before the momenta themselves do
                    V = value(n, j)[:, None].double() - c.v0
                    energy_ops.bbi_shell_(p, grad, V, cols(BBI_EXTRAS, op.i[0]), c,
                                          state.generator if streams is None else streams)
                elif code == OpCode.ECD_SHELL:
                    ce = energy_ops.ECDConstants.from_op(op.f)
                    fd = value(n, j)[:, None] - ce.f0
                    energy_ops.ecd_shell_(p, grad, fd, cols(ECD_EXTRAS, op.i[0]), ce)
                elif code == OpCode.ECD_DRIFT:
                    energy_ops.ecd_drift_(q, p, op.f[0], op.f[1], col(op.i[0]))
                elif code == OpCode.ROTATE:
                    energy_ops.rotate_(p, noise(), op.f[0], col(op.i[0]))
                else:  # pragma: no cover - guarded by Program construction
                    raise NotImplementedError(f"op {code!r} is not implemented on torch")
                if code in POSITION_OPS:
                    grad = None
            if records is not None and (n + 1) % every == 0:
                self._record(records, records.next + (n + 1) // every - 1, state, system)

    def potential_values(self, system, q):  # type: ignore[no-untyped-def]
        if not isinstance(q, torch.Tensor):
            q = torch.as_tensor(np.asarray(q, dtype=np.float64))
        return system.potential.value(q).detach().cpu().numpy().astype(np.float64)

    def allocate_records(self, state, n_records, every):  # type: ignore[no-untyped-def]
        q = state.q
        c = q.shape[0]

        def full(*shape: int) -> torch.Tensor:
            return torch.full(shape, float("nan"), dtype=q.dtype, device=q.device)

        return Records(q=full(c, n_records, q.shape[1]), p=full(c, n_records, state.p.shape[1]),
                       x=full(c, n_records, state.x.shape[1]), u=full(c, n_records), every=every)

    def records_to_numpy(self, records):  # type: ignore[no-untyped-def]
        def conv(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().to(torch.float64).numpy()

        return {"q": conv(records.q), "p": conv(records.p), "x": conv(records.x),
                "u": conv(records.u)}

    array_kind = "a torch.Tensor"

    def is_array(self, a):  # type: ignore[no-untyped-def]
        return isinstance(a, torch.Tensor)

    def check_storage(self, state):  # type: ignore[no-untyped-def]
        q = state.q
        if q.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"state.q must be float32 or float64, got {q.dtype}")
        for name in ("p", "x"):
            a = getattr(state, name)
            if a.dtype != q.dtype or a.device != q.device:
                raise ValueError(f"state.{name} has dtype {a.dtype} on {a.device} but state.q "
                                 f"has {q.dtype} on {q.device}")
        gen = state.generator
        if gen is not None and not isinstance(gen, torch.Generator):
            raise TypeError(f"state.generator must be a torch.Generator, got "
                            f"{type(gen).__name__}")

    def state_to_numpy(self, state):  # type: ignore[no-untyped-def]
        return {k: getattr(state, k).detach().cpu().numpy() for k in ("q", "p", "x")}

    def copy_state(self, state):  # type: ignore[no-untyped-def]
        gen = state.generator
        if gen is not None:
            gen = torch.Generator(device=state.generator.device)
            gen.set_state(state.generator.get_state())
        streams = state.streams.copy() if state.streams is not None else None
        return dataclasses.replace(state, q=state.q.clone(), p=state.p.clone(),
                                   x=state.x.clone(), generator=gen, streams=streams)

    def itemsize(self, state):  # type: ignore[no-untyped-def]
        return state.q.element_size()

    def write_record(self, records, r, state, system):  # type: ignore[no-untyped-def]
        records.q[:, r] = state.q
        records.p[:, r] = state.p
        records.x[:, r] = state.x
        u = self.potential_values(system, state.q)
        records.u[:, r] = torch.as_tensor(u, dtype=state.q.dtype, device=state.q.device)

    def bounce_momenta(self, state, fired, mass):  # type: ignore[no-untyped-def]
        z = torch.randn(tuple(state.p.shape), generator=state.generator, dtype=state.p.dtype,
                        device=state.p.device)
        # p ← √K·M^{1/2}z/|z|, K = pᵀM⁻¹p: a random direction of the same kinetic energy
        sqrt_m = torch.as_tensor(np.sqrt(np.asarray(mass, dtype=np.float64)),
                                 dtype=state.p.dtype, device=state.p.device)
        pn = torch.linalg.vector_norm(state.p / sqrt_m, dim=-1, keepdim=True)
        zn = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        rows = torch.as_tensor(fired, device=state.p.device)
        state.p[rows] = (sqrt_m * z * (pn / zn))[rows]
