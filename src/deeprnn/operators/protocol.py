"""The ⊕ contract, h_t = x_t ⊕ h_{t-1}: what the driver (:mod:`deeprnn.driver`) asks of a
transition, so that your own runs wherever deeprnn's do (stacked, under any ▷, with dropout,
lengths, the trainer and its checkpoints).

A transition is an :class:`torch.nn.Module` that splits its step in two: the part that reads x_t
alone, done for all steps at once before the loop (``project``), and the part that reads the
carry, done once per step (``step``). The carry is the (B, H) state, or, for a cell with more
than one state (an LSTM's (h, c)), a tuple of ``carries`` such tensors whose first is h, the
state the levels above and ▷ read, as ``torch.nn.LSTM`` orders them.

deeprnn's own: :class:`~deeprnn.operators.transitions.DeepTransition` (the paper's),
:class:`~deeprnn.operators.highway.HighwayTransition` (gated), and
:class:`~deeprnn.operators.torch_cells.TorchCell` (``nn.RNNCell``, ``nn.GRUCell``,
``nn.LSTMCell``). A new one::

    class Minimal(nn.Module):  # h_t = tanh(U x_t + W h_{t-1} + b)
        tokens, fusable, carries = False, False, 1

        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.input_size, self.hidden_size = input_size, hidden_size
            self.U = nn.Linear(input_size, hidden_size)
            self.W = nn.Linear(hidden_size, hidden_size, bias=False)

        def project(self, x):  # (T, B, input_size) -> (T, B, P), once for all steps
            return self.U(x)

        def step(self, u, h, mask=None):  # u (B, P), h (B, H) -> h_t (B, H)
            return torch.tanh(u + self.W(h if mask is None else h * mask))

    model = DeepRNN(ModelConfig(input_size=88, output_size=88, hidden_size=64), transitions=[Minimal(88, 64)])
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

Carry = torch.Tensor | tuple[torch.Tensor, ...]


@runtime_checkable
class Transition(Protocol):
    """⊕ as the driver runs it; see the module's docstring for an example."""

    input_size: int  # the size of x_t (the vocabulary, when ``tokens``)
    hidden_size: int  # H, the size of h_t
    tokens: bool  # x_t is a token id (its projection is an embedding), not a vector
    fusable: bool  # deeprnn's hand-written BPTT can run it (DeepTransition only): False for yours
    carries: int  # tensors in the carry: 1, a (B, H) tensor; k > 1, a tuple of k, h first

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The part of every step that reads x_t alone, for all steps at once: (T, B, …) ->
        (T, B, P). The identity for a step that reads x_t itself."""
        ...

    def step(self, u: torch.Tensor, carry: Carry, mask: torch.Tensor | None = None) -> Carry:
        """One step: u (B, P) the projected input, carry the state(s) at t-1 -> the carry at t.
        ``mask`` (B, H), if given, multiplies h_{t-1} wherever the step reads it (variational
        dropout of the recurrent state)."""
        ...
