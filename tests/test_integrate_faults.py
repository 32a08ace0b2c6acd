"""integrate() under faults and hostile input (issue 10, items 1 and 6).

Each test names the one-line bug it catches: a state from another system reaching the kernel,
a divergence detected only in q (one step late), a non-finite record in err.trajectory, the
time axis computed from the end instead of the start, 64-bit seed aliasing, allocation before
the size check, a silently broadcast custom potential and a swallowed numba exception.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np
import pytest

import dynopt
from dynopt import potentials as P
from dynopt import systems as S
from dynopt.errors import DivergenceError

integrate_module = importlib.import_module("dynopt.integrate")
BACKENDS = ["numba", "torch"]


def _linear_force(q, out):
    out[0] = q[0]


#: The harmonic force (∇U = q) with U = 0 recorded: its runs overflow in q or p, never in U
#: (integrate() also stops at a non-finite recorded U, which q²/2 reaches at |q| ≈ 1.3e154).
FORCE_ONLY = P.Custom(1, value=lambda q: 0.0 * q[..., 0], grad=lambda q: 1.0 * q,
                      numba_value=lambda q: 0.0, numba_grad=_linear_force, name="force-only")
LANGEVIN = S.Langevin(P.DoubleWell(dim=2), gamma=1.0, temperature=0.5)
LANGEVIN_1D = S.Langevin(P.DoubleWell(), gamma=1.0, temperature=0.5)


def _state(backend: str):
    return dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.1, n_steps=2, n_chains=3,
                            seed=1, backend=backend).final_state


# --- item 1: a state from another system never reaches a kernel --------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("system", "message"),
    [
        (S.Langevin(P.DoubleWell(dim=3)), r"state has dim=2 .* has dim=3; the state belongs"),
        (S.Langevin(P.DoubleWell(dim=1)), r"state has dim=2 .* has dim=1"),
        (S.NoseHooverChain(P.DoubleWell(dim=2)), r"state.x has shape \(3, 0\) .* needs \(3, 6\)"),
        (S.AdaptiveLangevin(P.DoubleWell(dim=2)), r"state.x has shape \(3, 0\) .* needs \(3, 1\)"),
        (S.OverdampedLangevin(P.DoubleWell(dim=2)), r"state.p has shape \(3, 2\) .* needs \(3, 0\)"),
    ],
)
def test_state_of_another_system_is_refused_before_any_kernel(backend, system, message):
    state = _state(backend)
    before = dynopt.stepping.State.copy(state)
    with pytest.raises(ValueError, match=message):
        dynopt.integrate(system, None, None, h=0.1, n_steps=5, state=state)
    with pytest.raises(ValueError, match=message):
        dynopt.stepping.run(system, dynopt.integrators.resolve(system.default_scheme), state,
                            n_steps=5, h=0.1)
    conv = (lambda a: a.numpy()) if backend == "torch" else np.asarray
    np.testing.assert_array_equal(conv(state.q), conv(before.q))  # untouched


@pytest.mark.parametrize(
    ("mutate", "exc", "message"),
    [
        (lambda s: setattr(s, "q", s.q.astype(np.float32)), ValueError,
         "state.q must be a writable C-contiguous float64 array"),
        (lambda s: setattr(s, "p", np.zeros((2, 3)).T), ValueError,
         "state.p must be a writable C-contiguous float64"),
        (lambda s: setattr(s, "x", [[0.0]] * 3), TypeError, "state.x must be a numpy array"),
        (lambda s: setattr(s, "q", s.q[:, :, None]), ValueError, "state.q must be 2-D"),
        (lambda s: s.p.__setitem__((1, 0), np.nan), ValueError, "state.p holds non-finite"),
        (lambda s: setattr(s, "seed", 2**64), ValueError, "state.seed must be <= "),
        (lambda s: setattr(s, "step", -1), ValueError, "state.step must be >= 0, got -1"),
        (lambda s: setattr(s, "backend", "jax"), ValueError, "state.backend must be one of"),
    ],
)
def test_malformed_state_is_refused(mutate, exc, message):
    state = _state("numba")
    mutate(state)
    with pytest.raises(exc, match=message):
        dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=5, state=state)


def test_state_argument_must_be_a_state():
    with pytest.raises(TypeError, match="state must be a dynopt State"):
        dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=1, state={"q": [0.0]})


def _kernel_args(C=3, D=2, Dp=2, E=0, R=4, n_steps=3):
    from dynopt.backends.numba.kernel import no_extended_ops
    from dynopt.backends.numba.philox import fill_lanes
    from dynopt.backends.numba.potentials import dummy_grad, dummy_value

    prog = dynopt.integrators.resolve("BAOAB").program(LANGEVIN, 0.1)
    codes, fstart, fpar, istart, ipar = prog.pack()
    return dict(
        q=np.zeros((C, D)), p=np.zeros((C, Dp)), x=np.zeros((C, E)), minv=np.ones(D),
        sqrtm=np.ones(D), codes=codes, fstart=fstart, fpar=fpar, istart=istart, ipar=ipar,
        kind=2, par=np.zeros(1), vfn=dummy_value, gfn=dummy_grad, ext=no_extended_ops,
        fill=fill_lanes, k0=np.uint64(1),
        k1=np.uint64(2), noise=0, step0=0, n_steps=n_steps, every=1, start=1,
        rq=np.zeros((C, R, D)), rp=np.zeros((C, R, Dp)), rx=np.zeros((C, R, E)),
        ru=np.zeros((C, R)), status=np.zeros((1, 3), dtype=np.int64), lanes=64)


def _grouped(a: dict) -> tuple:
    """The kernel's grouped arguments (see dynopt.backends.numba.kernel) from the flat dict."""
    return ((a["q"], a["p"], a["x"]), (a["minv"], a["sqrtm"]),
            (a["codes"], a["fstart"], a["fpar"], a["istart"], a["ipar"]), (a["kind"], a["par"]),
            a["vfn"], a["gfn"], a["ext"], a["fill"], (a["k0"], a["k1"], a["noise"]),
            (a["step0"], a["n_steps"], a["every"], a["start"], a["lanes"]),
            (a["rq"], a["rp"], a["rx"], a["ru"]), a["status"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"p": np.zeros((2, 2))}, "same number of rows"),
        ({"minv": np.ones(5)}, "minv and sqrtm"),
        ({"p": np.zeros((3, 1))}, "p must have q.shape"),
        ({"rq": np.zeros((3, 2, 2))}, "record arrays too small"),
        ({"rx": np.zeros((3, 4, 1))}, "record arrays too small"),
        ({"status": np.zeros((0, 2), dtype=np.int64)}, "status needs"),
        ({"fstart": np.zeros(1, dtype=np.int64)}, "fstart and istart"),
        ({"every": 0}, "record_every >= 1"),
        ({"lanes": 0}, "lanes >= 1"),
        ({"lanes": 1}, "status needs"),  # 3 blocks of 1 chain, one status row
    ],
)
def test_numba_kernel_entry_checks_its_buffers(change, message):
    """Called directly with inconsistent buffers, the kernel raises instead of corrupting."""
    from dynopt.backends.numba.kernel import run_block_kernel

    args = _kernel_args()
    args.update(change)
    with pytest.raises(ValueError, match=message):
        run_block_kernel(*_grouped(args))
    args = _kernel_args(Dp=0, R=4)  # a momentum op (BAOAB) on a first-order state
    with pytest.raises(ValueError, match="momentum op on a state without momenta"):
        run_block_kernel(*_grouped(args))


