"""Training a deep RNN: start a run in its run folder, or resume one there.

    config ─► data + model ─► [update … evaluate ─► checkpoint]* ─► best parameters ─► test

:func:`train` holds the folder's lock (``deeprnn.training.run_folder``: its layout, its lock,
what may replace it) while :class:`~deeprnn.training.loop.Run`, the loop, trains. What a run is
made of comes from ``deeprnn.training.builder``, its scores from ``deeprnn.training.evaluation``.
Under ``torchrun`` the same code trains data-parallel (``deeprnn.training.distributed``).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from deeprnn.data import TextCorpus
from deeprnn.errors import ConfigError, RunFolderError, TrainingDiverged
from deeprnn.io import write_json
from deeprnn.models import DeepRNN, ModelConfig, count_parameters
from deeprnn.runtime import own_random_state
from deeprnn.training import distributed, run_folder
from deeprnn.training.builder import load_corpus, pick_device
from deeprnn.training.config import TrainConfig, apply, limit_reached, limits_passed, with_limits
from deeprnn.training.console import Log, Logger, quiet
from deeprnn.training.distributed import World
from deeprnn.training.loop import Callback, Run
from deeprnn.training.run_folder import RunExists, read_config, read_json, resumable_state


def train(
    config: TrainConfig | dict | None,
    out: str | Path,
    *,
    model: DeepRNN | None = None,
    callback: Callback | None = None,
    data_dir: str | None = None,
    resume: bool = False,
    limits: dict | None = None,
    force: bool = False,
    device: str | None = None,
    log: Log = print,
) -> dict:
    """Train ``config`` (a TrainConfig, or a dict of settings over the defaults) in the run folder
    ``out`` (``force``: replacing the run there), or, with ``resume``, continue the run in ``out``
    with its saved configuration and model. Returns the run's results (``results.json``).

    ``model``: a :class:`~deeprnn.DeepRNN` of your own to train, as it is, instead of the
    preset's (``config.model``); a resumed run rebuilds it from ``model.json``, unless it is
    given again (as it must be for a model with transitions of your own). ``callback`` is
    called with each validation record (update, epoch, value, lr, …); returning True stops the
    run (stop reason "callback"), as early stopping would.

    ``limits`` (resuming only) sets new ``epochs``, ``max_updates`` or ``time_budget_s``: a run
    that stopped at its old limit then carries on, as if the new one had been set from the start.
    It may also set ``average_after_epochs`` to an epoch the run has not begun, which adds
    parameter averaging to a run (a finished one, too) exactly as if it had been set from the start.
    ``device`` (resuming only) moves the run: a run begun on a GPU carries on on a CPU, without
    its CUDA graphs (a speed setting: the eager path computes the same updates).
    The folder is locked while the run trains (``deeprnn.training.run_folder``). The run seeds
    PyTorch's generators from ``config.seed``; the caller's random state is given back after it.
    """
    if isinstance(config, dict):
        config = apply(config)
    if model is not None and config is not None and config.architecture:
        raise ConfigError(
            f"with a model of your own, architecture settings ({', '.join(config.architecture)}) would be "
            "ignored: set them on the model's ModelConfig instead"
        )
    parts = {"model": model, "callback": callback}
    with own_random_state():
        return _train(config, Path(out), data_dir, resume, limits or {}, force, device, log, parts)


def _train(config, out, data_dir, resume, limits, force, device, log, parts) -> dict:
    world = distributed.from_environment()
    if resume:
        return _resume(out, limits, data_dir, device, log, world, parts)
    if config is None:
        raise ConfigError("a new run needs a configuration (or resume=True)")
    if not world.main:  # the first process prepares the folder; the others train into it
        device_used = distributed.setup(world, pick_device(config.device))
        corpus = load_corpus(config, data_dir)
        return Run(config, out, corpus, log=quiet, world=world, device=device_used, **parts).train()
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunFolderError(f"--out {out}: a file is in the way; a run needs a folder") from None
    with run_folder.locked(out):  # a refused process leaves the folder alone: it is the holder's
        try:
            return _start(config, out, data_dir, force, log, world, parts)
        finally:
            if created and out.is_dir() and not run_folder.entries(out):  # nothing came of it
                (out / run_folder.LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):  # another process's lock file came meanwhile
                    out.rmdir()


def _start(
    config: TrainConfig, out: Path, data_dir: str | None, force: bool, log, world: World, parts: dict
) -> dict:
    """A new run in the locked folder ``out``: a run there is replaced (``force``) only once the
    new one's configuration, data and model have loaded."""
    old = run_folder.entries(out)
    if old and not force:
        raise RunExists(f"{out} already holds a run; use --resume to continue it or --force to replace it")
    if old:
        run_folder.check_replaceable(out)
    logger = Logger(out / "train.log", log)
    run = Run(
        config,
        out,
        load_corpus(config, data_dir),
        log=logger,
        world=world,
        device=distributed.setup(world, pick_device(config.device)),
        **parts,
    )
    if old:
        run_folder.clear(out)
    write_json(out / "config.json", config.to_dict())
    write_json(out / "model.json", run.model_config.to_dict())
    if isinstance(run.corpus, TextCorpus):  # what sampling needs to write text
        c = run.corpus
        write_json(
            out / "vocab.json", {"name": c.name, "level": c.level, "boundary": c.boundary, "vocab": c.vocab}
        )
    counts = count_parameters(run.model)
    processes = f", {world.size} processes" if world.distributed else ""
    name = run.model_config.name or "a model of your own"
    logger(
        f"{name} on {run.corpus.name}: {counts['weights']:,} weights, {counts['params']:,} "
        f"parameters, device {run.device}{processes}"
    )
    return run.train()


