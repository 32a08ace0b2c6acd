"""CONTRIBUTING's recipe "add an op", carried out on a copy of the package.

The copy gains a ``SCALE_P`` op (p ← c p) in exactly the places the recipe names: its OpCode
and op-table row in program.py, a branch of ``extended_ops.run_extended_op`` for the numba
kernel, a branch of the torch runner, and a system whose letter lowers to it. No other file is
touched (the numba kernel is not edited). Then both ``integrate()`` backends must run it, and
"BASAB" with S = e^{−γh} must equal Langevin's "BAOAB" at temperature 0 (whose O step is the
same scaling). Slow: the copy compiles the numba kernel from scratch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (file, anchor, replacement): each anchor must exist, so the recipe's places stay true.
EDITS = [
    ("program.py", "    ROTATE = 18\n", "    ROTATE = 18\n    SCALE_P = 19\n"),
    ("program.py",
     "    _C.ROTATE: OpInfo((\"nu\",), (\"k\",), normals=1, amplitude=0, elementwise=False),\n",
     "    _C.ROTATE: OpInfo((\"nu\",), (\"k\",), normals=1, amplitude=0, elementwise=False),\n"
     "    _C.SCALE_P: OpInfo((\"c\",)),\n"),
    ("backends/numba/extended_ops.py",
     "    else:\n        raise ValueError(\"run_extended_op: not an extended op code\")",
     "    elif code == 19:  # SCALE_P\n"
     "        for d in range(P.shape[0]):\n"
     "            for lane in range(nl):\n"
     "                P[d, lane] *= fpar[f]\n"
     "    else:\n        raise ValueError(\"run_extended_op: not an extended op code\")"),
    ("backends/torch/runner.py",
     "                else:  # pragma: no cover - guarded by Program construction",
     "                elif code == OpCode.SCALE_P:\n"
     "                    p.mul_(op.f[0])\n"
     "                else:  # pragma: no cover - guarded by Program construction"),
]

SCRIPT = textwrap.dedent("""
    import math
    import sys

    import numpy as np

    import dynopt
    from dynopt import potentials as P, systems as S
    from dynopt.program import Op, OpCode

    assert "SCALE_P" in OpCode.__members__, dynopt.__file__

    class Damped(S.Langevin):
        letters = {**S.Langevin.letters, "S": "p <- exp(-gamma t) p"}

        def _lower(self, letter, t):
            if letter == "S":
                return Op(OpCode.SCALE_P, (math.exp(-self.gamma * t),), letter=letter)
            return super()._lower(letter, t)

    pot = P.DoubleWell(dim=2)
    q0 = np.array([[0.9, -0.3], [-1.1, 0.2], [0.1, 0.5]])
    kw = dict(h=0.05, n_steps=50, seed=3, p0=0.5 * q0, record_every=10)
    out = {}
    for backend in ("numba", "torch"):
        new = dynopt.integrate(Damped(pot, gamma=0.7, temperature=0.0), "BASAB", q0,
                               backend=backend, **kw)
        ref = dynopt.integrate(S.Langevin(pot, gamma=0.7, temperature=0.0), "BAOAB", q0,
                               backend=backend, **kw)
        assert np.array_equal(new.q, ref.q), (backend, np.abs(new.q - ref.q).max())
        assert np.array_equal(new.p, ref.p), backend
        out[backend] = new
    np.testing.assert_allclose(out["numba"].q, out["torch"].q, rtol=0, atol=1e-12)
    assert np.abs(out["numba"].p).max() > 0.01  # it moved
    print("extended_ops loaded:", "dynopt.backends.numba.extended_ops" in sys.modules)
""")


@pytest.mark.slow
def test_add_an_op_as_contributing_says(tmp_path):
    pkg = tmp_path / "dynopt"
    shutil.copytree(ROOT / "dynopt", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, anchor, replacement in EDITS:
        path = pkg / rel
        text = path.read_text()
        assert text.count(anchor) == 1, (rel, anchor)
        path.write_text(text.replace(anchor, replacement))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DYNOPT_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "extended_ops loaded: True" in done.stdout
    # the kernel module itself was not edited
    assert (pkg / "backends/numba/kernel.py").read_text() == (
        ROOT / "dynopt/backends/numba/kernel.py").read_text()
