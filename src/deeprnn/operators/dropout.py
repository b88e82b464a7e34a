"""Dropout with one mask per sequence (variational / locked dropout, Gal & Ghahramani 2016)."""

from __future__ import annotations

import torch


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop units of x (T, B, ...) with probability p, one mask per sequence for all steps."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty((1,) + x.shape[1:]).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask
