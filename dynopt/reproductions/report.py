"""Small helpers shared by reproductions and benchmarks: tables and doc sections."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["as_run", "docs_path", "duration", "markdown_table", "repo_root", "seed_count",
           "update_section", "write_results"]

#: A table cell that is not a number: never written into the docs.
_NOT_A_NUMBER = re.compile(r"(?<![\w.])[-+]?(nan|inf)(?![\w.])", re.IGNORECASE)


def seed_count(args: Any, default: int) -> int:
    """``args.seeds`` (>= 1), or ``default`` when not given (None); 0 or less is an error."""
    from .._validation import check_int

    seeds = getattr(args, "seeds", None)
    if seeds is None:
        return default
    return check_int("--seeds", seeds, minimum=1)


def command(name: str, args: Any) -> str:
    """The command line of this run, ``dynopt reproduce NAME [--quick] [--seeds N]``, as the
    reports print it (without ``--update-docs``, which the docs sections add)."""
    seeds = getattr(args, "seeds", None)
    return (f"dynopt reproduce {name}" + (" --quick" if getattr(args, "quick", False) else "")
            + (f" --seeds {seeds}" if seeds is not None else ""))


def duration(seconds: float) -> str:
    """A run's wall time as the report headers print it: whole seconds under a minute
    (``"12 s"``, ``"< 1 s"``), whole minutes from there on (``"5 min"``).

    A quick run takes seconds; printing its time in whole minutes read "0 min".

    Raises:
        ValueError: If ``seconds`` is negative or not finite.
    """
    import math

    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    if seconds < 1:
        return "< 1 s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def repo_root() -> Path:
    """The source checkout containing this package (for docs/)."""
    return Path(__file__).resolve().parents[2]


def docs_path() -> Path:
    """``docs/reproductions.md`` of the source checkout, which ``--update-docs`` rewrites. An
    installed (non-editable) dynopt has none: ``repo_root()`` is then ``site-packages``."""
    return repo_root() / "docs" / "reproductions.md"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (floats formatted with 4 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def update_section(path: str | Path, name: str, body: str) -> Path:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in ``path``.

    The markers are appended (with the body) if absent. Returns the path written. The file is
    replaced atomically.

    Raises:
        ValueError: If ``body`` holds a NaN or inf value (a failed run never reaches the docs).
    """
    from .._files import write_text_atomic

    bad = _NOT_A_NUMBER.search(body)
    if bad:
        line = body[:bad.start()].count("\n") + 1
        raise ValueError(f"refusing to write {bad.group(0)!r} (line {line} of section {name!r}) "
                         f"into {path}: a table of failed or empty runs is not a result")
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text,
                      flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    write_text_atomic(path, text)
    return path


def write_results(name: str, files: dict[Path, str]) -> list[Path]:
    """Write a reproduction's result files (path → text), each atomically.

    A rerun with the same ``--out`` replaces the results of the earlier one; as ``dynopt study``
    does for its summary, that is said on stderr, in one line:
    ``dynopt reproduce NAME: warning: replaced the existing OUT/NAME/x.json, ...``. (Only adlala
    caches its runs and continues from them: its rerun does not replace results.)

    Returns:
        The paths that replaced an existing file.
    """
    import sys

    from .._files import write_text_atomic

    replaced = [Path(path) for path, text in files.items() if write_text_atomic(path, text)]
    if replaced:
        print(f"dynopt reproduce {name}: warning: replaced the existing "
              f"{', '.join(map(str, replaced))}", file=sys.stderr)
    return replaced


def as_run(body: str, update_docs: bool) -> str:
    """The report text as this run produced it: a docs body names the command with
    ``--update-docs`` (how the docs section is made), which a run without the flag did not use."""
    return body if update_docs else body.replace(" --update-docs`", "`")
