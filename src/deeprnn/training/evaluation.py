"""Scoring: the NLL of a batch and of a split, and a run's best parameters scored after the fact.

Every frame or token of a split is scored exactly once; text is scored as one stream with the
state carried throughout (``deeprnn.training.builder.batches``), as the paper does.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from deeprnn import published
from deeprnn.data import MusicCorpus, TextCorpus, load
from deeprnn.data.batching import Batch, MusicBatches, TextBatches
from deeprnn.driver import map_carry
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.operators.protocol import Carry
from deeprnn.published import Published
from deeprnn.training import checkpoint
from deeprnn.training.builder import batches, pick_device
from deeprnn.training.config import TrainConfig
from deeprnn.training.metrics import from_nll, metric_name
from deeprnn.training.precision import autocast
from deeprnn.training.run_folder import read_config


def valid_mask(batch: Batch) -> torch.Tensor | None:
    if batch.lengths is None:
        return None
    steps = batch.inputs.shape[0]
    return torch.arange(steps, device=batch.lengths.device).unsqueeze(1) < batch.lengths


def batch_nll(
    model: DeepRNN,
    batch: Batch,
    state: Carry | None,
    net: nn.Module | None = None,
    from_second: bool = False,
    per_column: bool = False,
) -> tuple[torch.Tensor, Carry]:
    """Summed NLL (nats) of the valid targets of a batch (``from_second``: but the first step's),
    or of each column (``per_column``: (B,)), and the state after it; ``net`` is the model as
    called for training (its DistributedDataParallel wrapper, if any). Under autocast the loss
    is computed in the parameters' dtype (float32), from the head's input on."""
    logits, state = (net or model)(batch.inputs, state, batch.lengths)
    dtype = next(model.parameters()).dtype  # under autocast: the loss, and the state carried on
    with torch.autocast(logits.device.type, enabled=False):
        nll = model.head.nll(logits.to(dtype), batch.targets)
    state = map_carry(lambda part: part.to(dtype), state)
    if from_second:
        nll = nll[1:]
    mask = valid_mask(batch)
    if mask is not None and from_second:
        mask = mask[1:]
    if mask is not None:
        nll = torch.where(mask, nll, 0.0)
    return nll.sum(0) if per_column else nll.sum(), state


@torch.no_grad()
def evaluate(
    model: DeepRNN,
    data: MusicBatches | TextBatches,
    device: torch.device,
    from_second: bool = False,
    precision: str = "fp32",
) -> tuple[float, int]:
    """Total NLL (nats, summed in float64) and the number of targets, the state carried.

    ``from_second`` (whole pieces of music): leave each piece's first frame out, the convention
    of the TCN paper's code (frames 2..T, divided by the sum of T - 1); ours scores every frame,
    the first from a zero state and a silent input. ``precision``: the forward passes' (see
    :mod:`deeprnn.training.precision`)."""
    was_training = model.training
    model.eval()
    total, count, state = 0.0, 0, None
    for batch in data.batches():
        batch = batch.to(device)
        if batch.reset:
            state = None
        if from_second and not batch.reset:
            raise ConfigError("scoring from the second frame needs batches of whole pieces")
        with autocast(device, precision):
            nll, state = batch_nll(model, batch, state, from_second=from_second)
        total += float(nll.double())
        count += batch.count - (_columns_with_frames(batch) if from_second else 0)
    model.train(was_training)
    return total, count


def _columns_with_frames(batch: Batch) -> int:
    if batch.lengths is None:
        return batch.inputs.shape[1] if batch.inputs.shape[0] else 0
    return int((batch.lengths > 0).sum())


def evaluate_run(
    out: str | Path | Published,
    split: str = "test",
    *,
    data_dir: str | None = None,
    device: str | None = None,
    per_piece: bool = False,
    from_second: bool = False,
) -> dict:
    """Score a run's best parameters on a split, as its final results are scored; with
    ``per_piece`` (music), also each piece alone, to see which pieces weigh on the score;
    ``from_second`` (music): without each piece's first frame (see :func:`evaluate`)."""
    if split not in ("train", "valid", "test"):
        raise ConfigError(f"split must be train, valid or test; got {split!r}")
    model, config, update = load_best(out, device)
    dev = next(model.parameters()).device
    corpus = load(config.data, data_dir, text_level=config.text_level, frames_per_beat=config.frames_per_beat)
    if (per_piece or from_second) and not isinstance(corpus, MusicCorpus):
        raise ConfigError(
            f"per-piece scores and scores from the second frame are for music runs; {out} is a "
            "text run (its split is one stream)"
        )
    metric = metric_name(
        "music" if isinstance(corpus, MusicCorpus) else "text", getattr(corpus, "level", "frame")
    )
    if isinstance(corpus, TextCorpus):
        config = replace(config, eval_batch_size=1)
    total, count = evaluate(model, batches(config, corpus, split, training=False), dev, from_second)
    result = {"split": split, **split_score(metric, total, count), "update": update, "run": str(out)}
    result["scored_from"] = "second frame" if from_second else "first frame"
    if per_piece:
        names = corpus.names.get(split)
        result["pieces"] = piece_scores(model, corpus.splits[split], dev, names, from_second=from_second)
    return result


