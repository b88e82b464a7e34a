"""deeprnn's own error types: a user's mistake, told apart from a bug in deeprnn.

:class:`UserError` is a problem with what was asked for (a setting, a data file, a run folder);
the command line prints its message in one line and exits with status 2. Anything else that
escapes is a bug and keeps its traceback. Each is a ``ValueError``, so code that catches
``ValueError`` around deeprnn's calls keeps working.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user asked for; the message says what was wrong and what is expected."""


class ConfigError(UserError):
    """A setting (of a run or of a model) that is out of range, of the wrong type, or unknown."""


class RunFolderError(UserError):
    """A run folder that is missing, damaged, in use by another process, or not a run folder."""


class TrainingDiverged(RuntimeError):
    """Training could not recover from non-finite losses or gradients; the run stopped.

    Not a :class:`UserError`: the settings were valid, the run itself failed (exit status 3)."""

    def __init__(self, message: str, update: int, loss: float, last_good: str) -> None:
        super().__init__(message)
        self.update, self.loss, self.last_good = update, loss, last_good

    def record(self) -> dict:
        """What ``results.json`` says of it."""
        where = {"update": self.update, "loss": str(self.loss), "last_good": self.last_good}
        return {"stop_reason": "diverged", "diverged": where, "message": str(self)}
