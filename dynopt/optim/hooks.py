"""Step post-hooks that record an optimizer's live diagnostics (the OpenMM "reporter" pattern).

Register with ``optimizer.register_step_post_hook(CSVLogger("run.csv"))`` (an existing log is
appended to, never truncated). The hook reads
:meth:`dynopt.optim.Partitioned.diagnostics` every ``every`` steps (one host synchronization per
logged step; the optimizer itself never synchronizes) and appends one row per param group:

    step, group, dynamics, lr, temperature, kinetic_temperature, xi

With ``tensorboard_dir`` the same scalars go to TensorBoard when ``torch.utils.tensorboard`` is
importable (silently skipped otherwise).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .._validation import check_int

__all__ = ["CSVLogger"]

FIELDS = ("step", "group", "dynamics", "lr", "temperature", "kinetic_temperature", "xi")


class CSVLogger:
    """Append the optimizer's per-group diagnostics to a CSV file after every ``every`` steps.

    Args:
        path: The CSV file, created with a header (and its parent folders) if it does not exist
            or is empty; an existing log is appended to (a run resumed from a checkpoint
            continues its own log: the ``step`` column continues from the restored counter),
            provided its header is this logger's.
        every: Log every this many steps (≥ 1).
        tensorboard_dir: Also write TensorBoard scalars there, if TensorBoard is installed.

    Raises:
        ValueError: If ``path`` exists with another header (not a log of this kind).
    """

    def __init__(self, path: str | Path, every: int = 1,
                 tensorboard_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        self.every = check_int("every", every, minimum=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if existing:  # never truncate a log (resumed runs re-register their logger)
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != FIELDS:
                raise ValueError(f"CSVLogger: {str(self.path)!r} exists with the header "
                                 f"{header}, not {list(FIELDS)}; choose another path")
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS)
        if not existing:
            self._writer.writeheader()
            self._file.flush()
        self._tb: Any = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self._tb = None
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def __call__(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        step = int(optimizer.step_count)
        if step % self.every:
            return
        for row in optimizer.diagnostics(host=True):
            self._writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in FIELDS})
            if self._tb is not None:
                for key in ("kinetic_temperature", "xi", "lr"):
                    if row.get(key) is not None:
                        self._tb.add_scalar(f"group{row['group']}/{key}", row[key], step)
        self._file.flush()

    def close(self) -> None:
        """Close the file (and the TensorBoard writer)."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()