def split_score(metric: str, total: float, count: int) -> dict:
    """A split's score: the metric's value from the total NLL (nats) over ``count`` targets."""
    return {"metric": metric, "value": from_nll(metric, total, count), "nll": total, "count": count}


@torch.no_grad()
def piece_scores(
    model: DeepRNN,
    pieces: list,
    device: torch.device,
    names: list[str] | None = None,
    batch: int = 16,
    from_second: bool = False,
) -> list[dict]:
    """Each piece's NLL, scored alone from a zero state, in the split's order, with its name
    (its file, for a MIDI folder) where the data has one; ``from_second``: without its first
    frame, as the split's score then is; a piece without frames scored has no NLL per frame
    (None). Whole pieces go ``batch`` at a time, of like lengths, each column's NLL its piece's:
    the same numbers as one piece a call, without a loop of batch 1."""
    was_training = model.training
    model.eval()
    data, totals = MusicBatches(pieces, batch), [0.0] * len(pieces)
    for group, columns in zip(data.groups(), data.batches(), strict=True):
        nll, _ = batch_nll(model, columns.to(device), None, from_second=from_second, per_column=True)
        for index, total in zip(group, nll.double().tolist(), strict=True):
            totals[index] = total
    model.train(was_training)
    scores = []
    for index, (piece, total) in enumerate(zip(pieces, totals, strict=True)):
        scored = max(len(piece) - from_second, 0)  # the frames scored
        name, per_frame = names[index] if names else None, total / scored if scored else None
        scores.append(
            {"piece": index, "name": name, "frames": scored, "nll": total, "nll_per_frame": per_frame}
        )
    return scores


def load_run(out: str | Path, device: str | None = None, model: DeepRNN | None = None) -> DeepRNN:
    """The model of a run folder with its best parameters, in evaluation mode (on ``device``,
    default the run's): ``deeprnn.load_run("runs/jsb-dts")``. A model with transitions of your
    own cannot be rebuilt from its configuration: pass one like it as ``model``."""
    return load_best(out, device, model)[0].eval()


def load_best(
    out: str | Path | Published, device: str | None = None, model: DeepRNN | None = None
) -> tuple[DeepRNN, TrainConfig, int]:
    """A run's best parameters in a model (``model``, else one built from the run's
    configuration; on ``device``, default the run's), its config, and the update at which they
    were best; or those of published weights (on the CPU by default)."""
    if isinstance(out, Published):
        if model is not None:
            raise ConfigError(f"{out} builds its own model; pass no model with published weights")
        model, config, update, _ = published.load(out.name, pick_device(device or "cpu"))
        return model, config, update
    out = Path(out)
    config = read_config(out)
    best = checkpoint.load(out / "checkpoints" / "best.pt")
    model = model or DeepRNN(ModelConfig(**best["model_config"]))
    try:
        model.load_state_dict(best["model"])
    except RuntimeError as error:
        raise ConfigError(
            f"{out}: its parameters do not fit the model ({str(error).splitlines()[0]}); a run of a model "
            "with transitions of your own loads into one like it: load_run(folder, model=...)"
        ) from None
    return model.to(pick_device(device or config.device)), config, best["update"]
