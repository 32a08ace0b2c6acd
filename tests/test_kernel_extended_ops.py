"""The kernel's split into inline ops and extended ops (compiled only when a program uses one)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from dynopt.backends.numba.kernel import EXTENDED_CODES, INLINE_CODES
from dynopt.program import OPS, OpCode

ROOT = Path(__file__).resolve().parents[1]


def test_every_op_is_inline_or_extended_exactly_once():
    assert INLINE_CODES | EXTENDED_CODES == set(OpCode) == set(OPS)
    assert not INLINE_CODES & EXTENDED_CODES
    # the schemes every study uses stay inline (their cold compile must not include the rest)
    assert {OpCode.DRIFT, OpCode.KICK, OpCode.OU, OpCode.GRAD_STEP} <= INLINE_CODES


def test_extended_ops_are_loaded_only_by_programs_that_use_them():
    """A Langevin BAOAB run never imports (so never compiles) extended_ops; a Nosé–Hoover-chain
    run does, and both give finite results."""
    script = textwrap.dedent("""
        import sys
        import numpy as np
        import dynopt
        from dynopt import potentials as P, systems as S
        well = P.DoubleWell(dim=2)
        t = dynopt.integrate(S.Langevin(well, gamma=1.0, temperature=0.5), "BAOAB",
                             np.zeros((8, 2)), h=0.05, n_steps=20, seed=1, backend="numba")
        assert np.isfinite(t.final_state.q).all()
        print("after langevin:", "dynopt.backends.numba.extended_ops" in sys.modules)
        t = dynopt.integrate(S.NoseHooverChain(well, temperature=0.5), "TBABT",
                             np.zeros((8, 2)), h=0.05, n_steps=20, seed=1, backend="numba")
        assert np.isfinite(t.final_state.q).all()
        print("after nhc:", "dynopt.backends.numba.extended_ops" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "after langevin: False" in out.stdout
    assert "after nhc: True" in out.stdout


def test_extended_op_call_does_no_reference_counting(monkeypatch):
    """The kernel passes the extended op its arrays as views without a memory info
    (``kernel._borrowed``), so a call counts no references: numba increments and decrements
    the count of every array argument of a separately compiled function that has a memory
    info, an atomic write and a call per array and call (the block's eight buffers cost a
    16-chain Nosé–Hoover run 25–40 %). A probe with the extended-op signature counts the
    arrays it gets that carry a memory info (none; 8 before the fix), and writes through its
    views into the kernel's own buffers (the extras it stores back)."""
    import numba as nb
    import numpy as np
    from numba import types
    from numba.core import cgutils
    from numba.core.extending import intrinsic

    import dynopt
    from dynopt.backends.numba import runner
    from dynopt.backends.numba.kernel import EXTENDED_SIG
    from dynopt.potentials import Harmonic

    @intrinsic
    def counted(typingctx, ary):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            a = context.make_array(signature.args[0])(context, builder, value=args[0])
            return cgutils.is_not_null(builder, a.meminfo)

        return types.boolean(ary), codegen

    @nb.njit(EXTENDED_SIG)
    def probe(code, Q, P, X, G, Z, zb, nl, c0, step, fpar, f, ipar, i0, minv, sqrtm,  # type: ignore[no-untyped-def]
              n_dof, pot_kind, pot_par, value_fn, tq, tmp, tmp2, key0, key1):
        n = 0
        for has in (counted(Q), counted(P), counted(X), counted(G), counted(Z), counted(fpar),
                    counted(ipar), counted(minv), counted(sqrtm), counted(pot_par),
                    counted(tq), counted(tmp), counted(tmp2)):
            n += has
        for lane in range(nl):
            X[0, lane] = n
            X[1, lane] = c0 + lane

    monkeypatch.setattr(runner, "_extended_ops", lambda codes: probe)
    system = dynopt.systems.NoseHoover(Harmonic(1.0), temperature=1.0)
    out = dynopt.integrate(system, None, np.zeros((40, 1)), h=0.05, n_steps=3, seed=0,
                           backend="numba").final_state.x
    np.testing.assert_array_equal(out[:, 0], np.zeros(40))  # no array with a reference count
    np.testing.assert_array_equal(out[:, 1], np.arange(40.0))  # the views alias the buffers
