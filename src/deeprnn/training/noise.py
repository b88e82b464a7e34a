"""Weight noise (docs/paper.md §4): an update's gradient is taken at W + σε, with ε ~ N(0, I)
drawn afresh for each update on the weight matrices only (biases stay clean), and the update is
applied to the clean W."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def weight_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that get noise: the matrices (and any weight of more dimensions, such as a
    convolution's), not the biases or other vectors."""
    return [p for p in model.parameters() if p.dim() >= 2]


@contextmanager
def noisy(weights: Sequence[torch.Tensor], sigma: float) -> Iterator[None]:
    """Inside: each of ``weights`` is W + σε (ε drawn in their order, from the global generator);
    on leaving, even by an error, W exactly as it was (a copy, not W + σε - σε, which rounds
    differently in each process of a distributed run and would let their models drift apart).
    σ = 0: no noise, nothing drawn."""
    if not sigma:
        yield
        return
    with torch.no_grad():
        clean = [w.detach().clone() for w in weights]
        for w in weights:
            w.add_(torch.randn_like(w) * sigma)
    try:
        yield
    finally:
        with torch.no_grad():
            for w, c in zip(weights, clean, strict=True):
                w.copy_(c)
