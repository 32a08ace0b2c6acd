"""``import dynopt`` stays light: the optimizers (and torch._dynamo, which torch.compiler.disable
pulls in) load on first use, and every public name still resolves."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_dynopt_does_not_load_the_optimizers():
    script = textwrap.dedent("""
        import sys
        import dynopt
        print(sorted(m for m in ("dynopt.optim", "dynopt.surfing", "dynopt.replicas",
                                 "dynopt.monitor", "torch._dynamo") if m in sys.modules))
        assert dynopt.optim.Langevin.__name__ == "Langevin"
        assert dynopt.TrainingMonitor.__name__ == "TrainingMonitor"
        assert callable(dynopt.replicas.integrate_distributed)
        from dynopt import surfing, TrainingMonitor
        assert "optim" in dir(dynopt)
        try:
            dynopt.no_such_thing
        except AttributeError as e:
            assert "no_such_thing" in str(e)
        else:
            raise AssertionError("missing attribute did not raise")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0] == "[]", out.stdout
    assert lines[-1] == "ok"
