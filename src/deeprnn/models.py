"""A deep RNN = input map ▸ ⊕ over time ▸ ▷ ▸ head, and its plain configuration.

Every model of the paper, and new combinations, is one :class:`ModelConfig`:

| model      | ⊕ (transition)                      | ▷ (output)            |
|------------|-------------------------------------|-----------------------|
| RNN        | ``transition_sizes=()``             | ``output_sizes=()``   |
| DT-RNN     | ``transition_sizes=(z,)``           | ``()``                |
| DT(S)-RNN  | ``(z,)``, ``shortcut=True``          | ``()``                |
| DO-RNN     | ``()``                              | ``(o,)``              |
| DOT(S)-RNN | ``(z,)``, ``shortcut=True``          | ``(o,)``              |
| sRNN       | ``levels=2``                         | ``()``                |

plus ``input_sizes`` for a deep input-to-hidden map. :mod:`deeprnn.presets` holds the paper's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.feedforward import FeedForward
from deeprnn.operators.heads import check_head, make_head
from deeprnn.operators.highway import HighwayTransition
from deeprnn.operators.outputs import DeepOutput
from deeprnn.operators.projection import Projection
from deeprnn.operators.protocol import Carry, Transition
from deeprnn.operators.transitions import DeepTransition
from deeprnn.recurrence import Recurrence

Units = str | tuple[str, ...]


@dataclass
class ModelConfig:
    """Every architectural choice of a deep RNN. Sizes are hidden units per layer."""

    input_size: int
    output_size: int
    hidden_size: int
    head: str = "bernoulli"  # "bernoulli" or "nade" (multi-label frames), "categorical" (token ids)
    input_sizes: tuple[int, ...] = ()  # deep input-to-hidden MLP g(x_t)
    input_units: Units = "sigmoid"
    transition_sizes: tuple[int, ...] = ()  # intermediate layers of ⊕ (DT)
    shortcut: bool = False  # DT(S): h_{t-1} also feeds the last layers of ⊕
    transition_units: Units = "sigmoid"
    transition_kind: str = "mlp"  # ⊕: "mlp" (the paper's) or "highway" (RHN's gated layers)
    levels: int = 1  # stacked recurrent levels (sRNN)
    output_sizes: tuple[int, ...] = ()  # intermediate layers of ▷ (DO)
    output_units: Units = "sigmoid"
    bias: bool = True
    input_dropout: float = 0.0
    state_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    output_dropout: float = 0.0
    # whole token types dropped from the input embedding, one mask per batch (token data)
    embedding_dropout: float = 0.0
    output_init_std: float = 0.01
    # ▷'s softmax matrix is the input embedding's first layer (token data; Press & Wolf 2017)
    tie_weights: bool = False
    nade_hidden: int = 150  # hidden units of the NADE head (RNN-NADE's)
    nade_order: str = "ascending"  # the order in which the NADE reads the keys: low to high
    name: str = ""  # the preset it came from, if any

    def __post_init__(self) -> None:
        for key in ("input_sizes", "transition_sizes", "output_sizes"):
            setattr(self, key, tuple(int(v) for v in getattr(self, key)))
        for key in ("input_units", "transition_units", "output_units"):
            value = getattr(self, key)
            if not isinstance(value, str):
                setattr(self, key, tuple(value))
        check_head(self.head, self.output_size, self.nade_hidden, self.nade_order)
        sizes = (self.input_size, self.output_size, self.hidden_size)
        if min(sizes) < 1:
            raise ConfigError(f"input, output and hidden sizes must be positive, got {sizes}")

    @property
    def tokens(self) -> bool:
        """Inputs are token ids exactly when the head is categorical (language models)."""
        return self.head == "categorical"

    def to_dict(self) -> dict:
        return asdict(self)


class DeepRNN(nn.Module):
    """y_t = ▷ h_t,  h_t = g(x_t) ⊕ h_{t-1}: ``forward`` returns (logits, h_n).

    The arguments and shapes are those of :class:`torch.nn.RNN` (see :class:`Recurrence`);
    the logits are (T, B, output_size), or (B, T, …) with ``batch_first``. ``transitions``, one
    per level, replace the ⊕ that ``config`` describes with your own (any
    :class:`~deeprnn.operators.protocol.Transition`, e.g. ``TorchCell(nn.LSTMCell(88, 64))``,
    whose h_n is then (h_n, c_n) as ``nn.LSTM``'s); ``config`` still gives the sizes, ▷ and head.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        batch_first: bool = False,
        transitions: Sequence[Transition] | None = None,
    ) -> None:
        super().__init__()
        c = config
        if c.levels < 1:
            raise ConfigError(f"levels must be at least 1, got {c.levels}")
        if transitions is not None:
            _check_transitions(transitions, c)
        self.config = c
        self.head = make_head(c.head, c.output_size, c.nade_hidden, c.nade_order)
        input_map = None
        level_input = c.input_size
        if c.input_sizes:
            input_map = FeedForward(c.input_size, c.input_sizes, c.input_units, tokens=c.tokens, bias=c.bias)
            level_input = input_map.out_size
        levels = (
            list(transitions)
            if transitions is not None
            else [
                make_transition(
                    c, level_input if index == 0 else c.hidden_size, c.tokens and index == 0 and not input_map
                )
                for index in range(c.levels)
            ]
        )
        self.recurrence = Recurrence(
            levels,
            input_map,
            batch_first=batch_first,
            input_dropout=c.input_dropout,
            state_dropout=c.state_dropout,
            recurrent_dropout=c.recurrent_dropout,
        )
        self.output = DeepOutput(
            c.hidden_size,
            self.head.logit_size,
            c.output_sizes,
            units=c.output_units,
            bias=c.bias,
            dropout=c.output_dropout,
            tied_to=tied_embedding(c, self.recurrence) if c.tie_weights else None,
        )
        if c.embedding_dropout:
            input_embedding(c, self.recurrence, "embedding_dropout").type_dropout = c.embedding_dropout
        if not c.tie_weights:  # tied, V is the embedding, initialised as one
            nn.init.normal_(self.output.logits.weight, std=c.output_init_std)

    @classmethod
    def from_run(cls, path: str | os.PathLike, device: str | None = None) -> DeepRNN:
        """The model of a run folder with its best parameters, in evaluation mode (see also
        ``deeprnn.pretrained`` for the published ones)."""
        from deeprnn.training.evaluation import load_run  # training builds on this module

        return load_run(path, device)

    def forward(
        self,
        input: torch.Tensor,
        hx: Carry | None = None,
        lengths: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Carry]:
        states, h_n, unbatched = self.recurrence.run(input, hx, lengths, mask)
        logits = self.recurrence.restore_layout(self.output(states), unbatched)
        return logits, self.recurrence.restore_state(h_n, unbatched)

    def step(self, x: torch.Tensor, hx: Carry | None = None) -> tuple[torch.Tensor, Carry]:
        """One step, for generation: x (B, input_size) floats or (B,) token ids, hx (levels, B,
        H) as ``forward``'s h_n (zeros if omitted) -> (logits (B, output_size), the new hx).

        ``forward``'s numbers over one step in evaluation mode (up to rounding), at a fraction
        of its cost per call (see :meth:`~deeprnn.recurrence.Recurrence.step`). Prime hx with
        ``forward`` over the context."""
        if self.training and self.output.dropout > 0:
            raise RuntimeError("step computes the model without dropout: call .eval() first")
        h, hx = self.recurrence.step(x, hx)
        return self.output(h), hx

    def loss(
        self,
        x: torch.Tensor,
        hx: Carry | None = None,
        lengths: torch.Tensor | None = None,
        reduction: str = "mean",
    ) -> torch.Tensor:
        """The NLL (nats) of the sequences ``x``, each step predicted from the steps before it,
        as the trainer scores them: music, every frame (the first from a silent frame); tokens,
        x_1 … x_{T-1} from x_0 … x_{T-2}. Steps at or past ``lengths`` are left out.

        ``reduction``: ``"mean"`` per scored frame or token, ``"sum"``, or ``"none"`` (one value
        per predicted step, laid out as ``x`` without its feature axis; 0 at padding)."""
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"reduction must be mean, sum or none; got {reduction!r}")
        batched = x.dim() == (2 if self.config.tokens else 3)
        time = 1 if batched and self.recurrence.batch_first else 0
        steps = x.shape[time]
        if self.config.tokens:
            inputs, targets = x.narrow(time, 0, max(steps - 1, 0)), x.narrow(time, 1, max(steps - 1, 0))
            lengths = None if lengths is None else (lengths - 1).clamp_min(0)
        else:
            silent = torch.zeros_like(x.narrow(time, 0, min(steps, 1)))
            inputs, targets = torch.cat([silent, x.narrow(time, 0, max(steps - 1, 0))], time), x
        keep = None
        if lengths is not None:  # what padding holds (NaN, an id past the vocabulary) is not scored
            t = torch.arange(targets.shape[time], device=x.device)
            keep = t[None, :] < lengths[:, None] if time == 1 else t[:, None] < lengths
            keep = keep if batched else keep[:, 0]
            fill = torch.zeros((), dtype=targets.dtype, device=targets.device)
            targets = torch.where(keep if self.config.tokens else keep[..., None], targets, fill)
        logits, _ = self(inputs, hx, lengths)
        nll = self.head.nll(logits, targets)
        if keep is not None:
            nll = torch.where(keep, nll, 0.0)
        if reduction == "none":
            return nll
        total = nll.sum()
        if reduction == "sum":
            return total
        count = targets.shape[time] * (targets.shape[1 - time] if batched else 1)
        return total / max(count if lengths is None else int(lengths.sum()), 1)


