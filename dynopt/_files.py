"""Output files of the command line and the reproductions: checked folders, atomic writes.

A long run must never end by failing to write its result (the folder is checked before any
work), and a result file is never left half-written (written to a temporary file in the same
folder, then renamed over the target with :func:`os.replace`, which is atomic on POSIX and
Windows).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_text", "prepare_output_dir", "remove_stale", "write_text_atomic"]


def prepare_output_dir(path: str | os.PathLike[str], name: str = "out", *,
                       sub: str | None = None) -> Path:
    """Create ``path`` (or its subfolder ``sub``), with parents, and check that files can be
    written there.

    Raises:
        ValueError: Naming ``name`` and the path, if ``path`` is empty (an unset shell variable
            would otherwise put the results in the current folder; pass ``.`` for that), or if
            the folder cannot be created or written.
    """
    if not os.fspath(path).strip():
        raise ValueError(f"{name} must name a folder, got {os.fspath(path)!r} (use '.' for the "
                         "current folder)")
    out = Path(path) if sub is None else Path(path) / sub
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dynopt-probe-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{name} folder {str(out)!r} cannot be written: {reason}") from None
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> bool:
    """Write ``text`` to ``path`` atomically; returns True if an existing file was replaced."""
    target = Path(path)
    existed = target.exists()
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600: give it an ordinary file's mode
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return existed


def remove_stale(folder: str | os.PathLike[str], names: Any, keep: Any = ()) -> list[Path]:
    """Remove the files ``names`` from ``folder`` except those in ``keep`` (paths this run
    wrote): the plots of an earlier run into the same folder, which would otherwise sit next to
    a new summary that they do not show (a ``--no-plots`` rerun). Returns the removed paths."""
    kept = {Path(k).name for k in keep}
    removed = []
    for name in names:
        path = Path(folder) / name
        if name not in kept and path.is_file():
            path.unlink()
            removed.append(path)
    return removed


def json_text(summary: dict[str, Any], default: Any = str, indent: int | None = 2) -> str:
    """``summary`` as standard JSON: non-finite numbers (an undefined ESS) become ``null``.

    ``json.dumps`` writes ``NaN``/``Infinity``, which RFC 8259 does not allow and strict parsers
    (JavaScript's ``JSON.parse``, for one) reject. ``indent=None`` writes one line (long
    records, such as ``dynopt train``'s monitor lists).
    """
    return json.dumps(_finite_or_none(summary), indent=indent, default=default)


def _finite_or_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _finite_or_none(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
