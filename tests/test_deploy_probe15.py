"""dynopt as installed on real machines (session 15's deployment probe): the numba cache root,
``--update-docs`` outside a source checkout, and missing optional or required packages."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from dynopt.backends.numba import cache
from dynopt.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, expected", [("relc", "cwd/relc"), ("~/c", "home/c"),
                                             ("./a/../b", "cwd/b")])
@pytest.mark.parametrize("var", ["DYNOPT_CACHE_DIR", "NUMBA_CACHE_DIR"])
def test_a_relative_or_tilde_cache_dir_is_made_absolute(monkeypatch, tmp_path, var, value,
                                                        expected):
    """Before, DYNOPT_CACHE_DIR=relc stayed relative: numba joins it with each function's path
    when the function is decorated and saves relative to the working directory of that moment,
    so after an os.chdir the lazily imported kernels were cached under another directory (and
    "~/c" made a directory named "~" in the working directory)."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DYNOPT_CACHE_DIR", raising=False)
    monkeypatch.setenv(var, value)
    assert cache._root() == tmp_path / expected


def test_a_relative_xdg_cache_home_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for var in ("DYNOPT_CACHE_DIR", "NUMBA_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "xdg")
    assert cache._root() == tmp_path / "xdg" / "dynopt" / "numba"


@pytest.fixture
def fake_reproduction(monkeypatch):
    """``dynopt reproduce braking`` runs a stand-in that records its call."""
    from dynopt.reproductions import REGISTRY

    calls = []
    mod = types.ModuleType("_fake_reproduction")
    mod.run = lambda args: calls.append(args.update_docs) or 0
    monkeypatch.setitem(sys.modules, "_fake_reproduction", mod)
    monkeypatch.setitem(REGISTRY, "braking", "_fake_reproduction")
    return calls


def test_update_docs_is_refused_before_the_run_without_a_source_checkout(
        monkeypatch, tmp_path, capsys, fake_reproduction):
    """An installed (non-editable) dynopt has no docs/reproductions.md: before, the
    reproduction ran (minutes to hours) and then failed writing into site-packages/docs/."""
    from dynopt.reproductions import report

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.setattr(report, "repo_root", lambda: site)
    rc = main(["reproduce", "braking", "--update-docs", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert fake_reproduction == []
    assert err.count("\n") == 1
    assert f"--update-docs rewrites {site / 'docs' / 'reproductions.md'}, which does not exist" \
        in err
    # without the flag the same installed package runs the reproduction
    assert main(["reproduce", "braking", "--out", str(tmp_path / "out")]) == 0
    assert fake_reproduction == [False]


def test_update_docs_runs_in_a_source_checkout(tmp_path, fake_reproduction):
    from dynopt.reproductions import report

    assert report.docs_path().is_file()  # this checkout
    assert main(["reproduce", "braking", "--update-docs", "--out", str(tmp_path / "o")]) == 0
    assert fake_reproduction == [True]


@pytest.mark.parametrize("adapter, blocked, package", [
    ("lightning", ("pytorch_lightning", "lightning"), "pytorch-lightning"),
    ("huggingface", ("transformers",), "transformers"),
])
def test_an_adapter_without_its_framework_names_the_extra(monkeypatch, adapter, blocked,
                                                          package):
    """Before: the lightning adapter without either Lightning package raised "No module named
    'lightning'" (the fallback it tried last, not the package its docs name)."""
    import dynopt.integrations  # noqa: F401

    for name in blocked:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"dynopt.integrations.{adapter}", raising=False)
    with pytest.raises(ImportError) as info:
        importlib.import_module(f"dynopt.integrations.{adapter}")
    msg = str(info.value)
    assert msg.startswith(f"dynopt.integrations.{adapter} needs {package}, which is not "
                          "installed"), msg
    assert msg.endswith(f"pip install 'dynopt[integrations]' (or pip install {package})"), msg


@pytest.mark.parametrize("module, advice", [
    ("sklearn", "the package scikit-learn is not installed (import 'sklearn' failed): "
                "pip install scikit-learn (a requirement of dynopt: this install is incomplete)"),
    ("arviz", "the package arviz is not installed (import 'arviz' failed): "
              "pip install 'dynopt[integrations]'"),
])
def test_a_command_missing_a_package_says_which_to_install(monkeypatch, capsys, module, advice):
    """Before: a traceback ending in "No module named 'sklearn'" (not the pip name) after the
    run, e.g. ``dynopt study`` without matplotlib failed at its plots."""
    from dynopt.cli import study

    def run(args):
        monkeypatch.setitem(sys.modules, module, None)
        importlib.import_module(module)

    monkeypatch.setattr(study, "run", run)
    assert main(["study"]) == 2
    assert capsys.readouterr().err == f"dynopt study: error: {advice}\n"


def test_a_missing_dynopt_module_is_a_bug_not_a_missing_package(monkeypatch):
    from dynopt.cli import study

    def run(args):
        importlib.import_module("dynopt.no_such_module")

    monkeypatch.setattr(study, "run", run)
    with pytest.raises(ModuleNotFoundError, match="dynopt.no_such_module"):
        main(["study"])


_NO_JIT = """
import numpy as np, dynopt
from dynopt import potentials, systems
s = systems.Langevin(potentials.DoubleWell(dim=2), gamma=1.0, temperature=0.5)
tr = dynopt.integrate(s, "BAOAB", np.zeros((4, 2)), h=0.1, n_steps=20, seed=3, backend="torch")
print(tr.q.shape, bool(np.isfinite(tr.q).all()))
try:
    dynopt.integrate(s, "BAOAB", np.zeros((4, 2)), h=0.1, n_steps=20, seed=3, backend="numba")
except Exception as err:
    print(type(err).__name__, err)
"""


def test_numba_backend_under_numba_disable_jit_says_so():
    """NUMBA_DISABLE_JIT=1 (a debugging setting): before, backend='numba' failed deep inside
    numba with "NotImplementedError: <intrinsic prefer_512_bit_vectors> is not usable in
    pure-python"; now a RuntimeError naming the variable and backend='torch', which runs."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _NO_JIT], capture_output=True, text=True,
                         env=env, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == [
        "(4, 21, 2) True",
        "RuntimeError backend='numba' cannot run with NUMBA_DISABLE_JIT=1 (its kernels use "
        "numba intrinsics and compiled function pointers, which have no pure-Python form): "
        "unset NUMBA_DISABLE_JIT, or use backend='torch'"], out.stdout
