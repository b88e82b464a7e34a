"""Parameter averaging: the running mean of the parameters after each update (Polyak averaging;
AWD-LSTM's averaged SGD, SWA), which validation, the best parameters and the test score then use.

It begins after ``average_after_epochs`` epochs, or once a validation score is worse than the best
of those before the last ``average_when_stalled`` (AWD-LSTM's non-monotone trigger), whichever
comes first.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel

from deeprnn.training.config import TrainConfig


class Averaging:
    def __init__(self, config: TrainConfig, model: nn.Module) -> None:
        self.after, self.when_stalled = config.average_after_epochs, config.average_when_stalled
        wanted = self.after is not None or self.when_stalled is not None
        self.mean: AveragedModel | None = AveragedModel(model) if wanted else None

    def active(self, epoch: int, stalled: bool) -> bool:
        """Whether the mean takes in the updates of ``epoch`` (``stalled``: the trigger fired)."""
        return stalled or (self.after is not None and epoch >= self.after)

    def update(self, model: nn.Module, epoch: int, stalled: bool) -> None:
        if self.mean is not None and self.active(epoch, stalled):
            self.mean.update_parameters(model)

    def scored(self, model: nn.Module) -> nn.Module:
        """What validation scores: the mean once it holds an update, else ``model``."""
        return self.mean.module if self.mean is not None and int(self.mean.n_averaged) > 0 else model

    def stalls(self, history: list[float], value: float) -> float | None:
        """The best of the ``history`` of scores before its last ``average_when_stalled`` when
        the new score ``value`` is worse (the trigger fires), else None."""
        n = self.when_stalled
        earlier = history[:-n] if n else []
        return min(earlier) if earlier and value > min(earlier) else None

    def state_dict(self) -> dict | None:
        return None if self.mean is None else self.mean.state_dict()

    def load_state_dict(self, state: dict | None) -> None:
        if self.mean is not None and state is not None:  # else averaging starts later
            self.mean.load_state_dict(state)