def test_numba_advance_checks_the_program_extras():
    state = _state("numba")
    nhc = S.NoseHooverChain(P.DoubleWell(dim=2))
    program = dynopt.integrators.resolve(nhc.default_scheme).program(nhc, 0.1)
    be = dynopt.backends.get_backend("numba")
    with pytest.raises(ValueError, match="state.x has 0 extras per chain but the program"):
        be.advance(nhc, program, state, 3, None)


# --- item 6: divergence timing and what the error carries --------------------------------------

# "AB" ends each step with a kick: at q = 1e150 on U = q²/2 (h = 1e160) the first kick sends p
# to -inf while q (and U) are still finite; q only overflows in the drift of step 2.
OVERFLOW = {"q0": [1e150], "p0": [0.0], "h": 1e160}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_steps", [1, 6])
def test_divergence_in_the_momenta_is_reported_at_its_step(backend, n_steps):
    ham = S.Hamiltonian(P.Harmonic())
    with pytest.raises(DivergenceError, match="diverged at step 1 ") as info:
        dynopt.integrate(ham, "AB", OVERFLOW["q0"], p0=OVERFLOW["p0"], h=OVERFLOW["h"],
                         n_steps=n_steps, backend=backend)
    err = info.value
    assert err.step == 1 and err.chain == 0
    partial = err.trajectory
    assert partial.n_draws == 1  # only the initial record precedes step 1
    assert np.isfinite(partial.q).all() and np.isfinite(partial.p).all()
    assert np.isfinite(partial.energy).all()
    assert partial.final_state is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_on_the_last_step_in_a_chunk_of_many(backend):
    """A NaN in p on the final step of a 3-step run of 70 chains (2 numba blocks): raised, the
    chain is the right one and the two finite records are kept."""
    ham = S.Hamiltonian(FORCE_ONLY)
    q0 = np.zeros((70, 1))
    q0[41] = 1e304  # p: -1e305, 9.8e306, -inf at step 3 while q stays finite (9.7e307)
    with pytest.raises(DivergenceError, match="diverged at step 3 ") as info:
        dynopt.integrate(ham, "AB", q0, p0=np.zeros((70, 1)), h=10.0, n_steps=3,
                         backend=backend)
    err = info.value
    assert (err.step, err.chain) == (3, 41)
    assert err.trajectory.n_draws == 3
    assert np.isfinite(err.trajectory.p).all()


