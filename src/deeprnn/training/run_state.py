"""What a run's checkpoints hold, and how a run continues from one.

    last.pt = model + optimiser + schedule + progress + guard + history + carried state + RNG
              + the names copied from init_from (a resume does not read that run again)
    best.pt = best parameters + the whole run at that point (``resume``)

:class:`RunState` is the part of :class:`deeprnn.training.loop.Run` that writes and reads them:
``save_last`` after each evaluation (and every ``checkpoint_every`` updates), ``resume`` when a
run is started again. Under torchrun every process takes part: each one's carried state and
random generators are gathered into the first process's checkpoint, and each takes its own back.
The file format itself (atomic writes, safe loading) is ``deeprnn.training.checkpoint``'s.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from deeprnn import __version__
from deeprnn.driver import map_carry
from deeprnn.errors import RunFolderError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.operators.protocol import Carry
from deeprnn.training import checkpoint, distributed
from deeprnn.training.averaging import Averaging
from deeprnn.training.config import TrainConfig
from deeprnn.training.console import Log
from deeprnn.training.distributed import World
from deeprnn.training.guard import NonfiniteGuard
from deeprnn.training.progress import Progress
from deeprnn.training.schedule import Schedule


class RunState:
    """Checkpointing for a run; the attributes below are set by ``Run.__init__``."""

    config: TrainConfig
    model_config: ModelConfig
    out: Path
    log: Log
    world: World
    device: torch.device
    model: DeepRNN
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    averaging: Averaging
    progress: Progress
    guard: NonfiniteGuard
    history: list[dict]
    state: Carry | None
    good_state: dict  # model and optimiser where a restore returns to
    best_model: dict | None  # the best parameters (CPU), kept by every process
    pretrained: set[str]  # the names copied from init_from

    def checkpoint_state(self) -> dict:
        own = {"carry": map_carry(lambda t: t.detach().cpu(), self.state), "rng": checkpoint.rng_state()}
        state = {
            **self.identity(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "progress": vars(self.progress).copy(),
            "guard": self.guard.state_dict(),
            "history": list(self.history),
            "pretrained": sorted(self.pretrained),  # their rate's group, without init_from's run
            **own,
        }
        if self.averaging.mean is not None:
            state["averaged"] = self.averaging.state_dict()
        if self.world.distributed:  # each process's carried state and random generators
            state["processes"] = distributed.gather(own, self.world)
        return state

    def identity(self) -> dict:
        """What every checkpoint says of the run: the library version and both configurations."""
        return {
            "version": __version__,
            "config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(),
        }

    def snapshot(self) -> dict:
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()})

    def finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())

    def save_last(self, best: bool = False) -> None:
        """Write ``last.pt`` and, when validation improved, ``best.pt`` before it: the best
        parameters, with the whole run at that point (a resume starts there if ``last.pt`` is
        damaged or older). Never a state whose parameters are not finite: the guard will return
        to the last good one."""
        if not self.finite():
            self.log(f"update {self.progress.updates}: parameters not finite, checkpoint not written")
            return
        state = self.checkpoint_state()  # every process takes part (it gathers their states)
        folder = self.out / "checkpoints"
        if self.world.main:
            if best:  # first: stopped between the two, best.pt is the newer and a resume takes it
                p = self.progress
                best_state = {
                    "model": self.best_model,
                    "update": p.best_update,
                    "valid": p.best,
                    "resume": state,
                }
                checkpoint.save(folder / "best.pt", {**self.identity(), **best_state})
            checkpoint.save(folder / "last.pt", state)
        self.good_state = self.snapshot()

    def resume(self, state: dict) -> None:
        """Continue from a checkpoint's ``state``, as
        :func:`deeprnn.training.run_folder.resumable_state` reads it."""
        processes = state.get("processes", [state])
        if len(processes) != self.world.size:
            raise RunFolderError(
                f"{self.out} was trained by {len(processes)} process(es); resume it with as many, "
                f"not {self.world.size} (the data position and carried states are per process)"
            )
        own = processes[self.world.rank]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.averaging.load_state_dict(state.get("averaged"))
        self.schedule.load_state_dict(state["schedule"])
        self.progress = Progress(**state["progress"])
        if "guard" in state:
            self.guard.load_state_dict(state["guard"])
        self.history = list(state["history"])
        self.state = map_carry(lambda part: part.to(self.device), own["carry"])
        checkpoint.set_rng_state(own["rng"])
        self.good_state = self.snapshot()
        best = self.out / "checkpoints" / "best.pt"
        self.best_model = checkpoint.load(best)["model"] if best.exists() else None
        p = self.progress
        self.log(f"resumed at epoch {p.epoch}, batch {p.batch}, update {p.updates}")
