"""``dynopt compile``: fills the numba cache ahead of first use, refuses without a cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _compile(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dynopt", "compile", *args],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, **(env or {})})


def test_compile_fills_the_cache_directory_it_reports():
    out = _compile("--only", "integrate", "--only", "extended")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["integrate", "extended", "total"]
    cache = Path(lines[-1].split("cache: ")[1])
    names = {p.name for p in cache.rglob("*.nbi")}
    assert any(n.startswith("kernel.run_block_kernel") for n in names), sorted(names)[:10]
    assert any(n.startswith("extended_ops.run_extended_op") for n in names), sorted(names)[:10]


def test_compile_refuses_without_a_writable_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = _compile("--only", "extended", env={"DYNOPT_CACHE_DIR": str(blocker / "cache")})
    assert out.returncode == 2
    assert "no writable numba cache directory" in out.stderr
    assert out.stdout == ""


def test_compile_rejects_an_unknown_part():
    out = _compile("--only", "everything")
    assert out.returncode == 2
    assert "invalid choice: 'everything'" in out.stderr