@pytest.mark.filterwarnings("ignore:overflow")
def test_divergence_of_a_minibatch_run_is_replayed_on_its_own_batches():
    """The torch replay that names the diverging step used the chunk's first minibatch for
    every step: it reported step 23 here (true: 38) with wrong records (and, for other
    lengths, ended in a bare AssertionError). Leapfrog in float32 on a linear model whose two
    batches have curvatures 0.5 and 200: h = 0.7 is stable on one, not on the other."""
    import torch

    x = torch.cat([torch.full((5, 1), 0.5), torch.full((5, 1), 10.0)])
    torch.manual_seed(0)
    loss = P.NetworkLoss(torch.nn.Linear(1, 1, bias=False), torch.nn.MSELoss(),
                         (x, torch.zeros(10, 1)), batch_size=1, seed=3)
    ham = S.Hamiltonian(loss)
    kw = dict(p0=[0.0], h=0.7, seed=0, dtype="float32")
    reference = dynopt.integrate(ham, "BAB", [1.0], n_steps=16, **kw)  # before it diverges
    for n_steps in (200, 47):
        # the loss (recorded every step) overflows float32 at step 17, θ's momentum at 38
        with pytest.raises(DivergenceError, match="potential energy of chain 0") as info:
            dynopt.integrate(ham, "BAB", [1.0], n_steps=n_steps, **kw)
        err = info.value
        assert err.step == 17
        np.testing.assert_array_equal(err.trajectory.q, reference.q)
        assert np.isfinite(err.trajectory.extras["potential"]).all()
        assert err.trajectory.n_draws == 17
        with pytest.raises(DivergenceError, match="non-finite state") as info:
            dynopt.integrate(ham, "BAB", [1.0], n_steps=n_steps, record_every=100, **kw)
        assert info.value.step == 38 and info.value.trajectory.n_draws == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_diverging_chain_of_a_step_is_reported_and_signs_do_not_count(backend):
    """Chains 5 (negative side) and 41 overflow on step 3, chain 60 one step later, and every
    other chain sits at a negative q (its q·0 is −0.0, which is not a divergence): chain 5 at
    step 3 is reported, the first of the step's diverging chains in a block of 70."""
    ham = S.Hamiltonian(FORCE_ONLY)
    q0 = np.full((70, 1), -2.0)
    q0[5], q0[41], q0[60] = -1e304, 1e304, 1e303
    with pytest.raises(DivergenceError, match="diverged at step 3 ") as info:
        dynopt.integrate(ham, "AB", q0, p0=np.zeros((70, 1)), h=10.0, n_steps=6,
                         backend=backend)
    assert (info.value.step, info.value.chain) == (3, 5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_static_chains_at_the_largest_floats_do_not_diverge(backend):
    """Two chains at rest at q = 1e308 on a flat potential: nothing changes, nothing raises
    (a check that sums the coordinates overflows to inf here)."""
    flat = S.Hamiltonian(P.Custom(1, value=lambda q: 0.0 * q[..., 0],
                                  grad=lambda q: 0.0 * q,
                                  numba_value=lambda q: 0.0,
                                  numba_grad=_zero_grad))
    traj = dynopt.integrate(flat, "BAB", [1e308], p0=[0.0], n_chains=2, h=0.1, n_steps=4,
                            backend=backend)
    np.testing.assert_array_equal(traj.q[:, -1], np.full((2, 1), 1e308))


def _zero_grad(q, out):
    out[0] = 0.0


# --- item 6: the time axis ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_time_axis_is_step_times_h_when_n_steps_is_not_a_multiple(backend):
    traj = dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.1, n_steps=10, record_every=3,
                            n_chains=2, seed=4, backend=backend)
    np.testing.assert_allclose(traj.t, [0.0, 0.3, 0.6, 0.9], rtol=0, atol=1e-15)
    assert traj.final_state.step == 10
    # resume: records at steps 10, 12, 14 -> t continues from the state's step
    more = dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=5, record_every=2,
                            state=traj.final_state)
    np.testing.assert_allclose(more.t, [1.0, 1.2, 1.4], rtol=0, atol=1e-15)
    assert more.final_state.step == 15
    # the resumed run's first record is the previous final state
    conv = (lambda a: a.numpy()) if backend == "torch" else np.asarray
    np.testing.assert_array_equal(more.q[:, 0], conv(traj.final_state.q))


