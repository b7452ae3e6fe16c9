"""A run folder owned by one process at a time, and its ``metrics.csv`` kept in step with its checkpoints.

A run folder holds ``last`` and ``best`` checkpoints (:mod:`cemnet.training.checkpoint`),
``metrics.csv`` (one row per finished epoch) and, where TensorBoard is
installed, ``tensorboard/``. Three rules keep it whole:

* **One owner.** The training process takes an advisory lock on the folder
  (``flock`` on the folder itself, so no lock file is left behind; the
  operating system releases it when the process ends, however it ends). A
  second ``cemnet train`` on the same folder is refused while the first runs.
* **No silent loss.** A folder that already holds a run is continued only
  with ``--resume`` and replaced only with ``--overwrite``; a folder this
  process created and never wrote to (a run that failed before its first
  epoch, e.g. for missing data) is removed again when it is released.
* **One truth.** The ``last`` checkpoint says how far the run is; a metrics
  row is written (atomically) before the checkpoint of its epoch, and on a
  resume the rows beyond the checkpoint are dropped, so a kill between the
  two can neither lose a row nor leave one twice.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cemnet.training.checkpoint import atomic_write, remove_leftovers

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a run folder is then not protected against a second process
    fcntl = None

METRICS_COLUMNS = ["epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "epoch_seconds",
                   "images_per_second"]
RUN_FILES = ("last.safetensors", "best.safetensors", "metrics.csv")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked; the message says what to do instead."""


class RunFolder:
    """The folder of one training run, locked for the lifetime of this object (rank 0 only under DDP).

    Args:
        path: the folder (created if missing; removed again by :meth:`close` if nothing was written to it).
        resume: the run is to be continued.
        overwrite: a run already there is to be deleted first.

    Raises:
        RunFolderError: the path is a file, cannot be written, is in use by
            another process, or holds a run and neither ``resume`` nor
            ``overwrite`` was asked for.
    """

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"--out {self.path} is a file, not a folder; choose a folder for the run")
        # the folder and the parents this process creates, deepest first: close() removes them while empty
        self._created = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=self.path).close()
        except OSError as error:
            raise RunFolderError(f"cannot write to the run folder {self.path} ({error.strerror or error}); "
                                 f"choose another --out") from None
        self._handle = self._lock()
        if self.holds_run() and not resume:
            if not overwrite:
                self.close()
                raise RunFolderError(f"{self.path} already holds a run; continue it with --resume, replace it with "
                                     f"--overwrite, or choose another --out")
            self._delete_run()
        try:
            remove_leftovers(self.path)
        except Exception:
            self.close()
            raise

    def _lock(self) -> int | None:
        if fcntl is None:
            return None
        handle = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise RunFolderError(f"{self.path} is in use by another cemnet process; wait for it to end or choose "
                                 f"another --out") from None
        return handle

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def _delete_run(self) -> None:
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for path in self.path.glob("*.state.pt"):
            path.unlink()
        shutil.rmtree(self.path / "tensorboard", ignore_errors=True)

    def write_row(self, row: dict[str, Any]) -> None:
        """Add an epoch's row to ``metrics.csv``, replacing any row of that epoch or later (atomic rewrite)."""
        self._rewrite([kept for kept in self.rows() if int(kept["epoch"]) < row["epoch"]] + [row])

    def keep_rows_through(self, epoch: int) -> None:
        """Drop the rows after ``epoch`` (those of epochs whose checkpoint was never written)."""
        rows = self.rows()
        if any(int(row["epoch"]) > epoch for row in rows):
            self._rewrite([row for row in rows if int(row["epoch"]) <= epoch])

    def rows(self) -> list[dict[str, Any]]:
        metrics = self.path / "metrics.csv"
        if not metrics.is_file():
            return []
        with metrics.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        def write(temporary: Path) -> None:
            with temporary.open("w", newline="") as handle:
                table = csv.DictWriter(handle, METRICS_COLUMNS)
                table.writeheader()
                table.writerows(rows)

        atomic_write(self.path / "metrics.csv", write)

    def close(self) -> None:
        """Remove the folder if this process created it and it is still empty, then release the lock.

        (The process's end releases the lock too.) Removing before releasing
        means no other process can have taken the folder in between.
        """
        for folder in self._created:
            try:
                folder.rmdir()  # only succeeds while empty: a folder that holds anything is kept
            except OSError:
                break
        self._created = []
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
