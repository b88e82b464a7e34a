"""Where a run stands: the counters and flags that every checkpoint saves and a resume restores."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0
    batch: int = 0  # batches done in this epoch
    updates: int = 0
    best: float = math.inf  # best validation metric so far
    best_update: int = 0
    evals_since_best: int = 0
    skipped: int = 0  # updates skipped for a non-finite loss or gradient
    restores: int = 0  # times the last good state was restored after repeated non-finite updates
    averaging: bool = False  # set once validation stalled (average_when_stalled)
    train_seconds: float = 0.0
    loss_sum: float = 0.0  # training losses since the last evaluation (its train_loss)
    loss_count: int = 0
    done: bool = False
    stop_reason: str = ""  # callback, early stopping, min_lr, time budget, max updates, epochs

    def summary(self) -> dict:
        """What a run's results say of its course."""
        return {
            "best_update": self.best_update,
            "updates": self.updates,
            "epochs": self.epoch,
            "train_seconds": round(self.train_seconds, 1),
            "skipped_updates": self.skipped,
            "stop_reason": self.stop_reason,
        }