def test_time_axis_of_a_partial_trajectory_after_resume():
    ham = S.Hamiltonian(P.Harmonic())
    first = dynopt.integrate(ham, "BAB", [1.0], p0=[0.0], h=2.5, n_steps=2)
    with pytest.raises(DivergenceError) as info:
        dynopt.integrate(ham, "BAB", None, h=2.5, n_steps=2000, record_every=4,
                         state=first.final_state)
    partial = info.value.trajectory
    np.testing.assert_allclose(partial.t, (2 + 4 * np.arange(partial.n_draws)) * 2.5)
    assert partial.t[-1] < info.value.step * 2.5


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_resumed_at_another_step_size_continues_its_time(backend):
    """Burn-in at h = 0.1, then h = 0.01: the time axis goes on from t = 10 (it restarted
    at 100 × 0.01 = 1.0), in the records, the final state and a divergence message."""
    burn = dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.1, n_steps=100, seed=0,
                            backend=backend)
    assert burn.final_state.time == pytest.approx(10.0, abs=1e-12)
    fine = dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.01, n_steps=100, record_every=50,
                            state=burn.final_state)
    np.testing.assert_allclose(fine.t, [10.0, 10.5, 11.0], rtol=1e-12)
    assert fine.final_state.time == pytest.approx(11.0, rel=1e-12)
    stepped = dynopt.stepping.run(LANGEVIN, dynopt.integrators.BAOAB(), fine.final_state,
                                  n_steps=10, h=0.2)
    assert stepped.time == pytest.approx(13.0, rel=1e-12)
    ham = S.Hamiltonian(P.Harmonic())
    first = dynopt.integrate(ham, "BAB", [1.0], p0=[0.0], h=0.1, n_steps=10, backend=backend)
    with pytest.raises(DivergenceError) as info:
        dynopt.integrate(ham, "BAB", None, h=2.5, n_steps=2000, state=first.final_state)
    step = info.value.step
    assert f"step {step} (t = {1.0 + (step - 10) * 2.5:.6g})" in str(info.value)


