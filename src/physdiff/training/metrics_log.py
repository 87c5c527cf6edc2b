"""The training log: rows of ``metrics.csv``, optional TensorBoard scalars and the progress bar (main rank).

Each row holds the logged step's terms and ``loss_mean``, the mean total loss over the steps since the
previous row (the logging interval). A prior's column is its label (:func:`physdiff.priors.base.prior_label`, a
user prior's class as tables and figures show it; a resumed log's older import-path columns are renamed so).
TensorBoard tags are namespaced: ``train/<column>`` for the rows,
``val/loss`` for the validation loss, ``sample/<metric>`` for the sampled metrics, ``figures/<name>`` and
the hparams with the final metrics (:func:`log_hparams`, :func:`log_figures`)."""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

from physdiff.outputs import atomic_open, check_target, open_append
from physdiff.priors.base import prior_label
from physdiff.progress import LineProgress, progress_bar
from physdiff.training.interrupts import defer_sigint

__all__ = ["MetricsLog", "truncate_metrics", "tensorboard_writer", "require_tensorboard", "log_hparams", "log_figures"]

log = logging.getLogger("physdiff")


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
            self.fields = relabel_metrics(self.path, self.fields)
        self.t0 = time.time() - elapsed
        self.val_path = self.path.with_name("validation.csv")
        if enabled:
            truncate_metrics(self.val_path, start)
        self.tb = tensorboard_writer(self.path.parent) if enabled and tensorboard else None
        self.bar = progress_bar(total, initial=start, desc="training", enabled=progress and enabled)
        self.show_final = progress and enabled and not isinstance(self.bar, LineProgress)
        self.interval: list[float] = []  # the total losses since the last row
        self.last: tuple[int, float] | None = None  # (step, interval mean) of the last row

    def advance(self, loss: float) -> None:
        self.interval.append(float(loss))
        self.bar.update()
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def write(self, row: dict[str, float]) -> None:
        """Append ``row`` (its ``step`` first) with the elapsed seconds; Ctrl-C waits for the whole line."""
        if not self.enabled:
            return
        mean = math.fsum(self.interval) / len(self.interval) if self.interval else row.get("loss", math.nan)
        self.interval = []
        self.last = (int(row["step"]), float(mean))
        row = {**_labelled(row), "loss_mean": mean, "elapsed_s": round(time.time() - self.t0, 3)}
        with defer_sigint(), open_append(self.path, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields or list(row), restval="", extrasaction="ignore")
            if self.fields is None:
                w.writeheader()
                self.fields = list(row)
            w.writerow(row)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, float) and math.isfinite(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def write_validation(self, step: int, loss: float) -> None:
        """Append the validation loss at ``step`` to ``validation.csv`` (and TensorBoard's ``val/loss``)."""
        if not self.enabled:
            return
        new = not self.val_path.is_file()
        with defer_sigint(), open_append(self.val_path, newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "val_loss"])
            w.writerow([step, loss])
        if self.tb is not None and math.isfinite(loss):
            self.tb.add_scalar("val/loss", loss, step)

    def close(self) -> None:
        self.bar.close()
        if self.show_final and self.last is not None:  # a terminal's bar takes its loss with it: say it once more
            log.info("training: step %d, loss %.4g (mean over the last logging interval)", *self.last)
        if self.tb is not None:
            self.tb.close()


def _labels(names: list[str]) -> list[str]:
    """Each column's label (:func:`prior_label`); a name whose label another column has already keeps its own."""
    labels = [prior_label(n) for n in names]
    return [lab if labels.count(lab) == 1 else n for n, lab in zip(names, labels, strict=True)]


def _labelled(row: dict) -> dict:
    return dict(zip(_labels(list(row)), row.values(), strict=True))


def relabel_metrics(path: Path, header: list[str] | None) -> list[str] | None:
    """``header`` with its columns labelled as new rows label them (a log written before user priors' columns
    were labelled by class: ``my_priors.py:Tether`` → ``Tether``), ``path`` rewritten with it; the rows kept."""
    if header is None or _labels(header) == header:
        return header
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    with atomic_open(path, "w", newline="") as f:
        csv.writer(f).writerows([_labels(header), *rows[1:]])
    return _labels(header)


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


def log_hparams(writer, hparams: dict, metrics: dict) -> None:
    """A run's settings and its final metrics in TensorBoard's hparams view (metric tags ``hparams/<name>``);
    values that are not numbers, strings or booleans are written as strings."""
    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    finite = {f"hparams/{k}": float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    writer.add_hparams(clean, finite, run_name=".")


def log_figures(writer, paths, step: int = 0) -> None:
    """The PNG figures ``paths`` as TensorBoard images ``figures/<file stem>`` (needs Pillow; skipped without)."""
    try:
        import numpy as np
        from PIL import Image
    except ImportError:
        return
    for path in paths:
        if Path(path).suffix.lower() != ".png":
            continue
        with Image.open(path) as im:
            writer.add_image(f"figures/{Path(path).stem}", np.asarray(im.convert("RGB")), step, dataformats="HWC")
