"""⊕ from PyTorch's own cells: ``nn.RNNCell``, ``nn.GRUCell`` and ``nn.LSTMCell`` as transitions.

    h_t = cell(x_t, h_{t-1})                           RNNCell, GRUCell
    (h_t, c_t) = cell(x_t, (h_{t-1}, c_{t-1}))         LSTMCell: the carry is (h, c), h read above

So the gated cells the field moved to after the paper stack, take a deep ▷, dropout and lengths,
and train, as the paper's transitions do (:mod:`deeprnn.operators.protocol`).
"""

from __future__ import annotations

import torch
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.protocol import Carry

CELLS = (nn.RNNCell, nn.GRUCell, nn.LSTMCell)


class TorchCell(nn.Module):
    """A PyTorch cell as ⊕. Its own parameters are used as they are, initialisation included."""

    tokens = False  # the cell reads vectors: give token input an embedding (ModelConfig.input_sizes)
    fusable = False

    def __init__(self, cell: nn.RNNCell | nn.GRUCell | nn.LSTMCell) -> None:
        super().__init__()
        if not isinstance(cell, CELLS):
            raise ConfigError(
                f"TorchCell takes an nn.RNNCell, nn.GRUCell or nn.LSTMCell, got {type(cell).__name__}; "
                "a transition of your own follows deeprnn.operators.protocol.Transition instead"
            )
        self.cell = cell
        self.input_size, self.hidden_size = cell.input_size, cell.hidden_size
        self.carries = 2 if isinstance(cell, nn.LSTMCell) else 1

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x  # the cell multiplies x_t itself, inside its step

    def step(self, u: torch.Tensor, carry: Carry, mask: torch.Tensor | None = None) -> Carry:
        if self.carries == 1:
            return self.cell(u, carry if mask is None else carry * mask)
        h, c = carry
        return self.cell(u, (h if mask is None else h * mask, c))

    def extra_repr(self) -> str:
        return f"carries={self.carries}"