# --- item 6: seeds, sizes, user potentials -----------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_seeds_of_more_than_64_bits_are_refused(backend):
    with pytest.raises(ValueError, match=r"seed must be <= 18446744073709551615, got 18446744073709551621"):
        dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=1, seed=2**64 + 5,
                         backend=backend)
    top = dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=2, seed=2**64 - 1,
                           backend=backend)
    other = dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=2, seed=5,
                             backend=backend)
    assert top.seed == 2**64 - 1 and np.isfinite(top.q).all()
    assert not np.array_equal(top.q, other.q)


def test_huge_n_chains_is_refused_before_allocating():
    """3·10⁹ chains would need > 700 GiB: refused by arithmetic, with a hint that fits."""
    with pytest.raises(ValueError, match=r"n_chains=3000000000 .* lower n_chains to at most "
                                         r"\d+") as info:
        dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=3, n_chains=3 * 10**9)
    fit = int(str(info.value).split("at most ")[1].split()[0])
    assert integrate_module.check_memory(LANGEVIN, fit, 2, 3, 1) <= (
        integrate_module.MAX_RECORD_BYTES)
    with pytest.raises(ValueError):
        integrate_module.check_memory(LANGEVIN, fit + 1, 2, 3, 1)


def test_memory_hint_names_a_record_every_that_fits(monkeypatch):
    monkeypatch.setattr(integrate_module, "MAX_RECORD_BYTES", 2_000_000)
    with pytest.raises(ValueError, match=r"raise record_every to at least (\d+) \(got 1\)") as info:
        dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=10_000, n_chains=100)
    every = int(str(info.value).split("at least ")[1].split()[0])
    assert every > 1
    traj = dynopt.integrate(LANGEVIN, "BAOAB", [0.0, 0.0], h=0.1, n_steps=10_000, n_chains=100,
                            record_every=every, seed=0)
    assert traj.n_draws == 10_000 // every + 1


def test_wrongly_shaped_custom_potential_is_an_error_on_torch():
    bad_value = P.Custom(2, value=lambda q: (q**2).sum(-1, keepdim=True))  # (C, 1), not (C,)
    sys_v = S.Langevin(bad_value, temperature=0.1)
    with pytest.raises(ValueError, match=r"value= of potential 'custom' \(dim=2\) returned "
                                         r"shape \(4, 1\), expected \(4,\)"):
        dynopt.integrate(sys_v, "BAOAB", [0.0, 0.0], h=0.1, n_steps=2, n_chains=4,
                         backend="torch")
    bad_grad = P.Custom(2, value=lambda q: (q**2).sum(-1), grad=lambda q: 2 * q[..., :1])
    sys_g = S.Langevin(bad_grad, temperature=0.1)
    with pytest.raises(ValueError, match=r"grad= of potential 'custom' \(dim=2\) returned "
                                         r"shape \(4, 1\), expected \(4, 2\)"):
        dynopt.integrate(sys_g, "BAOAB", [0.0, 0.0], h=0.1, n_steps=2, n_chains=4,
                         backend="torch")


def _raising_grad(q, out):
    if q[0] > 0.5:
        raise ValueError("gradient undefined beyond 0.5")
    out[0] = q[0]


def _plain_value(q):
    return 0.5 * q[0] * q[0]


