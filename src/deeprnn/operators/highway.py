"""A gated deep transition ⊕: the highway layers of Recurrent Highway Networks (Zilly, Srivastava,
Koutník and Schmidhuber, 2017), the deep transition's gated successor (docs/paper.md §5).

    s_0 = h_{t-1}
    ĥ_l = φ(R_l s_{l-1} + U x_t [l = 1] + b_l)
    g_l = σ(R'_l s_{l-1} + U' x_t [l = 1] + b'_l)          the transform gate
    s_l = g_l ⊙ ĥ_l + (1 - g_l) ⊙ s_{l-1}                 l = 1 … L (the carry gate coupled)
    h_t = s_L

x_t enters the first layer only; every layer has the hidden size. With the gate open (g_l = 1)
and L = 1 this is the RNN's shallow transition h_t = φ(W h_{t-1} + U x_t + b). The gate's bias
starts negative, so that each layer first carries its input on (as in RHN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.projection import Projection
from deeprnn.operators.units import Unit

GATE_BIAS = -2.0  # b'_l at the start: g_l ≈ 0.12, mostly carry
INIT_RANGE = 0.04  # weights drawn from U(-0.04, 0.04), as RHN's code


class HighwayTransition(nn.Module):
    """⊕ with ``depth`` highway layers; state h is (batch, hidden_size)."""

    fusable = False  # the gates need the plain loop (deeprnn.driver.unroll)
    carries = 1  # the carry is h (deeprnn.operators.protocol)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        depth: int = 1,
        *,
        units: str = "tanh",
        bias: bool = True,
        tokens: bool = False,
    ) -> None:
        super().__init__()
        if min(input_size, hidden_size, depth) < 1:
            raise ConfigError(
                f"sizes and depth must be positive: input {input_size}, hidden {hidden_size}, depth {depth}"
            )
        self.input_size, self.hidden_size, self.depth, self.tokens = input_size, hidden_size, depth, tokens
        self.unit = Unit(units, hidden_size)
        if not self.unit.elementwise:
            raise ConfigError(f"a highway layer's units are element-wise; got {units!r}")
        # [U; U'] x + [b_1; b'_1]; R_l and R'_l as one matrix per layer; [b_l; b'_l] of the later layers
        self.input = Projection(input_size, 2 * hidden_size, tokens=tokens, bias=bias)
        self.recurrent = nn.ParameterList(
            nn.Parameter(torch.empty(2 * hidden_size, hidden_size)) for _ in range(depth)
        )
        self.layer_bias = nn.ParameterList(
            nn.Parameter(torch.zeros(2 * hidden_size)) for _ in range(depth - 1 if bias else 0)
        )
        with torch.no_grad():
            for r in self.recurrent:
                r.uniform_(-INIT_RANGE, INIT_RANGE)
            self.input.weight.uniform_(-INIT_RANGE, INIT_RANGE)
            if bias:
                self.input.bias[hidden_size:] = GATE_BIAS
            for b in self.layer_bias:
                b[hidden_size:] = GATE_BIAS

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """[U; U'] x_t + [b_1; b'_1] for every step at once: (T, B, …) -> (T, B, 2H)."""
        return self.input(x)

    def step(self, u: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One step h_t = x_t ⊕ h_{t-1}, given u = the projection of x_t (B, 2H) and h (B, H);
        ``mask`` (B, H), if given, multiplies h_{t-1} where R_1 reads it (dropout), not on the
        carry path, which would otherwise scale the state up by 1/keep at every step."""
        s = h
        for layer, weight in enumerate(self.recurrent):
            a = F.linear(s if layer or mask is None else s * mask, weight)
            if layer == 0:
                a = a + u
            elif self.layer_bias:
                a = a + self.layer_bias[layer - 1]
            candidate, gate = a.chunk(2, dim=-1)
            s = torch.lerp(s, self.unit(candidate), torch.sigmoid(gate))  # s + g (ĥ - s)
        return s

    def describe(self) -> str:
        read = "token ids" if self.tokens else str(self.input_size)
        layers = f"{self.depth} layer(s) of {self.hidden_size} ({self.unit.spec})"
        return f"highway transition: input {read}, {layers}"

    def extra_repr(self) -> str:
        return (
            f"input={self.input_size}, hidden={self.hidden_size}, depth={self.depth}, units={self.unit.spec}"
        )