def _model_config(out: Path) -> ModelConfig:
    """The architecture a run was started with (its ``model.json``)."""
    if not (out / "model.json").exists():
        raise RunFolderError(f"{out} has no model.json: it cannot be resumed")
    try:
        return ModelConfig(**read_json(out / "model.json"))
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{out / 'model.json'} is damaged: {error}") from None


def _resume(
    out: Path, limits: dict, data_dir: str | None, device: str | None, log, world: World, parts
) -> dict:
    """Continue the run in ``out`` from its newest readable checkpoint."""
    if not out.is_dir():
        raise RunFolderError(f"{out}: no run folder to resume")
    with run_folder.locked(out) if world.main else contextlib.nullcontext():
        if world.main:
            run_folder.remove_temporaries(out)
        config = read_config(out)
        ended = out / "results.json"
        if ended.exists() and (done := read_json(ended)).get("stop_reason") == "diverged":
            d = done.get("diverged", {})
            raise TrainingDiverged(
                done.get("message", "the run diverged"), d.get("update"), d.get("loss"), d.get("last_good")
            )
        logger = Logger(out / "train.log", log) if world.main else quiet
        state = resumable_state(out, logger)
        if limits:
            at = state["progress"] if state else {"epoch": 0, "batch": 0}  # the epochs begun
            config = with_limits(config, limits, epochs_begun=at["epoch"] + (at["batch"] > 0))
        if device:
            config = replace(config, device=device)
        device_used = distributed.setup(world, pick_device(config.device))
        if config.cuda_graphs and device_used.type != "cuda":  # a GPU's run carried on elsewhere
            logger(f"cuda_graphs: the run now trains on {device_used}, without graphs")
            config = replace(config, cuda_graphs=False)
        model = parts["model"] or _model_config(out)
        corpus = load_corpus(config, data_dir)
        copied = set(state["pretrained"]) if state and "pretrained" in state else None  # else: read again
        parts = {**parts, "model": model, "pretrained": copied}
        run = Run(config, out, corpus, log=logger, world=world, device=device_used, **parts)
        if state is None:  # stopped before its first checkpoint: nothing was trained that could be lost
            logger("no checkpoint yet: the run starts from the beginning")
            return run.train()
        run.resume(state)
        if world.main:
            run.write_metrics()  # as of the checkpoint: a kill may have come before the file's update
            if limits:
                write_json(out / "config.json", config.to_dict())
        p = run.progress
        if p.done and not limit_reached(config, p.stop_reason, p.updates, p.epoch, p.train_seconds):
            logger(f"the run stopped at its {p.stop_reason}; carrying on under the new limits")
            p.done, p.stop_reason = False, ""
        elif not p.done and (passed := limits_passed(config, p.updates, p.epoch, p.train_seconds)):
            # an interrupted run given limits it has already reached: it ends here, at its best
            logger(f"the run has already reached its {passed[0]} limit: it ends at its best point")
            p.done, p.stop_reason = True, passed[0]
        return run.finish() if p.done else run.train()
