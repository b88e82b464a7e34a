"""A model grown from a trained, shallower one without starting over: more levels
(``init_parts = "stack"``: the sRNN from the RNN) or a deep ▷ from a shallow one
(``"deep-output"``: the DOT(S)-RNN from the DT(S)-RNN).

The paper trains these from the smaller model with the new parts afresh (docs/paper.md §4):
the new model starts far behind the one it grew from. Here it starts near it, as Net2Net deepens
a network (Chen, Goodfellow and Shlens 2016), adapted to saturating units. The source's
parameters are copied; each added layer, a level of the stack or a layer of ▷, carries the
state it reads in its first H units through U = α I (the rest of its input 0) and a bias that
puts the middle of that state's range where its own units are most nearly linear,

    o_i = φ(α (x_i - m)),   α = 1 / φ'(0): 4 for sigmoid units, 1 for tanh;
                            m = 1/2 if x comes from sigmoid units, 0 from tanh;

(a deep ▷'s other units keep their random start, their outgoing weights 0). Then, per unit, the
source's top state is fitted as an affine map of the first H units of what the new ▷'s last
affine map reads, h^src ≈ a ⊙ o + b (least squares over the first training segments), and that
map absorbs it: V' = [V diag(a), 0], c' = c + V b. The model then scores as its source did, up
to the curvature of φ over the states' range. It counts as pretrained (``pretrained_lr_scale``),
its new columns too.

With tied weights (a deep ▷ only) V is the input embedding, which must stay as it is: ▷'s last
layer takes the fit instead, a gain and a centre per unit, o_i = φ(g_i (x_i - m_i)), those that
bring o_i nearest to h^src_i up to a constant b_i, and c' = c + V b. That needs ▷'s units to span the
state's range (sigmoid on sigmoid states, as in the paper's models).

In training mode, dropout differs: on a stack's top states, V b is no longer dropped with them as
it was in the source (the same on average); dropout in ▷ (``output_dropout``) is new, the source's
▷ having had none, and between two of its layers it passes through φ and is biased.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path

import torch

from deeprnn.data.batching import Batch
from deeprnn.errors import ConfigError
from deeprnn.models import DeepRNN, ModelConfig
from deeprnn.operators.projection import Projection
from deeprnn.operators.transitions import DeepTransition
from deeprnn.training.ranges import UNCHECKED_ON_INIT

# Per kind of unit: the middle m of the range of its outputs (where a layer reading them centres
# them), and the gain α = 1 / φ'(0) that gives φ(α (x - m)) a slope of 1 at x = m. A sigmoid
# level reading a sigmoid level keeps states near 0 or 1 near them (so dropout on the new level's
# states removes what it removed before) and bends those in between a little: on PTB characters
# the grown stack scores within 0.01 nats of its source. Last, half the width of the range.
LINEAR_REGIONS = {"sigmoid": (0.5, 4.0, 0.5), "tanh": (0.0, 1.0, 1.0)}
FIT_SEGMENTS = 8  # training segments whose states the least-squares fit reads
# The tied fit's grid: gains from 1/2 to 8 times α, centres m ± 0.6 of the half-width read.
GAIN_SCALES = torch.logspace(-1, 3, 41, base=2.0).tolist()
CENTRE_SHIFTS = torch.linspace(-0.6, 0.6, 13).tolist()


def grow(
    model: DeepRNN, best: dict, saved_config: dict | None, run: Path, segments: Iterable[Batch], parts: str
) -> set[str]:
    """Start ``model`` from the run ``run`` (its parameters ``best``, its model configuration
    ``saved_config``) by ``parts`` ("stack" or "deep-output"), as the module docstring says; return
    the names of the parameters copied (the pretrained ones: all of the source's). The model is
    grown aside and copied in at the end: an error leaves ``model`` as it was."""
    where = f'init_from {run} with init_parts = "{parts}"'
    config = _source_config(model, saved_config, where, parts)
    source = DeepRNN(config).to(next(model.parameters()).device)
    source.load_state_dict(best)
    grown = copy.deepcopy(model)
    output = grown.output
    with torch.no_grad():
        own = grown.state_dict()
        for name, value in best.items():
            if name != "output.logits.weight":
                own[name].copy_(value)
        width, reads = config.hidden_size, source.recurrence.levels[-1].units[-1].kind
        for level in list(grown.recurrence.levels)[config.levels :]:
            reads = _near_identity(level.input, level.units[0].kind, reads, width)
            level.recurrent_weight.zero_()
        last_reads = reads  # what ▷'s last layer reads (the top state if ▷ is one map)
        for layer, unit in zip(output.hidden.layers, output.hidden.units, strict=True):
            last_reads, reads = reads, _near_identity(layer, unit.kind, reads, width)
        h, x = _fit_pairs(source, grown, segments, where)
        old = source.output.logits
        if model.config.tie_weights:  # V' is the embedding: ▷'s last layer takes the fit instead
            kind = output.hidden.units[-1].kind
            b = _fit_gains_and_centres(output.hidden.layers[-1], kind, last_reads, h, x)
        else:
            last = output.hidden.units[-1](output.hidden.layers[-1](x)) if output.hidden.layers else x
            a, b = _least_squares(h, last)
            output.logits.weight.zero_()
            output.logits.weight[:, :width] = old.weight * a
        output.logits.bias.copy_(old.bias + old.weight @ b)
        model.load_state_dict(grown.state_dict())
    return set(best)


def _source_config(model: DeepRNN, saved_config: dict | None, where: str, parts: str) -> ModelConfig:
    """The run's model configuration, if ``model`` can grow from it by ``parts`` (else a
    ConfigError that says ``where``)."""
    c = model.config
    stack = parts == "stack"
    why = None
    if saved_config is None:
        why = "its checkpoint does not record its model's configuration"
    elif not c.bias:
        why = "▷'s last map must have a bias, to absorb the fit"
    elif stack and c.tie_weights:
        why = "a stack grows untied (tied, the softmax is the embedding: ▷'s last map cannot absorb the fit)"
    elif stack and c.output_sizes:
        why = 'the stack\'s ▷ must be one affine map (a deep ▷ grows with init_parts = "deep-output")'
    elif stack and not 1 <= saved_config.get("levels", 1) < c.levels:
        why = f"it has {saved_config.get('levels', 1)} level(s), the stack {c.levels}: it must have fewer"
    elif not stack and saved_config.get("output_sizes"):
        why = 'its ▷ is deep already: it must be one affine map (a second stage: init_parts = "all")'
    elif not stack and not c.output_sizes:
        why = "this model's ▷ is one affine map, with no layer to grow: give it output_sizes"
    else:
        free = (*UNCHECKED_ON_INIT, "output_units", "levels" if stack else "output_sizes")
        mine = c.to_dict()
        differ = [k for k in mine if k not in free and k in saved_config and saved_config[k] != mine[k]]
        if differ:
            grows = "levels" if stack else "▷"
            why = f"its model differs from this one in more than {grows} and dropout: {', '.join(differ[:4])}"
    if why is None:
        why = _why_not_growable(model, saved_config.get("levels", 1) if stack else c.levels)
    if why is not None:
        raise ConfigError(f"{where}: {why}")
    return ModelConfig(**saved_config)


def _why_not_growable(model: DeepRNN, source_levels: int) -> str | None:
    """Why the model's added layers cannot start near the identity, if they cannot."""
    kinds = " or ".join(LINEAR_REGIONS)
    top = model.recurrence.levels[source_levels - 1]
    if not (isinstance(top, DeepTransition) and top.units[-1].kind in LINEAR_REGIONS):
        return f'the state it grows from must be of {kinds} units, from a transition_kind = "mlp" level'
    for level in list(model.recurrence.levels)[source_levels:]:
        shallow = isinstance(level, DeepTransition) and level.depth == 1
        if not (shallow and level.units[0].kind in LINEAR_REGIONS):
            return f'an added level must be a shallow transition (transition_kind = "mlp") of {kinds} units'
    hidden = model.output.hidden
    for layer, unit in zip(hidden.layers, hidden.units, strict=True):
        if unit.kind not in LINEAR_REGIONS:
            return f"▷'s layers must have {kinds} units"
        if layer.out_size < model.config.hidden_size:
            return f"▷'s layers must be at least as wide as the state ({model.config.hidden_size}) they carry"
    state, last = top.units[-1].kind, hidden.units[-1].kind if hidden.units else None
    if model.config.tie_weights and last != state:
        return f"tied, ▷'s last layer must have the state's units, {state}, not {last}: V cannot rescale it"
    return None


