"""The repository is ruff clean (the project's style rule, ``ruff.toml``), checked on CI.

``ruff`` is pinned in the ``dev`` extra, which ``.ci/setup.sh`` installs, so a new ruff release
cannot add rules under a passing commit; without ruff the test is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str | None:
    """The ruff executable of this interpreter's environment, else one on PATH."""
    local = Path(sys.executable).with_name("ruff")
    return str(local) if local.exists() else shutil.which("ruff")


def _pinned() -> str:
    """The ruff version the ``dev`` extra of setup.cfg pins."""
    found = re.search(r"^\s*ruff==(\S+)\s*$", (ROOT / "setup.cfg").read_text(), re.MULTILINE)
    assert found, "setup.cfg's dev extra must pin ruff (ruff==X.Y.Z)"
    return found.group(1)


def test_every_python_file_of_the_repository_is_ruff_clean() -> None:
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    version = subprocess.run([ruff, "--version"], capture_output=True, text=True).stdout.split()
    if version[-1:] != [_pinned()]:  # another release may have other rules
        pytest.skip(f"{ruff} is {' '.join(version)}, not the pinned {_pinned()}")
    out = subprocess.run([ruff, "check", "--no-cache", "dynopt", "tests", "benchmarks",
                          "examples", "setup.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
