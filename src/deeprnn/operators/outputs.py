"""The output operator ▷ of the paper, y_t = ▷ h_t: shallow or deep.

    shallow:  y_t = V h_t + c
    deep:     o_t = φ(V_1 h_t + c_1) (one or more layers),  y_t = V_L o_t + c_L

The result is the logits of the head (see :mod:`deeprnn.operators.heads`). With ``tied_to``, V_L
is the first columns of the input embedding (token data: weight tying). As in the paper
(and unlike GroundHog's tutorial), ▷ reads only h_t: there is no input-to-output path.
Input is time-major (T, B, H): dropout uses one mask per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.dropout import locked_dropout
from deeprnn.operators.feedforward import FeedForward
from deeprnn.operators.projection import Projection, TiedProjection


class DeepOutput(nn.Module):
    """▷ with ``len(inner_sizes)`` intermediate layers (0: the RNN's shallow output)."""

    def __init__(
        self,
        hidden_size: int,
        out_size: int,
        inner_sizes: Sequence[int] = (),
        *,
        units: str | Sequence[str] = "sigmoid",
        bias: bool = True,
        dropout: float = 0.0,
        tied_to: Projection | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"output dropout must be in [0, 1), got {dropout}")
        self.hidden = FeedForward(hidden_size, inner_sizes, units, bias=bias, dropout=dropout)
        width = self.hidden.out_size
        if tied_to is None:
            self.logits = Projection(width, out_size, bias=bias)
        else:
            self.logits = TiedProjection(tied_to, width, out_size, bias=bias)
        self.hidden_size, self.out_size, self.dropout = hidden_size, out_size, dropout

    @property
    def depth(self) -> int:
        return len(self.hidden.layers) + 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        o = self.hidden(h)
        if len(self.hidden.layers):
            o = locked_dropout(o, self.dropout, self.training)
        return self.logits(o)
