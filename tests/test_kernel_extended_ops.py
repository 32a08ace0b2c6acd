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
