"""Fuzzing integrate() (issue 10): any combination of arguments, valid or not, ends in

* a ValueError/TypeError whose message names one of the arguments given, or
* a DivergenceError (step ≥ 1) whose partial trajectory is finite, or
* a trajectory of the promised shape and time axis whose records and final state are finite
  (extras: no NaN; +inf is a legitimate "not yet" marker),

never a crash, a hang (runs are at most 40 steps of 6 chains) or a silent non-finite state.
Derandomized, so the examples are the same on every run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings  # event: --hypothesis-show-statistics
from hypothesis import strategies as st

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.errors import DivergenceError

SYSTEMS = {
    "langevin1": S.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.3),
    "langevin2": S.Langevin(P.Harmonic([1.0, 2.0], dim=2), gamma=0.5, temperature=0.2,
                            mass=[1.0, 3.0]),
    "overdamped": S.OverdampedLangevin(P.DoubleWell(), temperature=0.3),
    "nhc": S.NoseHooverChain(P.Harmonic(dim=2), temperature=0.5, chain_length=2),
    "adaptive": S.AdaptiveLangevin(P.Harmonic(), temperature=0.5, sigma_a=0.7),
    "hamiltonian": S.Hamiltonian(P.Rosenbrock(dim=2)),
}
#: Valid schemes per system (None: the system's default).
SCHEMES = {"langevin1": [None, "BAOAB", "OBABO"], "langevin2": [None, "ABOBA"],
           "overdamped": [None, "lm", "em"], "nhc": [None], "adaptive": [None, "BAEOEAB"],
           "hamiltonian": [None, "leapfrog"]}
#: Invalid values per argument, and the words one of which the error message must contain.
INVALID = {
    "h": ([0.0, -1.0, math.nan, math.inf, "x"], ("h must",)),
    "n_steps": ([-1, 2.5, "3", True], ("n_steps",)),
    "record_every": ([0, -2, 1.0], ("record_every",)),
    "backend": (["jax"], ("backend",)),
    "seed": ([-1, 2**64, 2**80, 1.5], ("seed",)),
    "noise": (["uniform"], ("noise",)),
    "n_chains": ([0, -1, 2.5, True, 10**12], ("n_chains",)),
    "dtype": (["x", torch.float16, torch.int32], ("dtype",)),
    "q0": (["dim", "nan", "inf", "3d"], ("q0",)),
    "p0": (["shape", "nan"], ("p0",)),
    "integrator": (["BXB", "wrong"], ("integrator", "scheme")),
    "state": (["other"], ("state",)),
}
FINITE = st.one_of(st.floats(-3, 3), st.sampled_from([0.0, 1e200, -1e30]))
#: Within float32's range (1e200 in float32 is refused: see test_fuzz_found_cases_stay_fixed).
FINITE32 = st.one_of(st.floats(-3, 3), st.sampled_from([0.0, 1e30, -1e30]))


def _array(draw, shape: tuple[int, ...], values=FINITE) -> np.ndarray:
    n = int(np.prod(shape))
    return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float64
                    ).reshape(shape)


@st.composite
def calls(draw):
    """A valid call with at most one argument replaced by an invalid value."""
    name = draw(st.sampled_from(sorted(SYSTEMS)))
    system = SYSTEMS[name]
    dim = system.potential.dim
    bad = draw(st.sampled_from([None] * 6 + sorted(INVALID)))
    backend = draw(st.sampled_from(["numba", "torch"]))
    kw = {"h": draw(st.floats(1e-4, 0.3)), "n_steps": draw(st.integers(0, 40)),
          "record_every": draw(st.integers(1, 12)), "backend": backend,
          "seed": draw(st.one_of(st.none(), st.integers(0, 2**64 - 1))),
          "noise": draw(st.sampled_from(["gaussian", "discrete"])), "progress": False}
    n_chains = draw(st.one_of(st.none(), st.integers(1, 6)))
    if n_chains is not None:
        kw["n_chains"] = n_chains
    if draw(st.booleans()):
        kw["dtype"] = draw(st.sampled_from(["float32", torch.float64] if backend == "torch"
                                           else ["float64"]))
    rows = n_chains if n_chains is not None else draw(st.sampled_from([None, 1, 3]))
    shape = (dim,) if rows is None or draw(st.booleans()) else (rows, dim)
    values = FINITE32 if kw.get("dtype") == "float32" else FINITE
    q0 = _array(draw, shape, values)
    if system.has_momentum and draw(st.booleans()):
        kw["p0"] = _array(draw, shape, values)
    integrator = draw(st.sampled_from(SCHEMES[name]))
    state = None
    if draw(st.integers(0, 3)) == 0:
        state = dynopt.integrate(system, None, np.zeros(dim), h=0.01, n_steps=2, n_chains=2,
                                 seed=0, backend=backend).final_state
    if bad is not None:
        value = draw(st.sampled_from(INVALID[bad][0]))
        if bad == "q0":
            q0 = {"dim": np.zeros(dim + 1), "nan": np.full(dim, math.nan),
                  "inf": np.full(dim, -math.inf), "3d": np.zeros((1, 1, dim))}[value]
            state = None
        elif bad == "p0":
            if not system.has_momentum:
                value = "any"  # overdamped: any p0 is refused
            kw["p0"] = {"shape": np.zeros(dim + 2), "nan": np.full(dim, math.nan),
                        "any": np.zeros(dim)}[value]
            state = None
        elif bad == "integrator":
            integrator = value if value == "BXB" else (
                "lm" if system.has_momentum else "BAOAB")
        elif bad == "state":
            other = SYSTEMS["nhc" if name != "nhc" else "langevin1"]
            state = dynopt.integrate(other, None, np.zeros(other.potential.dim), h=0.01,
                                     n_steps=1, backend=backend).final_state
        else:
            kw[bad] = value
            if bad in ("backend", "seed", "noise", "n_chains", "dtype"):
                state = None  # these describe a new run
    return system, integrator, q0, kw, state, bad


def _finite_records(traj) -> None:
    """Records finite (extras: no NaN). A run may start at |q| = 1e200, so the derived
    energies may overflow; the state itself may not."""
    assert np.isfinite(traj.q).all()
    if traj.p is not None:
        assert np.isfinite(traj.p).all()
    for key, value in traj.extras.items():
        if key not in ("potential", "kinetic", "invariant"):
            assert not np.isnan(value).any(), key


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls())
def test_integrate_never_crashes_or_returns_a_non_finite_state(call):
    system, integrator, q0, kw, state, bad = call
    if state is not None:  # a continued run takes its backend, seed, noise and chains
        kw = {k: v for k, v in kw.items() if k in ("h", "n_steps", "record_every", "progress")}
        q0 = None
    try:
        traj = dynopt.integrate(system, integrator, q0, state=state, **kw)
    except DivergenceError as err:
        event("diverged")
        assert bad is None, f"{bad} was invalid but the run started"
        assert err.step >= 1
        _finite_records(err.trajectory)
        return
    except (ValueError, TypeError) as err:
        event(f"refused {bad}")
        assert bad is not None, f"a valid call was refused: {err}"
        assert any(word in str(err) for word in INVALID[bad][1]), (bad, str(err))
        return
    event("ran")
    assert bad is None, f"{bad} was invalid but the run went through"
    n_steps, every = kw["n_steps"], kw["record_every"]
    assert traj.n_draws == n_steps // every + 1
    start = 0 if state is None else state.step
    t0 = 0.0 if state is None else state.time  # a continued run goes on from its own time
    np.testing.assert_allclose(traj.t, t0 + every * np.arange(traj.n_draws) * kw["h"])
    _finite_records(traj)
    final = traj.final_state
    assert final.step == start + n_steps
    assert final.time == pytest.approx(t0 + n_steps * kw["h"], rel=1e-12)
    for name in ("q", "p"):
        values = getattr(final, name)
        values = values.numpy() if isinstance(values, torch.Tensor) else values
        assert np.isfinite(values).all(), name


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_fuzz_found_cases_stay_fixed(backend):
    """Cases fuzzing met: NaN in p0 rows, huge chain counts, seeds ≥ 2⁶⁴, a state of another
    system, and q0 = 1e200 in float32 (was run from q = inf)."""
    lang = SYSTEMS["langevin1"]
    with pytest.raises(ValueError, match="p0 must be finite"):
        dynopt.integrate(lang, None, [0.0], p0=[[np.nan]], h=0.1, n_steps=2, backend=backend)
    with pytest.raises(ValueError, match=r"n_chains=1000000000000 .* lower n_chains"):
        dynopt.integrate(lang, None, [0.0], h=0.1, n_steps=2, n_chains=10**12,
                         backend=backend)
    with pytest.raises(ValueError, match="seed must be <= "):
        dynopt.integrate(lang, None, [0.0], h=0.1, n_steps=2, seed=2**70, backend=backend)
    if backend == "torch":  # finite in float64, inf in float32: refused, not run from inf
        with pytest.raises(ValueError, match=r"q0 value 1e\+200 .* beyond the range of "
                                             r"torch.float32"):
            dynopt.integrate(lang, None, [1e200], h=0.1, n_steps=2, backend="torch",
                             dtype="float32")
    other = dynopt.integrate(SYSTEMS["nhc"], None, [0.0, 0.0], h=0.1, n_steps=1,
                             backend=backend).final_state
    with pytest.raises(ValueError, match="state has dim=2"):
        dynopt.integrate(lang, None, None, h=0.1, n_steps=2, state=other)
