"""dynopt as installed on real machines (session 15's deployment probe): the numba cache root,
``--update-docs`` outside a source checkout, and missing optional or required packages."""

from __future__ import annotations

import pytest

from dynopt.backends.numba import cache


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
