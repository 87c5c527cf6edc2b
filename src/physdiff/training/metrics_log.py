"""The training log: rows of ``metrics.csv``, optional TensorBoard scalars and the progress bar (main rank)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from physdiff.outputs import atomic_open, check_target, open_append
from physdiff.progress import progress_bar
from physdiff.training.interrupts import defer_sigint

__all__ = ["MetricsLog", "truncate_metrics", "tensorboard_writer", "require_tensorboard"]


class MetricsLog:
    """Appends metric rows to ``path`` and drives the progress bar; a no-op writer when not ``enabled``.

    A run resumed at step ``start`` keeps the rows with ``step ≤ start`` (see :func:`truncate_metrics`) and
    continues their ``elapsed_s``; a fresh run (``start == 0``) replaces any old file.
    """

    def __init__(self, path: Path, *, start: int, total: int, enabled: bool, progress: bool, tensorboard: bool) -> None:
        self.path, self.enabled = Path(path), enabled
        self.fields: list[str] | None = None
        elapsed = 0.0
        if enabled:
            self.fields, elapsed = truncate_metrics(self.path, start)
        self.t0 = time.time() - elapsed
        self.val_path = self.path.with_name("validation.csv")
        if enabled:
            truncate_metrics(self.val_path, start)
        self.tb = tensorboard_writer(self.path.parent) if enabled and tensorboard else None
        self.bar = progress_bar(total, initial=start, desc="training", enabled=progress and enabled)

    def advance(self, loss: float) -> None:
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def write(self, row: dict[str, float]) -> None:
        """Append ``row`` (its ``step`` first) with the elapsed seconds; Ctrl-C waits for the whole line."""
        if not self.enabled:
            return
        row = {**row, "elapsed_s": round(time.time() - self.t0, 3)}
        with defer_sigint(), open_append(self.path, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields or list(row), restval="", extrasaction="ignore")
            if self.fields is None:
                w.writeheader()
                self.fields = list(row)
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])

    def write_validation(self, step: int, loss: float) -> None:
        """Append the validation loss at ``step`` to ``validation.csv`` (and TensorBoard's ``val_loss``)."""
        if not self.enabled:
            return
        new = not self.val_path.is_file()
        with defer_sigint(), open_append(self.val_path, newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "val_loss"])
            w.writerow([step, loss])
        if self.tb is not None and math.isfinite(loss):
            self.tb.add_scalar("val_loss", loss, step)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> tuple[list[str] | None, float]:
    """Keep the rows of ``path`` with ``step ≤ step`` (one per step, complete lines only).

    Returns the header (None when the file is gone: ``step == 0`` or nothing usable) and the last kept row's
    ``elapsed_s``. Rows past a resumed checkpoint were written by the interrupted run and are rewritten.
    """
    path = Path(path)
    exists = check_target(path)  # a link or non-regular file at the log's name is refused, never followed
    if step <= 0 or not exists:
        path.unlink(missing_ok=True)
        return None, 0.0
    with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet's byte-order mark is not a header
        text = f.read()
    rows = list(csv.reader(text.splitlines()))
    if not text.endswith("\n"):  # an interrupted write left half a line
        rows = rows[:-1]
    if not rows or rows[0][:1] != ["step"]:
        path.unlink()
        return None, 0.0
    header, by_step = rows[0], {}
    for r in rows[1:]:
        if len(r) == len(header) and r[0].isdigit() and int(r[0]) <= step:
            by_step[int(r[0])] = r
    kept = [by_step[s] for s in sorted(by_step)]
    if kept != rows[1:] or not text.endswith("\n"):
        with atomic_open(path, "w", newline="") as f:
            csv.writer(f).writerows([header, *kept])
    elapsed = 0.0
    if kept and "elapsed_s" in header:
        try:
            elapsed = float(kept[-1][header.index("elapsed_s")])
        except ValueError:
            pass
    return header, elapsed


def require_tensorboard() -> None:
    """Raise a clear error (how to install it) unless TensorBoard can be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise ValueError(
            "train.tensorboard=true needs TensorBoard: pip install tensorboard (or pip install 'physdiff[tensorboard]')"
        ) from None


def tensorboard_writer(run_dir: Path):
    """A TensorBoard writer logging to ``run_dir/tb``; a clear error when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "train.tensorboard=true needs TensorBoard: pip install tensorboard (or pip install 'physdiff[tensorboard]')"
        ) from None
    return SummaryWriter(str(run_dir / "tb"))
