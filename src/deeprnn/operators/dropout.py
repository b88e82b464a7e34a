"""Dropout with one mask per sequence (variational / locked dropout, Gal & Ghahramani 2016),
and dropout of whole token types from an embedding (embedding dropout, their section 4.2)."""

from __future__ import annotations

import torch


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop units of x (T, B, ...) with probability p, one mask per sequence for all steps."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty((1,) + x.shape[1:]).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * mask


def type_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Drop rows of an embedding (vocab, width) with probability p: a dropped token type reads
    zeros at every one of its occurrences in the call, not at some of them (the model cannot
    learn a word from its other occurrences in the same sequence)."""
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1.0 - p).div_(1.0 - p)
    return weight * mask
