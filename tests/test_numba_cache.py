"""numba's on-disk cache: keyed to the kernel sources, and optional (issue 10, item 9 and
"stale compiled code")."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dynopt.backends.numba import cache
from dynopt.backends.numba.philox import philox4x32

ROOT = Path(__file__).resolve().parents[1]


def _copy_package(dst: Path) -> Path:
    pkg = dst / "dynopt"
    shutil.copytree(ROOT / "dynopt", pkg, ignore=shutil.ignore_patterns("__pycache__", "*.nbi",
                                                                        "*.nbc"))
    return pkg


def test_cache_key_changes_with_every_kernel_source(tmp_path):
    """Catches: a dependency (philox.py inlined into kernel.py, program.py's op codes) left out
    of the key, which let stale machine code run after an edit."""
    pkg = _copy_package(tmp_path)
    base = cache.cache_key(pkg, version="1.0")
    assert base.startswith("1.0-") and len(base) == len("1.0-") + 16
    assert cache.cache_key(pkg, version="1.0") == base  # deterministic
    assert cache.cache_key(pkg, version="1.1") != base  # an upgrade of dynopt
    for rel in ("backends/numba/philox.py", "backends/numba/intrinsics.py", "program.py"):
        path = pkg / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        assert cache.cache_key(pkg, version="1.0") != base, rel
        path.write_bytes(original)
    assert cache.cache_key(pkg, version="1.0") == base
    (pkg / "optim" / "langevin.py").write_text("# not a kernel source\n")
    assert cache.cache_key(pkg, version="1.0") == base


def test_cache_directory_is_keyed():
    if cache.CACHE_PATH is not None:
        assert cache.CACHE_PATH.name == cache.cache_key()
        import numba

        assert str(cache.CACHE_PATH) == numba.config.CACHE_DIR


_READ_ONLY = """
import warnings, numpy as np
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from dynopt.backends.numba import cache
    from dynopt.backends.numba.philox import philox4x32
out = philox4x32(*(np.uint64(v) for v in (1, 2, 3, 4, 5, 6)))
print(cache.CACHE, [int(v) for v in out], any("no writable numba cache" in str(w.message)
                                              for w in caught))
"""


def test_read_only_package_and_home_run_uncached(tmp_path):
    """A copy of the package whose __pycache__ directories cannot be created (a file sits at
    each path) and a HOME/XDG cache under a regular file: numba's locators all fail. Before,
    importing raised "cannot cache function 'philox4x32': no locator available"; now the
    kernels compile uncached, with one warning, and compute the same numbers."""
    pkg = _copy_package(tmp_path)
    for d in [pkg, *(p for p in pkg.rglob("*") if p.is_dir())]:
        (d / "__pycache__").write_text("blocked")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "DYNOPT_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(PYTHONPATH=str(tmp_path), HOME=str(blocked / "home"),
               XDG_CACHE_HOME=str(blocked / "xdg"), PYTHONDONTWRITEBYTECODE="1")
    res = subprocess.run([sys.executable, "-c", _READ_ONLY], capture_output=True, text=True,
                         env=env, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    expected = [int(v) for v in philox4x32(*(np.uint64(v) for v in (1, 2, 3, 4, 5, 6)))]
    assert res.stdout.split("\n")[0] == f"False {expected} True", res.stdout
