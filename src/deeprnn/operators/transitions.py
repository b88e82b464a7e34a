"""The transition operator ⊕ of the paper, h_t = x_t ⊕ h_{t-1}: shallow, deep, deep with shortcut.

With layer widths d_1 … d_L (d_L = the hidden size) one step computes (docs/paper.md §2)

    z_1 = φ_1(W_1 h_{t-1} + U_1 x_t + b_1)
    z_l = φ_l(W_l z_{l-1} + b_l)                             l = 2 … L   (DT)
    z_l = φ_l(W_l z_{l-1} + U_l x_t + S_l h_{t-1} + b_l)      l = 2 … L   (DT(S): the shortcut)
    h_t = z_L

- L = 1 is the RNN's shallow transition h_t = φ(W h_{t-1} + U x_t + b);
- L > 1 without shortcut is the paper's deep transition (DT-RNN): x_t and h_{t-1} enter the
  first layer only, h_t = φ_L(W_L … φ_1(W_1 h_{t-1} + U_1 x_t));
- with the shortcut (DT(S)-RNN), x_t and h_{t-1} also enter every later layer, as in the
  authors' code; with L = 2 this is exactly the paper's DT(S) form and its parameter counts.

Stacking (sRNN) is a sequence of these operators, see :class:`deeprnn.recurrence.Recurrence`.

The parameters are laid out for speed: the input maps of the layers that read x_t form one
matrix ``input.weight`` = [U_1; …] (applied to every step at once, before the loop; the biases
of the layers that do not read it are ``layer_bias``), and the matrices that read h_{t-1} form
one matrix ``recurrent_weight`` = [W_1; S_2; …; S_L].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError
from deeprnn.operators.feedforward import per_layer
from deeprnn.operators.projection import Projection
from deeprnn.operators.units import Unit


class DeepTransition(nn.Module):
    """⊕ with ``len(inner_sizes)`` intermediate layers; state h is (batch, hidden_size)."""

    carries = 1  # the carry is h (deeprnn.operators.protocol)
    fusable = True  # the hand-written BPTT (deeprnn.fused) runs every unit: element-wise, L_p, maxout

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        inner_sizes: Sequence[int] = (),
        *,
        shortcut: bool = False,
        units: str | Sequence[str] = "sigmoid",
        bias: bool = True,
        tokens: bool = False,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in inner_sizes] + [int(hidden_size)]
        if any(w < 1 for w in widths) or input_size < 1:
            raise ConfigError(f"sizes must be positive: input {input_size}, layers {widths} (inner…, hidden)")
        if shortcut and len(widths) < 2:
            raise ConfigError("a shortcut skips intermediate layers: give at least one inner size")
        self.input_size, self.hidden_size, self.widths = input_size, hidden_size, widths
        self.shortcut, self.tokens = shortcut, tokens
        specs = per_layer(units, len(widths), "transition units")
        self.units = nn.ModuleList(Unit(s, w) for s, w in zip(specs, widths, strict=True))
        self.pre_sizes = [u.in_width for u in self.units]
        # the layers that read x_t and h_{t-1}: all with the shortcut, else the first
        self.recurrent_sizes = self.pre_sizes if shortcut else self.pre_sizes[:1]
        self.input = Projection(input_size, sum(self.recurrent_sizes), tokens=tokens, bias=bias)
        later = sum(self.pre_sizes) - sum(self.recurrent_sizes)
        self.layer_bias = nn.Parameter(torch.zeros(later)) if bias and later else None
        self.recurrent_weight = nn.Parameter(torch.empty(sum(self.recurrent_sizes), hidden_size))
        self.layer_weights = nn.ParameterList(
            nn.Parameter(torch.empty(p, w)) for p, w in zip(self.pre_sizes[1:], widths[:-1], strict=True)
        )
        self.reset_recurrent_parameters()

    @property
    def depth(self) -> int:
        """Number of layers L of one step."""
        return len(self.widths)

    def reset_recurrent_parameters(self, nonzeros: int = 20, scale: float = 1.0) -> None:
        """The paper's initialisation of the matrices inside the step: sparse, ``nonzeros``
        weights per unit drawn from N(0, 1), then scaled to spectral radius ``scale`` (square
        matrices) or largest singular value ``scale`` (the others)."""
        matrices = [*self.recurrent_weight.split(self.recurrent_sizes), *self.layer_weights]
        with torch.no_grad():
            for m in matrices:
                m.copy_(sparse_scaled(m.shape, nonzeros, scale))

    def project(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """U x_t + b for every step at once: (T, B, …) -> (T, B, sum of pre-activation widths);
        a layer that does not read x_t gets its bias (or zeros) there. Written into ``out`` when
        given (the evaluation path's buffer, :func:`deeprnn.inference.evaluate_input`)."""
        if out is not None:
            read = self.input.out_size
            self.input(x, out=out[..., :read])
            if self.layer_bias is None:
                out[..., read:].zero_()
            else:
                out[..., read:].copy_(self.layer_bias)
            return out
        u = self.input(x)
        later = sum(self.pre_sizes) - u.shape[-1]
        if not later:
            return u
        rest = self.layer_bias if self.layer_bias is not None else u.new_zeros(later)
        return torch.cat([u, rest.expand(*u.shape[:-1], later)], dim=-1)

    def step(self, u: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One step h_t = x_t ⊕ h_{t-1}, given u = U x_t + b (B, ·) and h = h_{t-1} (B, H);
        ``mask`` (B, H), if given, multiplies h_{t-1} where the matrices read it (dropout)."""
        inputs = u.split(self.pre_sizes, -1)
        read = h if mask is None else h * mask
        reads_h = F.linear(read, self.recurrent_weight).split(self.recurrent_sizes, -1)
        z = self.units[0](inputs[0] + reads_h[0])
        for layer in range(1, self.depth):
            a = inputs[layer] + F.linear(z, self.layer_weights[layer - 1])
            if self.shortcut:
                a = a + reads_h[layer]
            z = self.units[layer](a)
        return z

    def describe(self) -> str:
        """One line for ``deeprnn info``."""
        kind = "deep transition" if self.depth > 1 else "shallow transition"
        read = "token ids" if self.tokens else str(self.input_size)
        units = "/".join(u.spec for u in self.units)
        return (
            f"{kind}{' with shortcut' if self.shortcut else ''}: input {read}, layers {self.widths} ({units})"
        )

    def extra_repr(self) -> str:
        return (
            f"input={self.input_size}, layers={self.widths}, shortcut={self.shortcut}, "
            f"units={[u.spec for u in self.units]}"
        )


def sparse_scaled(shape: Sequence[int], nonzeros: int, scale: float) -> torch.Tensor:
    """A (out, in) matrix with ``nonzeros`` N(0,1) weights per row, scaled as the paper does."""
    rows, cols = shape
    weight = torch.zeros(rows, cols, dtype=torch.float64)
    k = min(nonzeros, cols)
    index = torch.rand(rows, cols).argsort(dim=1)[:, :k]
    weight.scatter_(1, index, torch.randn(rows, k, dtype=torch.float64))
    if rows == cols:
        size = torch.linalg.eigvals(weight).abs().max()
    else:
        size = torch.linalg.matrix_norm(weight, ord=2)
    return weight * (scale / size.clamp_min(1e-12))