def test_raising_numba_gradient_gives_a_clear_error():
    pot = P.Custom(1, numba_value=_plain_value, numba_grad=_raising_grad)
    ham = S.Hamiltonian(pot)
    with pytest.raises(RuntimeError, match=r"numba_grad= of potential 'custom' raised an "
                                           r"exception at or before step 1 \(chain 0\)") as info:
        dynopt.integrate(ham, "BAB", [1.0], p0=[0.0], h=0.1, n_steps=3)
    assert isinstance(info.value.__cause__, ValueError)
    assert "gradient undefined beyond 0.5" in str(info.value.__cause__)
    # the same function is fine where it does not raise
    traj = dynopt.integrate(ham, "BAB", [0.1], p0=[0.0], h=0.1, n_steps=3)
    assert np.isfinite(traj.q).all()


def _square(q):
    return q[0] * q[0]


def _square_grad(q, out):
    out[0] = 2.0 * q[0]


def test_custom_potentials_add_no_compiled_versions_of_the_cached_kernels():
    """User functions enter the cached kernels as first-class function *types*: a version
    specialized on one user's dispatcher would be pickled into the shared on-disk cache index
    with a reference to the user's module, and every later process without that module would
    fail to load any kernel (ModuleNotFoundError from numba's cache)."""
    from dynopt.backends.numba import kernel, potentials

    for value, grad in ((_square, _square_grad), (_plain_value, _raising_grad)):
        pot = P.Custom(1, numba_value=value, numba_grad=grad)
        dynopt.integrate(S.Langevin(pot), "BAOAB", [0.1], h=0.1, n_steps=2, seed=0)
    for fn in (kernel.run_block_kernel, kernel.potential_values, kernel.potential_grads):
        assert len(fn.signatures) == 1, fn
    for fn in (potentials.grad_block, potentials.value_lane):
        assert not any("Dispatcher" in repr(sig) for sig in fn.signatures), fn


def test_init_refuses_a_huge_state_before_allocating():
    scheme = dynopt.integrators.resolve("BAOAB")
    with pytest.raises(ValueError, match=r"n_chains=10000000000 x 1 records .* lower n_chains"):
        scheme.init(LANGEVIN, [0.0, 0.0], n_chains=10**10, seed=0)


def test_numba_potential_values_checks_the_dimension():
    be = dynopt.backends.get_backend("numba")
    system = S.Langevin(P.Harmonic([1.0, 2.0], dim=2))
    np.testing.assert_allclose(be.potential_values(system, np.ones((3, 2))), [2.5] * 3)
    with pytest.raises(ValueError, match=r"q has shape \(3, 3\); Harmonic.* needs \(chains, 2\)"):
        be.potential_values(system, np.ones((3, 3)))


# --- state= fixes the run's settings ------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("name", "value"), [("seed", 5), ("noise", "discrete"),
                                             ("noise", "gaussian-f64"), ("n_chains", 3),
                                             ("dtype", "float32")])
def test_arguments_that_conflict_with_the_state_are_refused_by_name(backend, name, value):
    """A continued run ignoring seed=5 or noise='discrete' would silently not be the run asked
    for: each such argument that disagrees with the state is a ValueError naming it."""
    first = dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.1, n_steps=3, n_chains=2,
                             seed=1, backend=backend)
    with pytest.raises(ValueError, match=f"{name}={value!r} conflicts with state="):
        dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=3, state=first.final_state,
                         **{name: value})


@pytest.mark.parametrize("backend", BACKENDS)
def test_arguments_that_agree_with_the_state_are_accepted(backend):
    first = dynopt.integrate(LANGEVIN, "BAOAB", [0.1, 0.2], h=0.1, n_steps=3, n_chains=2,
                             seed=1, backend=backend)
    other = "torch" if backend == "numba" else "numba"
    with pytest.raises(ValueError, match=f"backend='{other}' conflicts"):
        dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=3, state=first.final_state,
                         backend=other)
    same = dynopt.integrate(LANGEVIN, "BAOAB", [9.0, 9.0], h=0.1, n_steps=3,
                            state=first.final_state, seed=1, backend=backend, noise="gaussian",
                            n_chains=2, dtype="float64", device="cpu")
    plain = dynopt.integrate(LANGEVIN, "BAOAB", None, h=0.1, n_steps=3, state=first.final_state)
    np.testing.assert_array_equal(same.q, plain.q)  # q0 is not read when state= is given


