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


def test_the_float64_noise_fill_loads_only_for_runs_that_ask_for_it():
    """The ensemble kernel takes its fill as a pointer so that the float64 transform is not
    compiled into the first run on an empty cache (issue 11's cold start): a default numba run
    leaves dynopt.backends.numba.fill_f64 unloaded, a "gaussian-f64" run loads it."""
    script = textwrap.dedent("""
        import sys
        import dynopt
        from dynopt import potentials, systems
        s = systems.Langevin(potentials.DoubleWell(dim=2), gamma=1.0, temperature=0.3)
        for noise in ("gaussian", "discrete", "gaussian-f64"):
            dynopt.integrate(s, "BAOAB", [0.5, 0.5], h=0.05, n_steps=3, n_chains=4, seed=1,
                             noise=noise, backend="numba")
            print(noise, "dynopt.backends.numba.fill_f64" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:3] == ["gaussian False", "discrete False",
                                          "gaussian-f64 True"], out.stdout
