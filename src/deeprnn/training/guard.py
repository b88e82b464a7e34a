"""The guard against non-finite updates: skip them, go back to a finite state, or give up.

An update whose loss or gradient norm is not finite is skipped. After ``restore_after`` of them
in a row, the run returns to its last good state (the last checkpoint whose parameters were all
finite, or the start) with the learning rate halved. If that happens ``give_up_after`` times
with no better validation score between them, halving has not helped: the run has diverged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deeprnn.errors import TrainingDiverged


@dataclass
class NonfiniteGuard:
    restore_after: int = 3
    give_up_after: int = 3
    in_a_row: int = 0  # non-finite updates in a row
    restores: int = 0  # restores since validation last improved

    def finite(self) -> None:
        """An update went through."""
        self.in_a_row = 0

    def nonfinite(self) -> str:
        """An update was not finite: ``"skip"`` it, ``"restore"`` the last good state, or the
        run has ``"diverged"``."""
        self.in_a_row += 1
        if self.in_a_row < self.restore_after:
            return "skip"
        self.in_a_row = 0
        if self.restores + 1 >= self.give_up_after:
            return "diverged"
        self.restores += 1
        return "restore"

    def diverged(self, update: int, loss: float, last_good: str) -> TrainingDiverged:
        """The error that stops a run the guard gave up on, naming where to go back to."""
        returns = self.give_up_after - 1  # the give_up_after-th time, it gives up instead
        message = (
            f"training diverged at update {update} (loss {loss}): {returns} return{'s' * (returns != 1)} to "
            f"the last good state at half the learning rate did not help; last good checkpoint: {last_good}. "
            "Lower lr, clip the gradient (clip_norm) or change the units"
        )
        return TrainingDiverged(message, update, loss, last_good)

    def never_finite(self, evaluations: int, update: int, last: str) -> TrainingDiverged:
        """The error that stops a run none of whose validation scores was finite: it has no best."""
        message = (
            f"validation gave no finite score in {evaluations} evaluations, so the run has no best "
            f"parameters to score (last checkpoint: {last}). Lower lr, clip the gradient (clip_norm) or "
            "change the units"
        )
        return TrainingDiverged(message, update, math.nan, last)

    def improved(self) -> None:
        """Validation reached a new best: the restores before it did their job."""
        self.restores = 0

    def state_dict(self) -> dict:
        return {"in_a_row": self.in_a_row, "restores": self.restores}

    def load_state_dict(self, state: dict) -> None:
        self.in_a_row, self.restores = state["in_a_row"], state["restores"]
