"""Hidden units: the element-wise nonlinearities φ of the paper and the units of DOT(S)-RNN*.

A unit maps a pre-activation of width ``width * pieces`` to ``width`` outputs. Element-wise units
(``sigmoid``, the paper's, ``tanh``, ``relu``, ``linear``) have one piece per output; the two
pooling units of DOT(S)-RNN* read a group of pieces per output:

- ``lp``: learned-norm pooling (Gulcehre et al., 2014), h_j = (mean_i |a_ji|^p_j)^(1/p_j) with
  the order p_j = 1 + softplus(ρ_j) learned per unit (the centres are the layer's biases), |a|
  smoothed to sqrt(a² + ε²) with ε = 1e-6 (:func:`lp_pool`);
- ``maxout``: h_j = max_i a_ji (Goodfellow et al., 2013).

Specs are strings: ``"sigmoid"``, ``"lp"`` (2 pieces), ``"lp:3"``, ``"maxout:4"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Elementwise:
    """An element-wise unit, in the forms its users need: the plain autograd path (``forward``),
    and the hand-written loops (``into``: out = φ(a) with no allocation, ``out`` may be ``a``
    itself; ``inplace``: a = φ(a); ``derivative``: dφ/da from the output y = φ(a), None
    meaning 1)."""

    forward: Callable[[Tensor], Tensor]
    into: Callable[[Tensor, Tensor], object]
    inplace: Callable[[Tensor], object]
    derivative: Callable[[Tensor], Tensor | None]


def _copy_into(a: Tensor, out: Tensor) -> None:
    if a is not out:
        out.copy_(a)


# The element-wise units: adding one here is all a new unit needs (both paths, and the settings).
ELEMENTWISE: dict[str, Elementwise] = {
    "sigmoid": Elementwise(
        torch.sigmoid,
        lambda a, out: torch.sigmoid(a, out=out),
        Tensor.sigmoid_,
        lambda y: torch.addcmul(y, y, y, value=-1.0),  # y (1 - y)
    ),
    "tanh": Elementwise(
        torch.tanh,
        lambda a, out: torch.tanh(a, out=out),
        Tensor.tanh_,
        lambda y: torch.addcmul(torch.ones_like(y), y, y, value=-1.0),  # 1 - y²
    ),
    "relu": Elementwise(
        torch.relu,
        lambda a, out: torch.clamp_min(a, 0.0, out=out),
        Tensor.relu_,
        lambda y: (y > 0).to(y.dtype),
    ),
    "linear": Elementwise(lambda a: a, _copy_into, lambda a: None, lambda y: None),
}
POOLING = ("lp", "maxout")
DEFAULT_PIECES = 2
UNIT_SPECS = (*ELEMENTWISE, *(f"{kind}[:pieces]" for kind in POOLING))  # what a setting may name


def parse_unit(spec: str) -> tuple[str, int]:
    """Split a unit spec into (kind, pieces); raise a ConfigError naming the valid specs."""
    if not isinstance(spec, str):
        raise TypeError(f"a unit is given by name, e.g. 'sigmoid'; got {type(spec).__name__}")
    kind, _, count = spec.strip().lower().partition(":")
    if kind in ELEMENTWISE and not count:
        return kind, 1
    if kind in POOLING:
        try:
            pieces = int(count) if count else DEFAULT_PIECES
        except ValueError:
            pieces = 0
        if pieces >= 1:
            return kind, pieces
    valid = ", ".join(UNIT_SPECS)
    raise ConfigError(f"unknown unit {spec!r}; expected one of: {valid}")


class Unit(nn.Module):
    """One layer's hidden units: pre-activation (..., width * pieces) -> output (..., width)."""

    def __init__(self, spec: str, width: int) -> None:
        super().__init__()
        self.kind, self.pieces = parse_unit(spec)
        self.width = width
        self.spec = spec if self.kind in ELEMENTWISE else f"{self.kind}:{self.pieces}"
        if self.kind == "lp":
            # ρ = 0 gives p = 1 + ln 2 ≈ 1.69 at the start, between the mean (p=1) and L2 pooling.
            self.rho = nn.Parameter(torch.zeros(width))

    @property
    def elementwise(self) -> bool:
        return self.kind in ELEMENTWISE

    @property
    def in_width(self) -> int:
        return self.width * self.pieces

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.kind in ELEMENTWISE:
            return ELEMENTWISE[self.kind].forward(a)
        # unit j: columns j·pieces … (j+1)·pieces-1
        grid = a.unflatten(-1, (self.width, self.pieces))
        if self.kind == "maxout" and torch.is_grad_enabled() and a.requires_grad:
            # max's backward puts the gradient where its indices say (a tie: on the first piece),
            # 1.6x faster than rows' copy and amax's backward, which compares with the maximum
            return grid.max(-1).values
        if self.kind == "maxout" and self.pieces == 2:
            return torch.maximum(grid[..., 0], grid[..., 1])  # one pass, no copy
        # copied into rows (…, pieces, width): L_p, and maxout of more pieces, read whole rows
        # several times faster than a stride
        groups = grid.transpose(-1, -2).contiguous()
        if self.kind == "maxout":
            return groups.amax(-2)
        return lp_pool(groups, lp_order(self.rho))

    def extra_repr(self) -> str:
        return f"{self.spec}, width={self.width}"


# ε: |a| is taken as sqrt(a² + ε²), smooth at 0, so that m^(1/p) (m = mean x^p) has a finite
# gradient where all pieces are 0 (in float32 while ε^p does not underflow: p below about 7)
LP_SMOOTHING = 1e-6


def lp_order(rho: torch.Tensor) -> torch.Tensor:
    """The order p = 1 + softplus(ρ) > 1 of each L_p unit."""
    return 1.0 + F.softplus(rho)


def lp_pool(groups: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """h = (mean_i x_i^p)^(1/p), x = sqrt(a² + ε²), over the pieces a of ``groups`` (…, pieces,
    width): the pieces outer, so that p (width,) broadcasts and the mean adds whole rows. x^p is
    computed as exp(p/2 ln x²), several times faster than ``pow`` with a tensor of exponents."""
    powers = torch.exp(torch.log(groups.square() + LP_SMOOTHING**2) * (p / 2))
    return torch.exp(torch.log(powers.mean(-2)) / p)


def lp_derivatives(
    groups: torch.Tensor, h: torch.Tensor, p: torch.Tensor, powers: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂h/∂a (…, pieces, width) and ∂h/∂p (…, width) of :func:`lp_pool`, from a, h and the
    powers x^p that the forward pass computed.

    With x² = a² + ε² and m = mean x^p = h^p:  ∂h/∂a_i = a_i x_i^p / x_i² · h / (k m) and
    ∂h/∂p = h (mean(x^p ln x^p) / m - ln m) / p²: nine passes over the pieces, no exp."""
    pieces = groups.shape[-2]
    m = powers.mean(-2)
    squares = torch.addcmul(groups.new_tensor(LP_SMOOTHING**2), groups, groups)
    # ln x^p from x², not from x^p: finite where x^p underflows to 0 (and log + mul, not
    # xlogy, which is ten times slower on CPU)
    log_powers = torch.log(squares).mul_(p / 2)
    d_p = h * (log_powers.mul_(powers).mean(-2) / m - torch.log(m)) / p**2
    d_a = torch.mul(powers, groups).div_(squares).mul_((h / (pieces * m)).unsqueeze(-2))
    return d_a, d_p
