"""Hidden units: the element-wise nonlinearities φ of the paper and the units of DOT(S)-RNN*.

A unit maps a pre-activation of width ``width * pieces`` to ``width`` outputs. Element-wise units
(``sigmoid``, the paper's, ``tanh``, ``relu``, ``linear``) have one piece per output; the two
pooling units of DOT(S)-RNN* read a group of pieces per output:

- ``lp``: learned-norm pooling (Gulcehre et al., 2014), h_j = (mean_i |a_ji|^p_j)^(1/p_j) with
  the order p_j = 1 + softplus(ρ_j) learned per unit (the centres are the layer's biases);
- ``maxout``: h_j = max_i a_ji (Goodfellow et al., 2013).

Specs are strings: ``"sigmoid"``, ``"lp"`` (2 pieces), ``"lp:3"``, ``"maxout:4"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deeprnn.errors import ConfigError

ELEMENTWISE = ("sigmoid", "tanh", "relu", "linear")
POOLING = ("lp", "maxout")
DEFAULT_PIECES = 2


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "linear": _identity}


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
    valid = ", ".join(ELEMENTWISE + tuple(f"{k}[:pieces]" for k in POOLING))
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
            return _FUNCTIONS[self.kind](a)
        groups = a.unflatten(-1, (self.width, self.pieces))
        if self.kind == "maxout":
            return groups.amax(-1)
        return lp_pool(groups, lp_order(self.rho))

    def extra_repr(self) -> str:
        return f"{self.spec}, width={self.width}"


def derivative_from_output(kind: str, y: torch.Tensor) -> torch.Tensor | None:
    """dφ/da written with the output y = φ(a) of an element-wise unit; None means 1 (linear)."""
    if kind == "sigmoid":
        return torch.addcmul(y, y, y, value=-1.0)  # y (1 - y)
    if kind == "tanh":
        return torch.addcmul(torch.ones_like(y), y, y, value=-1.0)  # 1 - y²
    if kind == "relu":
        return (y > 0).to(y.dtype)
    if kind == "linear":
        return None
    raise ValueError(f"{kind!r} is not an element-wise unit")


LP_FLOOR = 1e-6  # |a| is floored here: keeps the gradient of x^(1/p) finite where all pieces are 0


def lp_order(rho: torch.Tensor) -> torch.Tensor:
    """The order p = 1 + softplus(ρ) > 1 of each L_p unit."""
    return 1.0 + F.softplus(rho)


def lp_pool(groups: torch.Tensor, p: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """h = (mean_i |a_i|^p)^(1/p) over the last dimension of ``groups`` (…, width, pieces)."""
    pooled = groups.abs().clamp_min(LP_FLOOR).pow(p.unsqueeze(-1)).mean(-1)
    return torch.pow(pooled, 1.0 / p, out=out) if out is not None else pooled.pow(1.0 / p)


def lp_derivatives(
    groups: torch.Tensor, h: torch.Tensor, p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """∂h/∂a (…, width, pieces) and ∂h/∂p (…, width) of :func:`lp_pool`, from a and h.

    With x = max(|a|, floor) and m = mean x^p = h^p:  ∂h/∂a_i = sign(a_i) x_i^(p-1) h / (k m)
    (0 where |a_i| is below the floor), ∂h/∂p = h (-ln m / p² + mean(x^p ln x) / (m p))."""
    pieces = groups.shape[-1]
    x = groups.abs().clamp_min(LP_FLOOR)
    xp = x.pow(p.unsqueeze(-1))
    m = xp.mean(-1)
    d_a = torch.sign(groups) * (groups.abs() > LP_FLOOR) * (xp / x) * (h / (pieces * m)).unsqueeze(-1)
    d_p = h * (-torch.log(m) / p**2 + (xp * torch.log(x)).mean(-1) / (m * p))
    return d_a, d_p
