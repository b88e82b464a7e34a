"""A stack grown from a trained one without starting over (``init_parts = "stack"``).

The paper trains its sRNN from a trained RNN (docs/paper.md §4), the new level and ▷ afresh:
the stack starts far behind the RNN it grew from. Here it starts near it, as Net2Net deepens a
network (Chen, Goodfellow and Shlens 2016), adapted to saturating units. The source's levels
and ▷ are copied; each added level l reads the level below through U = α I, W = 0 and a bias
that centres its units where they are most nearly linear,

    h^l_t = φ(α (h^{l-1}_t - m)),   m = 1/2 and α = 4 for sigmoid units, m = 0 and α = 1 for tanh;

then, per unit, the source's top state is fitted as an affine map of the new top state over
the first training segments, h^src ≈ a ⊙ h^top + b (least squares), and ▷'s affine output
absorbs it: V' = V diag(a), c' = c + V b. The stack then scores as its source did, up to the
curvature of φ over the states' range. (Under dropout on the top states, V b is no longer
dropped with them as it was in the source: the same on average.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

import torch

from deeprnn.data.batching import Batch
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.operators.transitions import DeepTransition
from deeprnn.training.ranges import UNCHECKED_ON_INIT

# Each unit's most nearly linear region: its centre m and the gain α = 1 / φ'(0) that gives
# φ(α (x - m)) a slope of 1 there. A sigmoid level's states near 0 or 1 stay near them (so dropout
# on the new level's states removes what it removed before), and those in between are bent a
# little: on PTB characters the grown stack scores within 0.01 nats of its source.
LINEAR_REGIONS = {"sigmoid": (0.5, 4.0), "tanh": (0.0, 1.0)}
FIT_SEGMENTS = 8  # training segments whose states the least-squares fit reads


def grow(
    model: DeepRNN, best: dict, saved_config: dict | None, run: Path, segments: Iterable[Batch]
) -> set[str]:
    """Start ``model``, a stack of more levels than the run ``run`` (its parameters ``best``, its
    model configuration ``saved_config``), from it as the module docstring says; return the
    names of the parameters copied (the pretrained ones: the source's levels and ▷). The stack
    is grown aside and copied in at the end: an error leaves ``model`` as it was."""
    config = _source_config(model, saved_config, run)
    source = DeepRNN(config).to(next(model.parameters()).device)
    source.load_state_dict(best)
    stack = copy.deepcopy(model)
    with torch.no_grad():
        own = stack.state_dict()
        for name, value in best.items():
            own[name].copy_(value)
        for level in list(stack.recurrence.levels)[config.levels :]:
            _near_identity(level)
        a, b = _affine_fit(source, stack, segments, run)
        logits = stack.output.logits
        logits.bias.add_(logits.weight @ b)
        logits.weight.mul_(a)
        model.load_state_dict(stack.state_dict())
    return set(best)


def _source_config(model: DeepRNN, saved_config: dict | None, run: Path) -> ModelConfig:
    """The run's model configuration, if ``model`` can grow from it (else a ConfigError)."""
    c = model.config
    why = None
    if saved_config is None:
        why = "its checkpoint does not record its model's configuration"
    elif c.output_sizes or c.tie_weights or not c.bias:
        why = "the stack's ▷ must be one affine map with a bias, untied, to absorb the fit"
    elif not 1 <= saved_config.get("levels", 1) < c.levels:
        why = f"it has {saved_config.get('levels', 1)} level(s), the stack {c.levels}: it must have fewer"
    else:
        mine = c.to_dict()
        free = (*UNCHECKED_ON_INIT, "levels")
        differ = [k for k in mine if k not in free and k in saved_config and saved_config[k] != mine[k]]
        if differ:
            why = (
                f"its model differs from the stack's in more than levels and dropout: {', '.join(differ[:4])}"
            )
    if why is None:
        added = list(model.recurrence.levels)[saved_config["levels"] :]
        if not all(_growable(t) for t in added):
            why = f"an added level must be a shallow transition of {' or '.join(LINEAR_REGIONS)} units"
    if why is not None:
        raise ConfigError(f'init_from {run} with init_parts = "stack": {why}')
    return ModelConfig(**saved_config)


def _growable(level: object) -> bool:
    return isinstance(level, DeepTransition) and level.depth == 1 and level.units[0].kind in LINEAR_REGIONS


def _near_identity(level: DeepTransition) -> None:
    """h_t = φ(α (x_t - m)): U = α I, W = 0, b = -α m."""
    centre, gain = LINEAR_REGIONS[level.units[0].kind]
    level.input.weight.copy_(gain * torch.eye(level.hidden_size))
    level.input.bias.fill_(-gain * centre)
    level.recurrent_weight.zero_()


def _affine_fit(
    source: DeepRNN, stack: DeepRNN, segments: Iterable[Batch], run: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, a and b of h^src ≈ a ⊙ h^top + b by least squares over the segments' valid steps
    (each model's state carried from one segment to the next, as training carries it)."""
    olds, news = [], []
    old_state = new_state = None
    device = next(stack.parameters()).device
    source.eval()
    stack.eval()
    for batch in islice(segments, FIT_SEGMENTS):
        batch = batch.to(device)
        if batch.reset:
            old_state = new_state = None
        old, old_state, _ = source.recurrence.run(batch.inputs, old_state, batch.lengths)
        new, new_state, _ = stack.recurrence.run(batch.inputs, new_state, batch.lengths)
        valid = torch.ones(old.shape[:2], dtype=torch.bool, device=device)
        if batch.lengths is not None:
            valid = torch.arange(len(valid), device=device).unsqueeze(1) < batch.lengths
        olds.append(old[valid])
        news.append(new[valid])
    if not sum(len(o) for o in olds):
        raise ConfigError(f'init_from {run} with init_parts = "stack": no training steps to fit ▷ on')
    old, new = torch.cat(olds).double(), torch.cat(news).double()
    old_mean, new_mean = old.mean(0), new.mean(0)
    spread = (new - new_mean).square().mean(0)
    a = ((new - new_mean) * (old - old_mean)).mean(0) / spread.clamp_min(1e-12)
    a = torch.where(spread > 1e-12, a, 0.0)  # a unit that never moves: its mean goes into b
    return a.float(), (old_mean - a * new_mean).float()