def test_chain_ids_from_2_to_the_32_are_refused():
    """On the CPU chain streams are a bijection of c modulo 2³²: ids c and c + 2³² drew the
    same path (the docstring promises each chain its own generator)."""
    with pytest.raises(ValueError, match=r"chain_ids must be below 2\*\*32, got 4294967296"):
        dynopt.integrate(LANGEVIN_1D, "BAOAB", [0.0], h=0.1, n_steps=2, seed=0, backend="torch",
                         chain_ids=[0, 2**32])
    tr = dynopt.integrate(LANGEVIN_1D, "BAOAB", [0.0], h=0.1, n_steps=2, seed=0, backend="torch",
                          chain_ids=[0, 2**32 - 1])
    assert not np.array_equal(tr.q[0], tr.q[1])


def test_cpu_0_continues_a_cpu_run():
    """'cpu' and 'cpu:0' are the one CPU device; a state made with device='cpu:0' was refused
    when continued with the same device='cpu:0'."""
    tr = dynopt.integrate(LANGEVIN_1D, "BAOAB", [0.0], h=0.1, n_steps=2, seed=0, backend="torch",
                          device="cpu:0")
    more = dynopt.integrate(LANGEVIN_1D, "BAOAB", None, h=0.1, n_steps=2, backend="torch",
                            device="cpu:0", state=tr.final_state)
    assert more.final_state.step == 4


def test_a_system_without_a_potential_is_named_before_the_backend():
    """The default backend comes from the potential: without one the error blamed
    backend=None (the documented default) instead of the missing potential."""
    with pytest.raises(ValueError, match="Langevin needs a potential to be integrated"):
        dynopt.integrate(dynopt.systems.Langevin(None, gamma=1.0, temperature=0.3), "BAOAB",
                         [0.0], h=0.1, n_steps=1)


@pytest.mark.parametrize("field, value, match", [
    ("time", float("nan"), "state.time must be finite"),
    ("h", 0.0, "state.h must be > 0"),
    ("h", -0.1, "state.h must be > 0"),
])
def test_a_state_with_a_bad_time_or_step_size_is_refused(field, value, match):
    """A NaN state.time gave a continued run t = [nan, ...] silently."""
    tr = dynopt.integrate(LANGEVIN_1D, "BAOAB", [0.0], h=0.1, n_steps=2, seed=0)
    state = dataclasses.replace(tr.final_state, **{field: value})
    with pytest.raises(ValueError, match=match):
        dynopt.integrate(LANGEVIN_1D, "BAOAB", None, h=0.1, n_steps=1, state=state)


def test_a_scalar_p0_is_one_coordinate_like_a_scalar_q0():
    a = dynopt.integrate(LANGEVIN_1D, "BAOAB", 0.5, p0=0.25, h=0.1, n_steps=3, n_chains=2, seed=1)
    b = dynopt.integrate(LANGEVIN_1D, "BAOAB", [[0.5], [0.5]], p0=[[0.25], [0.25]], h=0.1,
                         n_steps=3, seed=1)
    np.testing.assert_array_equal(a.q, b.q)
    assert a.p[0, 0, 0] == 0.25


def test_zero_steps_do_not_set_the_last_step_size():
    """State.h is "the size of the last step taken (None before the first)"; a 0-step run set
    it, so a later step() without h reused it instead of asking for one."""
    tr = dynopt.integrate(LANGEVIN_1D, "BAOAB", [0.0], h=0.3, n_steps=0, seed=0)
    assert tr.final_state.h is None
    state = dynopt.stepping.init(LANGEVIN_1D, dynopt.integrators.resolve("BAOAB"), [0.0], seed=0)
    after = dynopt.stepping.run(LANGEVIN_1D, dynopt.integrators.resolve("BAOAB"), state,
                                n_steps=0, h=0.3)
    assert after.h is None