def _check_transitions(transitions: Sequence[Transition], c: ModelConfig) -> None:
    """Your own ⊕ levels must fit the sizes ``c`` gives the rest of the model."""
    if len(transitions) != c.levels:
        raise ConfigError(f"{len(transitions)} transitions given for levels = {c.levels}: one per level")
    first = c.input_sizes[-1] if c.input_sizes else c.input_size
    reads_tokens = c.tokens and not c.input_sizes
    for index, level in enumerate(transitions):
        expected = first if index == 0 else c.hidden_size
        if level.hidden_size != c.hidden_size or level.input_size != expected:
            raise ConfigError(
                f"transition {index} maps {level.input_size} -> {level.hidden_size}; the config needs "
                f"{expected} -> {c.hidden_size} (hidden_size, and input_size or the input map's last width)"
            )
        if index == 0 and bool(level.tokens) != reads_tokens:
            need = "reads token ids" if reads_tokens else "reads vectors"
            raise ConfigError(
                f"transition 0 must read what the model's input gives it: here it {need} "
                "(a ⊕ that reads vectors takes token input through an embedding: set input_sizes)"
            )


def input_embedding(c: ModelConfig, recurrence: Recurrence, setting: str) -> Projection:
    """The embedding that reads the token ids, for ``setting``, which needs one (see
    :meth:`~deeprnn.recurrence.Recurrence.token_embedding`)."""
    if not c.tokens:
        raise ConfigError(f"{setting} acts on the input embedding of tokens: it needs token data")
    embedding = recurrence.token_embedding()
    if embedding is None:
        raise ConfigError(f"{setting}: {type(recurrence.levels[0]).__name__} has no input embedding")
    return embedding


