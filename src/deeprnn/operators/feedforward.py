"""A stack of feed-forward layers: the deep input-to-hidden map g(x_t) and the MLP of a deep ▷.

Layer l computes o_l = φ_l(V_l o_{l-1} + c_l), with o_0 the layer's input. Every layer may have its
own width and unit (element-wise, L_p or maxout, see :mod:`deeprnn.operators.units`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.dropout import locked_dropout
from deeprnn.operators.projection import Projection
from deeprnn.operators.units import Unit


def per_layer(value: str | Sequence[str], count: int, what: str) -> list[str]:
    """One unit spec per layer: a single spec is repeated, a list must have ``count`` entries."""
    if isinstance(value, str):
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ConfigError(f"{what}: expected one unit per layer ({count}), got {len(value)}: {value}")
    return value


class FeedForward(nn.Module):
    """o = φ_L(V_L … φ_1(V_1 x + c_1) …): ``widths`` gives each layer's output width."""

    def __init__(
        self,
        in_size: int,
        widths: Sequence[int],
        units: str | Sequence[str] = "sigmoid",
        *,
        tokens: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if any(w < 1 for w in widths):
            raise ConfigError(f"layer widths must be positive, got {widths}")
        self.units = nn.ModuleList(
            Unit(spec, w) for spec, w in zip(per_layer(units, len(widths), "units"), widths, strict=True)
        )
        sizes = [in_size] + widths
        self.layers = nn.ModuleList(
            Projection(sizes[i], unit.in_width, tokens=tokens and i == 0, bias=bias)
            for i, unit in enumerate(self.units)
        )
        self.in_size = in_size
        self.out_size = sizes[-1]
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (layer, unit) in enumerate(zip(self.layers, self.units, strict=True)):
            if i > 0:
                x = locked_dropout(x, self.dropout, self.training)
            x = unit(layer(x))
        return x
