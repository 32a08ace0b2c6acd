"""The op table (dynopt.program.OPS) is the one source of each op's facts, and every execution
path either implements each op of it or refuses it up front with a message naming the op."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynopt import potentials as P
from dynopt import systems as S
from dynopt.backends import get_backend
from dynopt.backends.torch.runner import IMPLEMENTED as TORCH_IMPLEMENTED
from dynopt.diagnostics.order import _check_noise_free
from dynopt.optim import executor as ex
from dynopt.program import (
    GRADIENT_OPS,
    MERGEABLE_OPS,
    NOISE_OPS,
    OPS,
    POSITION_OPS,
    SEGMENT_END_OPS,
    Op,
    OpCode,
    Program,
    bbi_shell_op,
    ecd_shell_op,
    nhc_op,
    normals_per_step,
)
from dynopt.stepping import State

C = OpCode
D = 3  # coordinates
E = 16  # extras per chain: x[0:3] LM memory, x[4] ξ / rate, x[6:8] chain, x[6:16] shells
POT = P.Harmonic(omega=[1.0, 1.7, 0.6], dim=D)
SYSTEM = S.Langevin(POT, gamma=1.0, temperature=0.0)
Q0 = np.array([[0.5, -0.3, 0.9], [1.2, 0.4, -0.7]])
P0 = np.array([[1.0, 0.2, -0.4], [-0.3, 0.5, 0.8]])
X0 = np.zeros((2, E))
X0[:, 4] = 0.7


def sample_op(code: OpCode) -> Op:
    """One op of each code with generic constants and zero noise amplitude (deterministic)."""
    special = {
        C.NHC: nhc_op(0.1, 0.5, 1.0, [1.0], [1.0], 1, xi_offset=6, eta_offset=8),
        C.BBI_SHELL: bbi_shell_op(0.0, 1.0, math.inf, 0.0, math.inf, 1e-10, 1e-12, True, False,
                                  offset=6),
        C.ECD_SHELL: ecd_shell_op(0.0, 1.0, 1.0, 1.0, 1e-10, 1e-12, True, offset=6),
        C.THERMOSTAT: Op(C.THERMOSTAT, (0.1, 0.5, 1.0), (4,)),
        C.FRICTION: Op(C.FRICTION, (0.1,), (4, 5)),
        C.OU: Op(C.OU, (0.8, 0.0)),
        C.ECD_DRIFT: Op(C.ECD_DRIFT, (0.1, 1.0), (4,)),
    }
    if code in special:
        return special[code]
    info = OPS[code]
    f = tuple(0.0 if k == info.amplitude else 0.1 for k in range(len(info.f)))
    i = tuple(0 if name == "x_off" else 4 for name in info.i)
    return Op(code, f, i, letter="Z")


# ----------------------------------------------------------------------------------------------
# the table itself
# ----------------------------------------------------------------------------------------------
def test_table_covers_every_code_and_derived_sets_are_the_documented_ones():
    assert set(OPS) == set(OpCode)
    assert {C.KICK, C.GRAD_STEP, C.SC_KICK, C.BBI_SHELL, C.ECD_SHELL} == GRADIENT_OPS
    assert {C.DRIFT, C.GRAD_STEP, C.WIENER, C.LM_NOISE, C.SC_DRIFT, C.ECD_DRIFT} == POSITION_OPS
    assert {C.OU, C.WIENER, C.LM_NOISE, C.ADD_NOISE, C.OU_XI, C.ROTATE} == NOISE_OPS
    assert {C.THERMOSTAT, C.NHC} == SEGMENT_END_OPS
    assert {C.DRIFT, C.KICK} == MERGEABLE_OPS
    assert normals_per_step([C.OU, C.DRIFT, C.ROTATE, C.KICK, C.LM_NOISE]) == 3
    # the amplitude index points at a named float field of every noise op, and only there
    for code, info in OPS.items():
        assert (info.amplitude is not None) == (code in NOISE_OPS), code
        if info.amplitude is not None:
            assert info.amplitude < len(info.f)


def test_field_names_match_every_lowered_letter():
    """Every letter of every shipped system lowers to an op whose constants the table names."""
    systems = [
        S.Hamiltonian(POT), S.Langevin(POT, gamma=1.0, temperature=0.3),
        S.OverdampedLangevin(POT, temperature=0.3),
        S.AdaptiveLangevin(POT, temperature=0.3, sigma_a=0.1, eps=0.5),
        S.NoseHoover(POT, temperature=0.3), S.NoseHooverChain(POT, temperature=0.3, chain_length=3),
        S.BornInfeld(POT), S.ECDSep(POT), S.PortHamiltonian(POT, gamma=0.5),
    ]
    seen = set()
    for system in systems:
        for letter in system.letters:
            op = system.lower(letter, 0.1)
            info = OPS[op.code]
            seen.add(op.code)
            for names, values in ((info.f, op.f), (info.i, op.i)):
                if names and names[-1].startswith("*"):
                    assert len(values) >= len(names) - 1, (system, letter)
                else:
                    assert len(values) == len(names), (system, letter, names, values)
    assert seen == set(OpCode)  # the check above covered every row of the table


def test_op_field_reads_by_name():
    op = nhc_op(0.1, 0.5, 2.0, [1.0, 3.0], [1.0], 2, xi_offset=6, eta_offset=9)
    assert op.field("kT") == 0.5 and op.field("q1_per_dof") == 2.0
    assert op.field("M") == 3 and op.field("eta_offset") == 9
    with pytest.raises(KeyError, match="NHC has no field 'gamma'"):
        op.field("gamma")


def test_order_diagnostics_see_every_noise_op_including_rotate():
    noisy = Op(C.ROTATE, (0.3,), (4,), letter="R")
    with pytest.raises(ValueError, match="draws noise \\(letter 'R', amplitude 0.3\\)"):
        _check_noise_free(Program((noisy,), E), "scheme")
    _check_noise_free(Program((Op(C.ROTATE, (0.0,), (4,)),), E), "scheme")  # ν = 0: no noise


# ----------------------------------------------------------------------------------------------
# every path implements each op or refuses it clearly
# ----------------------------------------------------------------------------------------------
def _run_backend(name: str, op: Op) -> dict[str, np.ndarray]:
    backend = get_backend(name)
    if name == "numba":
        state = State(q=Q0.copy(), p=P0.copy(), x=X0.copy(), backend="numba")
    else:
        state = State(q=torch.tensor(Q0), p=torch.tensor(P0), x=torch.tensor(X0),
                      backend="torch", generator=torch.Generator().manual_seed(0))
    assert backend.advance(SYSTEM, Program((op,), E), state, 1, None) is None
    return backend.state_to_numpy(state)


@pytest.mark.parametrize("code", list(OpCode), ids=[c.name for c in OpCode])
def test_numba_kernel_and_torch_runner_implement_every_op(code):
    """Both integrate() backends implement the whole table: one application of each op agrees
    to 1e-12 (the LM noise memory, a fresh normal, is left out)."""
    assert code in TORCH_IMPLEMENTED
    op = sample_op(code)
    a, b = _run_backend("numba", op), _run_backend("torch", op)
    for k in ("q", "p", "x"):
        got, want = a[k], b[k]
        if k == "x" and code == C.LM_NOISE:
            got, want = got[:, D:], want[:, D:]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{code.name} {k}")
    changed = any(np.abs(a[k] - ref).max() > 1e-6 for k, ref in (("q", Q0), ("p", P0), ("x", X0)))
    if code not in NOISE_OPS:  # each deterministic sample op really does something
        assert changed, code


def _executor_step(path: str, op: Op) -> dict[str, np.ndarray]:
    """One application of ``op`` by the optimizer executor on chain 0 as one parameter."""
    from dynopt.optim.fused import FusedRunner

    q = torch.tensor(Q0[0]).clone()
    p = torch.tensor(P0[0]).clone()
    g = torch.as_tensor(np.asarray(POT.grad(Q0[:1]), dtype=np.float64)[0]).clone()
    prev = torch.zeros(D, dtype=torch.float64)
    extras = torch.tensor(X0[0]).clone()
    slot = ex.Slot(param=q, grad=g, state={"momentum_buffer": p, "noise_prev": prev}, stream=0)
    thermo = ex.Thermostats(x=extras[None].clone(), holder=torch.zeros(1, dtype=torch.int64),
                            n=torch.tensor([float(D)], dtype=torch.float64), targets=[extras])
    bucket = ex.Bucket(device=q.device, dtype=q.dtype, path=path, idx=[0], streams=[0],
                       theta=[q], mom=[p], grad=[g], prev=[prev])
    gen = torch.Generator().manual_seed(0)
    ctx = ex.Context(generator=lambda _: gen, seed=0, step=0, noise="gaussian", minv=1.0,
                     sqrtm=1.0, fused=FusedRunner() if path == "fused" else None)
    ex.execute(ex.split_segments([op]), [slot], thermo, [bucket], ctx)
    return {"q": q.numpy()[None], "p": p.numpy()[None], "x": extras.numpy()[None]}


@pytest.mark.parametrize("path", ["single", "foreach", "fused"])
@pytest.mark.parametrize("code", list(OpCode), ids=[c.name for c in OpCode])
def test_optimizer_paths_implement_or_refuse_every_op(path, code):
    """The executor's three paths run each op they implement exactly as the torch runner does
    (1e-12, one parameter = one chain); any other op is refused before a step starts, with a
    message naming it."""
    op = sample_op(code)
    if code not in ex.IMPLEMENTED:
        with pytest.raises(ValueError, match=f"optimizer executor does not implement op "
                                             f"{code.name}"):
            ex.split_segments([op])
        return
    got = _executor_step(path, op)
    want = _run_backend("torch", op)
    for k in ("q", "p", "x"):
        a, b = got[k], want[k][:1]
        if k == "x" and code == C.LM_NOISE:
            a, b = a[:, D:], b[:, D:]
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12, err_msg=f"{path} {code.name} {k}")