def _near_identity(layer: Projection, kind: str, reads: str, width: int) -> str:
    """o_i = φ(α (x_i - m)) for the first ``width`` inputs and outputs, α from the layer's units
    (``kind``), m from those of its input (``reads``): U = [α I, 0] and b = -α m in those rows,
    the layer's other rows as they were. Returns ``kind``, what the next layer reads."""
    gain, centre = LINEAR_REGIONS[kind][1], LINEAR_REGIONS[reads][0]
    layer.weight[:width].zero_()
    layer.weight[:width, :width] = gain * torch.eye(width)
    layer.bias[:width] = -gain * centre
    return kind


def _fit_pairs(
    source: DeepRNN, grown: DeepRNN, segments: Iterable[Batch], where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The source's top states h^src (steps, H) and what the grown ▷'s last layer reads at the
    same steps (the grown top state if ▷ is one map), over the segments' valid steps (each
    model's state carried from one segment to the next, as training carries it)."""
    olds, news = [], []
    old_state = new_state = None
    device = next(grown.parameters()).device
    stacked = grown.config.levels > source.config.levels
    source.eval()
    grown.eval()
    for batch in islice(segments, FIT_SEGMENTS):
        batch = batch.to(device)
        if batch.reset:
            old_state = new_state = None
        old, old_state, _ = source.recurrence.run(batch.inputs, old_state, batch.lengths)
        new = old
        if stacked:  # else the grown recurrence is the source's: its states are the same
            new, new_state, _ = grown.recurrence.run(batch.inputs, new_state, batch.lengths)
        hidden = grown.output.hidden
        for layer, unit in zip(hidden.layers[:-1], hidden.units[:-1], strict=True):
            new = unit(layer(new))
        valid = torch.ones(old.shape[:2], dtype=torch.bool, device=device)
        if batch.lengths is not None:
            valid = torch.arange(len(valid), device=device).unsqueeze(1) < batch.lengths
        olds.append(old[valid])
        news.append(new[valid])
    if not sum(len(o) for o in olds):
        raise ConfigError(f"{where}: no training steps to fit ▷ on")
    return torch.cat(olds), torch.cat(news)


def _least_squares(old: torch.Tensor, new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, a and b of old ≈ a ⊙ new + b by least squares (over the first H units of new)."""
    old, new = old.double(), new[:, : old.shape[1]].double()
    old_mean, new_mean = old.mean(0), new.mean(0)
    spread = (new - new_mean).square().mean(0)
    a = ((new - new_mean) * (old - old_mean)).mean(0) / spread.clamp_min(1e-12)
    a = torch.where(spread > 1e-12, a, 0.0)  # a unit that never moves: its mean goes into b
    return a.float(), (old_mean - a * new_mean).float()


def _fit_gains_and_centres(
    layer: Projection, kind: str, reads: str, old: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """Tied weights: per unit, the gain and centre of ▷'s last layer, o_i = φ(g_i (x_i - m_i)),
    that make o_i most nearly h^src_i up to a constant b_i (the least variance of h^src_i - o_i,
    over a grid, then refined between its points); sets the layer's first H rows and returns b,
    for the softmax's bias to absorb (V b: V is the embedding)."""
    width = old.shape[1]
    old, x = old.double(), x[:, :width].double()
    phi = torch.sigmoid if kind == "sigmoid" else torch.tanh
    gain, (middle, _, half) = LINEAR_REGIONS[kind][1], LINEAR_REGIONS[reads]
    ones = torch.ones_like(old[0])
    grid = [(gain * g * ones, (middle + half * m) * ones) for g in GAIN_SCALES for m in CENTRE_SHIFTS]
    g, m = _least_spread(old, x, phi, grid)
    g_step, m_step = GAIN_SCALES[1] / GAIN_SCALES[0], half * (CENTRE_SHIFTS[1] - CENTRE_SHIFTS[0])
    fine = [(g * g_step ** (i / 5), m + m_step * j / 5) for i in range(-5, 6) for j in range(-5, 6)]
    g, m = _least_spread(old, x, phi, fine)
    layer.weight[:width, :width] = torch.diag(g)
    layer.bias[:width] = -g * m
    return (old - phi(g * (x - m))).mean(0).float()


def _least_spread(
    old: torch.Tensor, x: torch.Tensor, phi: Callable, candidates: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per unit, the candidate (g, m) with the least variance of h^src - φ(g (x - m))."""
    spreads = torch.stack([(old - phi(g * (x - m))).var(0) for g, m in candidates])
    best = spreads.argmin(0, keepdim=True)
    gains, centres = (torch.stack(part) for part in zip(*candidates, strict=True))
    return gains.gather(0, best)[0], centres.gather(0, best)[0]
