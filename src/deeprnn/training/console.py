"""What a run prints: the log (echoed and kept in ``train.log``), a progress bar per epoch, and
TensorBoard's writer, with silent stand-ins for every process of a distributed run but the first."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from deeprnn.data.batching import Batch

Log = Callable[[str], object]  # where a run's messages go: print, a Logger, quiet


class ProgressBar:
    """tqdm on a terminal; otherwise a plain line every 10 % of the epoch; nothing where not
    ``shown`` (every process of a distributed run but the first)."""

    def __init__(self, total: int, done: int, label: str, shown: bool = True) -> None:
        self.total, self.done, self.first, self.label = total, done, done, label
        self.started, self.targets, self.loss = time.perf_counter(), 0, None
        self.bar, self.shown = None, shown
        if shown and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=label, unit="batch", leave=False)
        self.every = max(1, total // 10)

    def update(self, batch: Batch, loss: float | None) -> None:
        self.done += 1
        self.targets += batch.count
        if loss is not None:  # a running mean, for display
            self.loss = loss if self.loss is None else 0.95 * self.loss + 0.05 * loss
        rate, left = self.pace()
        loss_text = "nan" if self.loss is None else f"{self.loss:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss_text}, {rate:,.0f} targets/s")
            self.bar.update(1)
        elif self.shown and self.done % self.every == 0:
            print(
                f"{self.label}: {self.done}/{self.total} batches, loss {loss_text}, {rate:,.0f} targets/s, "
                f"~{left:.0f} s left in the epoch",
                flush=True,
            )

    def pace(self) -> tuple[float, float]:
        """Targets per second since the bar began (or resumed), and the seconds left in the epoch
        at that pace (before the first batch, as if the time so far were one batch's)."""
        elapsed = time.perf_counter() - self.started
        rate = self.targets / max(elapsed, 1e-9)
        left = (self.total - self.done) * elapsed / max(self.done - self.first, 1)
        return rate, left

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet(message: str) -> None:
    """The log of every process but the first: they train the same run, silently."""


class NoWriter:
    """TensorBoard's writer for every process but the first."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


class Logger:
    def __init__(self, path: Path, echo: Log) -> None:
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        self.echo(message)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(message + "\n")
