"""Step post-hooks that record an optimizer's live diagnostics (the OpenMM "reporter" pattern).

Register with ``optimizer.register_step_post_hook(CSVLogger("run.csv"))`` (a new log; a run
resumed from a checkpoint continues its own with ``append=True``). The hook reads
:meth:`dynopt.optim.Partitioned.diagnostics` every ``every`` steps (one host synchronization per
logged step; the optimizer itself never synchronizes) and appends one row per param group:

    step, group, dynamics, lr, temperature, kinetic_temperature, xi

With ``tensorboard_dir`` the same scalars go to TensorBoard when ``torch.utils.tensorboard`` is
importable (silently skipped otherwise).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from .._validation import check_int

__all__ = ["CSVLogger"]

FIELDS = ("step", "group", "dynamics", "lr", "temperature", "kinetic_temperature", "xi")


class CSVLogger:
    """Append the optimizer's per-group diagnostics to a CSV file after every ``every`` steps.

    Args:
        path: The CSV file (its parent folders are created).
        every: Log every this many steps (≥ 1).
        tensorboard_dir: Also write TensorBoard scalars there, if TensorBoard is installed.
        append: False (default, as Keras' CSVLogger): start a new log, replacing an existing one.
            True: continue an existing log, for a run resumed from a checkpoint (the ``step``
            column continues from the restored counter); rows the log holds from that step on
            (written after the checkpoint by the run being resumed) are dropped at the first
            logged step, so the log equals that of an uninterrupted run.

    Raises:
        ValueError: If ``path`` exists with another header (not a log of this kind: it is never
            replaced).
    """

    def __init__(self, path: str | Path, every: int = 1,
                 tensorboard_dir: str | Path | None = None, *, append: bool = False) -> None:
        self.path = Path(path)
        self.every = check_int("every", every, minimum=1)
        if not isinstance(append, bool):
            raise TypeError(f"append must be a bool, got {append!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existing = self.path.is_file() and self.path.stat().st_size > 0
        if existing:  # only a log of this kind is ever replaced or continued
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if tuple(header) != FIELDS:
                raise ValueError(f"CSVLogger: {str(self.path)!r} exists with the header "
                                 f"{header}, not {list(FIELDS)}; choose another path")
        keep = existing and append
        self._trim = keep  # drop rows from the first logged step on (see append)
        self._file = self.path.open("a" if keep else "w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS)
        if not keep:
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
        if self._trim:
            self._drop_rows_from(step)
        for row in optimizer.diagnostics(host=True):
            self._writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in FIELDS})
            if self._tb is not None:
                for key in ("kinetic_temperature", "xi", "lr"):
                    if row.get(key) is not None:
                        self._tb.add_scalar(f"group{row['group']}/{key}", row[key], step)
        self._file.flush()

    def _drop_rows_from(self, step: int) -> None:
        """Rewrite the continued log without its rows of ``step`` and later (atomically: an
        interruption leaves the old log whole)."""
        self._trim = False
        self._file.close()
        with self.path.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if int(r["step"]) < step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(kept)
        os.replace(tmp, self.path)
        self._file = self.path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=FIELDS)

    def close(self) -> None:
        """Close the file (and the TensorBoard writer)."""
        self._file.close()
        if self._tb is not None:
            self._tb.close()
