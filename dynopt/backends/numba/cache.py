"""Where numba's on-disk cache lives: keyed to dynopt's version and kernel sources.

Numba checks a cached function against the timestamp and size of *its own* source file only.
The kernels inline functions from other modules (:mod:`.philox` into :mod:`.kernel` and
:mod:`.segment_kernel`, op codes from :mod:`dynopt.program`, ...), so after an edit of such a
dependency, or an upgrade of dynopt over an existing cache, the old machine code would run
silently. :func:`configure` (called by the package ``__init__``, before any ``@njit`` of this
package is decorated) therefore points ``numba.config.CACHE_DIR`` at

    <root>/<dynopt version>-<sha256 of every kernel source>[:16]

so any change of a source the kernels depend on selects a fresh directory (old ones are left
for the user to delete). ``<root>`` is ``$DYNOPT_CACHE_DIR``, else ``$NUMBA_CACHE_DIR``, else
``$XDG_CACHE_HOME/dynopt/numba`` (``~/.cache/dynopt/numba``), made absolute at import.

If no writable directory is available (read-only package and home), caching is switched off
(:data:`CACHE` is False and the decorators of this package pass ``cache=CACHE``): the kernels
are compiled in memory on every run instead of failing with numba's "no locator available".
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

__all__ = ["CACHE", "CACHE_PATH", "cache_key", "configure", "kernel_sources"]

#: The package directory (dynopt/).
PACKAGE = Path(__file__).resolve().parents[2]


def kernel_sources(package: Path = PACKAGE) -> list[Path]:
    """Every source file the cached kernels are compiled from: this package's modules and the
    op codes of :mod:`dynopt.program`."""
    here = package / "backends" / "numba"
    return [*sorted(here.glob("*.py")), package / "program.py"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dynopt")
    except Exception:
        return "0"


def cache_key(package: Path = PACKAGE, version: str | None = None) -> str:
    """``<version>-<16 hex digits>``: the version and a SHA-256 over the kernel sources (path
    relative to the package and contents of each) and ``DYNOPT_VECTOR_WIDTH``."""
    digest = hashlib.sha256()
    for path in kernel_sources(package):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    # a setting the kernels are compiled with (see intrinsics.VECTOR_WIDTH)
    digest.update(f"vector-width={os.environ.get('DYNOPT_VECTOR_WIDTH', '512').strip()}".encode())
    return f"{version if version is not None else _version()}-{digest.hexdigest()[:16]}"


def _root() -> Path:
    """The cache root, absolute: a relative or ``~`` path is resolved once, at import, so that
    a later ``os.chdir`` does not send the kernels compiled after it to another directory
    (numba joins ``CACHE_DIR`` with each function's path when the function is decorated and
    saves relative to the working directory of the moment)."""
    for var in ("DYNOPT_CACHE_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.path.abspath(os.path.expanduser(os.environ[var])))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(os.path.abspath(os.path.expanduser(base))) / "dynopt" / "numba"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def configure() -> Path | None:
    """Point numba's cache at the keyed directory; returns it (None: caching disabled)."""
    import numba

    path = _root() / cache_key()
    if _writable(path):
        numba.config.CACHE_DIR = str(path)
        return path
    warnings.warn(f"dynopt: no writable numba cache directory ({path}); the kernels are "
                  "compiled on every run. Set DYNOPT_CACHE_DIR to a writable directory to "
                  "cache them.", RuntimeWarning, stacklevel=2)
    return None


#: The cache directory in use (None: caching disabled).
CACHE_PATH = configure()
#: Whether the ``@njit`` decorators of this package cache to disk.
CACHE = CACHE_PATH is not None
