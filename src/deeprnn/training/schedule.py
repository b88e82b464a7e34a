"""Learning-rate schedules: the paper's two and two modern ones.

- ``inverse`` (the paper, music): ε_t = ε_0 / (1 + t/β), t the number of updates;
- ``halve`` (the paper, text): ε halved, and the best parameters restored, whenever the
  validation score did not improve for ``halve_patience`` evaluations;
- ``plateau``: halved likewise, without restoring; ``cosine``: ε_0 · ½(1 + cos(π t / T));
- ``constant``.
"""

from __future__ import annotations

import math

import torch

from deeprnn.training.config import TrainConfig


class Schedule:
    def __init__(self, config: TrainConfig, total_updates: int) -> None:
        self.kind, self.base = config.schedule, config.lr
        self.beta, self.patience, self.min_lr = config.lr_decay_beta, config.halve_patience, config.min_lr
        self.total = max(total_updates, 1)
        self.factor = 1.0  # product of the halvings
        self.bad = 0  # evaluations without improvement since the last halving
        self.t = 0

    def lr(self, t: int | None = None) -> float:
        t = self.t if t is None else t
        lr = self.base * self.factor
        if self.kind == "inverse":
            return lr / (1.0 + t / self.beta)
        if self.kind == "cosine":
            return lr * 0.5 * (1.0 + math.cos(math.pi * min(t / self.total, 1.0)))
        return lr

    def apply(self, optimizer: torch.optim.Optimizer, t: int) -> None:
        """Set the rate of update t (groups keep their ``lr_scale``)."""
        self.t = t
        lr = self.lr(t)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def halve(self) -> None:
        self.factor *= 0.5

    def after_evaluation(self, improved: bool) -> bool:
        """Returns True when the best parameters should be restored (``halve``)."""
        if self.kind not in ("halve", "plateau"):
            return False
        if improved:
            self.bad = 0
            return False
        self.bad += 1
        if self.bad < self.patience:
            return False
        self.bad = 0
        self.halve()
        return self.kind == "halve"

    def finished(self) -> bool:
        return self.kind in ("halve", "plateau") and self.lr() < self.min_lr

    def state_dict(self) -> dict:
        return {"factor": self.factor, "bad": self.bad, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.factor, self.bad, self.t = state["factor"], state["bad"], state["t"]