def tied_embedding(c: ModelConfig, recurrence: Recurrence) -> Projection:
    """The input embedding whose first layer's columns ▷ scores tokens with (``tie_weights``),
    checked to be as wide as what ▷'s softmax reads."""
    embedding = input_embedding(c, recurrence, "tie_weights")
    if recurrence.input_map is not None:
        first = recurrence.input_map.units[0].in_width
    elif isinstance(level := recurrence.levels[0], DeepTransition | HighwayTransition):
        first = level.pre_sizes[0] if isinstance(level, DeepTransition) else level.hidden_size
    else:
        raise ConfigError(f"tie_weights: {type(level).__name__}'s embedding has no first layer to share")
    read = c.output_sizes[-1] if c.output_sizes else c.hidden_size
    if first != read:
        raise ConfigError(
            f"tie_weights: the embedding's first layer is {first} wide and ▷'s softmax reads {read}; "
            "they must be equal (the first transition or input width; ▷'s last width or the hidden size)"
        )
    return embedding


TRANSITION_KINDS = ("mlp", "highway")


def make_transition(c: ModelConfig, input_size: int, tokens: bool) -> DeepTransition | HighwayTransition:
    """One level of ⊕: the paper's MLP transition, or highway layers (all of the hidden size)."""
    if c.transition_kind == "mlp":
        return DeepTransition(
            input_size,
            c.hidden_size,
            c.transition_sizes,
            shortcut=c.shortcut,
            units=c.transition_units,
            bias=c.bias,
            tokens=tokens,
        )
    if c.transition_kind != "highway":
        raise ConfigError(
            f"transition_kind must be one of {', '.join(TRANSITION_KINDS)}, got {c.transition_kind!r}"
        )
    if c.shortcut or any(w != c.hidden_size for w in c.transition_sizes):
        raise ConfigError(
            "highway layers all have the hidden size and no shortcut (x_t enters the first layer): "
            f"got transition_sizes {list(c.transition_sizes)}, hidden size {c.hidden_size}, "
            f"shortcut {c.shortcut}"
        )
    depth = 1 + len(c.transition_sizes)
    return HighwayTransition(
        input_size, c.hidden_size, depth, units=c.transition_units, bias=c.bias, tokens=tokens
    )


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``weights``: the matrices (the paper's counts, biases excluded); ``params``: everything."""
    weights = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    return {"weights": weights, "params": sum(p.numel() for p in model.parameters())}


def describe(model: DeepRNN) -> list[dict]:
    """The layers of a model, in order, with their parameter counts (for ``deeprnn info``)."""
    rows = []
    rec = model.recurrence
    if rec.input_map is not None:
        for i, (layer, unit) in enumerate(zip(rec.input_map.layers, rec.input_map.units, strict=True)):
            rows.append(
                _row(f"input g: layer {i + 1}", layer, f"{layer.in_size} -> {unit.width} {unit.spec}")
            )
    for index, level in enumerate(rec.levels):
        name = f"⊕ level {index + 1}" if rec.num_levels > 1 else "⊕"
        rows.append(_row(name, level, level.describe()))
    out = model.output
    shape = [*(u.width for u in out.hidden.units), out.out_size]
    units = "/".join(u.spec for u in out.hidden.units) or "affine"
    rows.append(
        _row(
            "▷",
            out,
            f"{'deep' if out.depth > 1 else 'shallow'} output: {out.hidden_size} -> {shape} ({units})"
            + (", softmax tied to the input embedding" if model.config.tie_weights else ""),
        )
    )
    if isinstance(model.head, nn.Module):
        head = model.head
        rows.append(_row("head", head, f"{head.name}: {head.extra_repr()}"))
    else:
        rows.append({"layer": "head", "what": model.head.name, "weights": 0, "params": 0})
    return rows


def _row(name: str, module: nn.Module, what: str) -> dict:
    return {"layer": name, "what": what, **count_parameters(module)}
